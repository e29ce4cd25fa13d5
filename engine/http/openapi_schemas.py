"""Response schemas of the OpenAPI document: the status view (instance, services, sites, signals).

Kept apart from ``openapi.py`` (the paths) so each stays readable. A field the engine may leave
unset is nullable; an object whose keys are names (services, sites) uses ``additionalProperties``.
"""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [{"type": "null"}, schema]}


NUM_OR_NULL = {"type": ["number", "null"]}
STR_OR_NULL = {"type": ["string", "null"]}
OBJ = {"type": "object"}
HEALTH = {"enum": ["unknown", "up", "down"]}

STATUS_SCHEMAS: dict[str, Any] = {
    "Instance": {"type": "object", "required": ["id", "site", "role", "version"], "properties": {
        "id": {"type": "string", "description": "this engine instance"},
        "site": {"type": "string", "description": "the site this instance runs in"},
        "role": {"type": "string", "description": "engine or witness"},
        "version": {"type": "string"}, "started_at": NUM_OR_NULL}},
    "SignalStatus": {"type": "object", "required": ["name", "state"], "properties": {
        "name": {"type": "string"}, "state": HEALTH,
        "since": NUM_OR_NULL, "consecutive_failures": {"type": "integer"},
        "consecutive_successes": {"type": "integer"}, "failure_threshold": {"type": "integer"},
        "success_threshold": {"type": "integer"}, "interval_s": {"type": "number"},
        "last": _nullable({"type": "object", "properties": {
            "ok": {"type": "boolean"}, "reason": STR_OR_NULL, "at": {"type": "number"},
            "latency_ms": {"type": "number"}, "value": {}}})}},
    "SiteStatus": {"type": "object", "required": ["health", "role", "signal_counts", "signals"], "properties": {
        "health": HEALTH, "role": {"enum": ["active", "standby"]},
        "signal_counts": {"type": "object", "additionalProperties": {"type": "integer"},
                          "description": "how many signals are in each state"},
        "signals": {"type": "array", "items": _ref("SignalStatus"),
                    "description": "the signals not up (every signal with ?signals=all)"}}},
    "Decision": {"type": "object", "required": ["verdict", "message"], "properties": {
        "verdict": {"type": "string"}, "message": {"type": "string", "description": "the decision as a sentence"},
        "target": STR_OR_NULL, "executor": STR_OR_NULL, "since": NUM_OR_NULL}},
    "OperationRef": {"type": "object", "required": ["id", "state"], "properties": {
        "id": {"type": "string"}, "state": {"type": "string"}, "message": STR_OR_NULL}},
    "ServiceStatus": {"type": "object", "required": ["active", "epoch", "paused", "sites"], "properties": {
        "active": {"type": "string", "description": "the site serving now"},
        "epoch": {"type": "integer", "description": "bumped by every move; DNS writes compare-and-set on it"},
        "paused": {"type": "boolean"}, "paused_until": NUM_OR_NULL,
        "last_move_at": NUM_OR_NULL, "cooldown_until": NUM_OR_NULL,
        "lag_s": NUM_OR_NULL, "dns": STR_OR_NULL,
        "decision": _nullable(_ref("Decision")),
        "operation": _nullable(_ref("OperationRef")),
        "sites": {"type": "object", "additionalProperties": _ref("SiteStatus")},
        "shared_dependencies": {"type": "array", "items": _ref("SignalStatus")},
        "replication": _nullable(OBJ), "synchronous": _nullable(OBJ),
        "last_reconciliation": _nullable(OBJ), "breaker": _nullable(OBJ),
        "self_fenced": _nullable(OBJ), "write_lease": _nullable(OBJ),
        "stray_primary": _nullable(OBJ), "dns_drift": _nullable(OBJ), "replication_slots": {},
        "scheduled_switchover": {}, "lease": _nullable(OBJ), "drills": _nullable(OBJ), "rto": _nullable(OBJ)}},
    "Status": {"type": "object", "required": ["instance", "time", "services"], "properties": {
        "instance": _ref("Instance"), "time": {"type": "number"},
        "healthy": {"type": "boolean", "description": "the decision loop ticks"},
        "quorum": {"type": ["boolean", "null"]}, "scheduler": {},
        "peers": {"type": ["array", "object"]},
        "services": {"type": "object", "additionalProperties": _ref("ServiceStatus")}}},
}
