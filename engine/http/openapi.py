"""The OpenAPI 3.1 document of the engine's HTTP API, built from the request models.

Served at ``/openapi.json`` and kept in the repository as ``openapi.json`` (``failover-engine openapi``
regenerates it; a test fails when the two differ). Every operation lists every status it can answer
with, so a fuzzer can check the API against it.
"""

from __future__ import annotations

from typing import Any

from engine import __version__
from engine.core.event_kinds import EVENT_KINDS
from engine.http.drill_routes import DrillBody
from engine.http.openapi_schemas import STATUS_SCHEMAS
from engine.http.operator_routes import (
    FailbackBody,
    FailoverBody,
    PauseBody,
    PrepareFailbackBody,
    ReasonBody,
    SwitchoverBody,
    UnfenceBody,
)

ERROR = {"$ref": "#/components/schemas/Error"}
JSON = "application/json"


def _resp(description: str, schema: dict[str, Any] | None = None, media: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {400: "bad request", 401: "missing or unknown token", 403: "not allowed for this token",
             404: "unknown service, site or operation", 409: "refused in the current state",
             412: "a precondition of the service's health failed (machine-readable reasons)",
             413: "body too large", 422: "invalid body", 429: "too many mutations", 500: "engine failure"}
    return {str(c): _resp(names[c], ERROR) for c in codes}


def _body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
OP_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
READ_ERRORS = (401,)
STATUS_ERRORS = (400, 401)
WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429)


TAGS = {"health": "liveness, readiness and metrics for the platform", "status": "what the engine sees now",
        "audit": "the audit log and the runbooks", "operator": "operator actions on a service",
        "operations": "halted runbooks", "drills": "shadow and full drills", "peers": "engine to engine"}
OPERATION_IDS = {
    ("get", "/healthz"): ("getHealth", "health"), ("get", "/readyz"): ("getReadiness", "health"),
    ("get", "/metrics"): ("getMetrics", "health"), ("get", "/openapi.json"): ("getOpenApi", "health"),
    ("get", "/"): ("getStatusPage", "status"), ("get", "/v1/status"): ("getStatus", "status"),
    ("get", "/v1/cluster"): ("getCluster", "status"),
    ("get", "/v1/services/{name}"): ("getService", "status"), ("get", "/v1/events"): ("listEvents", "audit"),
    ("get", "/v1/operations"): ("listOperations", "audit"), ("get", "/v1/operations/{id}"): ("getOperation", "audit"),
    ("post", "/v1/drills"): ("startDrill", "drills"), ("get", "/v1/drills"): ("listDrills", "drills"),
    ("get", "/v1/drills/{id}"): ("getDrill", "drills"), ("get", "/v1/drills/{id}/report"): ("getDrillReport", "drills"),
    ("post", "/v1/peer/verdict"): ("postPeerVerdict", "peers"),
    ("post", "/v1/peer/claim"): ("postPeerClaim", "peers"),
}


def _camel(verb: str) -> str:
    return "".join(part.capitalize() for part in verb.split("-"))


def _name_operations(paths: dict[str, Any]) -> None:
    """An operationId and a tag on every operation: fixed names above, else ``<verb>Service`` for a
    service action and ``<verb>Operation`` for a runbook action (a new path without a name fails here)."""
    for path, methods in paths.items():
        for method, op in methods.items():
            if (method, path) in OPERATION_IDS:
                op["operationId"], tag = OPERATION_IDS[(method, path)]
            elif path.startswith("/v1/services/{name}/"):
                camel = _camel(path.rsplit("/", 1)[1])
                op["operationId"], tag = f"{camel[0].lower()}{camel[1:]}Service", "operator"
            elif path.startswith("/v1/operations/{id}/"):
                op["operationId"], tag = f"{path.rsplit('/', 1)[1]}Operation", "operations"
            else:
                raise ValueError(f"no operationId for {method.upper()} {path}")
            op["tags"] = [tag]


def build() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        **STATUS_SCHEMAS,
        "Error": {"type": "object", "required": ["error", "detail"],
                  "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
        "Event": {"type": "object", "required": ["id", "at", "kind", "message"],
                  "properties": {"id": {"type": "integer"}, "at": {"type": "number"},
                                 "service": {"type": ["string", "null"]}, "kind": {"type": "string"},
                                 "message": {"type": "string"}, "actor": {"type": ["string", "null"]},
                                 "data": {"type": "object"}}},
        "Operation": {"type": "object", "required": ["id", "service", "kind", "state", "steps"],
                      "properties": {"id": {"type": "string"}, "service": {"type": "string"},
                                     "kind": {"type": "string"}, "state": {"type": "string"},
                                     "source": {"type": "string"}, "target": {"type": "string"},
                                     "steps": {"type": "object"}, "evidence": {"type": "object"}}},
        "Plan": {"type": "object", "required": ["dry_run", "would", "plan", "gates"],
                 "properties": {"dry_run": {"const": True}, "would": {"enum": ["start", "refuse"]},
                                "plan": {"type": "array", "items": {"type": "string"}},
                                "gates": {"type": "array", "items": {"type": "object"}},
                                "reasons": {"type": "array", "items": {"type": "string"}}}},
        "Started": {"type": "object", "required": ["operation"], "properties": {"operation": {"type": "string"}}},
    }
    for model in (ReasonBody, PauseBody, FailoverBody, FailbackBody, PrepareFailbackBody, SwitchoverBody, UnfenceBody,
                  DrillBody):
        schema = model.model_json_schema()
        schema.pop("title", None)
        schemas[model.__name__] = schema
    started_or_plan = {"oneOf": [{"$ref": "#/components/schemas/Started"}, {"$ref": "#/components/schemas/Plan"}]}
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "liveness: the decision loop ticks", "security": [],
                             "responses": {"200": _resp("ticking"), "503": _resp("stalled")}}},
        "/readyz": {"get": {"summary": "readiness", "security": [],
                            "responses": {"200": _resp("ready"), "503": _resp("not ready")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (a viewer token only with metrics.requires_token)",
                             "security": [{}, {"bearer": []}],
                             "responses": {"200": _resp("metrics", {"type": "string"}, "text/plain"),
                                           **_errors(401, 404)}}},
        "/openapi.json": {"get": {"summary": "this document", "security": [], "responses": {"200": _resp("doc")}}},
        "/": {"get": {"summary": "status page",
                      "responses": {"200": _resp("HTML", {"type": "string"}, "text/html"), **_errors(401)}}},
        "/v1/status": {"get": {"summary": "every service; each site counts its signals by state and lists those not up",
                               "parameters": [{"name": "signals", "in": "query", "required": False,
                                               "description": "all: list every signal, not only those not up",
                                               "schema": {"enum": ["attention", "all"]}}],
                               "responses": {"200": _resp("status", {"$ref": "#/components/schemas/Status"}),
                                             **_errors(*STATUS_ERRORS)}}},
        "/v1/cluster": {"get": {"summary": "every voter's view of every service side by side (active site, epoch, site "
                                "health, lag, operator state with versions, age), and where they disagree",
                                "responses": {"200": _resp("cluster"), **_errors(400, 401)}}},
        "/v1/services/{name}": {"get": {"summary": "one service", "parameters": [NAME],
                                        "responses": {"200": _resp("service", {"allOf": [
                                            {"$ref": "#/components/schemas/ServiceStatus"},
                                            {"type": "object", "required": ["name"],
                                             "properties": {"name": {"type": "string"}}}]}),
                                                      **_errors(401, 404)}}},
        "/v1/events": {"get": {
            "summary": "the audit log, newest first",
            "parameters": [{"name": n, "in": "query", "required": False, "schema": s} for n, s in (
                ("service", {"type": "string"}), ("kind", {"enum": list(EVENT_KINDS)}), ("since", {"type": "number"}),
                ("until", {"type": "number"}), ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                ("before_id", {"type": "integer"}))],
            "responses": {"200": _resp("events", {"type": "object", "required": ["events"], "properties": {
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                "next_before_id": {"type": "integer"}}}), **_errors(400, 401, 404)}}},
        "/v1/operations": {"get": {
            "summary": "runbooks, newest first",
            "parameters": [{"name": "service", "in": "query", "required": False, "schema": {"type": "string"}},
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
            "responses": {"200": _resp("operations", {"type": "object", "properties": {"operations": {
                "type": "array", "items": {"$ref": "#/components/schemas/Operation"}}}}), **_errors(400, 401, 404)}}},
        "/v1/operations/{id}": {"get": {"summary": "one runbook with every step", "parameters": [OP_ID],
                                        "responses": {"200": _resp("operation",
                                                                   {"$ref": "#/components/schemas/Operation"}),
                                                      **_errors(401, 404)}}},
    }
    for verb, summary, body in (
            ("pause", "keep observing, never act (until/ttl: resume by itself)", "PauseBody"),
            ("resume", "act again", "ReasonBody"),
            ("arm", "re-arm automatic action after the circuit breaker opened", "ReasonBody"),
            ("unfence", "allow writes on the active site's database again after a self-fence", "UnfenceBody"),
            ("acknowledge-drift", "accept the DNS drift seen now: moves may start again (a different drift blocks "
             "again)", "ReasonBody")):
        paths[f"/v1/services/{{name}}/{verb}"] = {"post": {
            "summary": summary, "parameters": [NAME], "requestBody": _body(body),
            "responses": {"200": _resp(verb), **_errors(*WRITE_ERRORS)}}}
    paths["/v1/services/{name}/switchover"] = {"post": {
        "summary": "planned move, both sites healthy, nothing acknowledged lost (dry_run, scheduled_at, cancel)",
        "parameters": [NAME], "requestBody": _body("SwitchoverBody"),
        "responses": {"200": _resp("dry run or cancelled"), "202": _resp("started or scheduled"),
                      **_errors(412, *WRITE_ERRORS)}}}
    paths["/v1/services/{name}/failover"] = {"post": {
        "summary": "manual failover (dry_run returns the plan and gates)", "parameters": [NAME],
        "requestBody": _body("FailoverBody"),
        "responses": {"200": _resp("dry run", {"$ref": "#/components/schemas/Plan"}),
                      "202": _resp("started", started_or_plan), **_errors(*WRITE_ERRORS)}}}
    paths["/v1/services/{name}/failback"] = {"post": {
        "summary": "failback to the home site", "parameters": [NAME], "requestBody": _body("FailbackBody"),
        "responses": {"200": _resp("dry run", {"$ref": "#/components/schemas/Plan"}),
                      "202": _resp("started", started_or_plan), **_errors(*WRITE_ERRORS)}}}
    paths["/v1/services/{name}/prepare-failback"] = {"post": {
        "summary": "reconcile, then replicate the current primary to the other site (before failback, and after it)",
        "parameters": [NAME],
        "requestBody": _body("PrepareFailbackBody"),
        "responses": {"200": _resp("prepared"), **_errors(*WRITE_ERRORS)}}}
    for verb in ("retry", "abort"):
        paths[f"/v1/operations/{{id}}/{verb}"] = {"post": {
            "summary": f"{verb} a halted runbook", "parameters": [OP_ID], "requestBody": _body("ReasonBody"),
            "responses": {"200": _resp(verb), "202": _resp(verb), **_errors(*WRITE_ERRORS)}}}
    drill_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths["/v1/drills"] = {
        "post": {"summary": "run a shadow or full drill now (dry_run: would it start, and why not)",
                 "requestBody": _body("DrillBody"),
                 "responses": {"200": _resp("dry run"), "202": _resp("started"), **_errors(*WRITE_ERRORS)}},
        "get": {"summary": "drills, newest first",
                "parameters": [{"name": "service", "in": "query", "required": False, "schema": {"type": "string"}},
                               {"name": "kind", "in": "query", "required": False,
                                "schema": {"enum": ["shadow", "full"]}},
                               {"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 500}}],
                "responses": {"200": _resp("drills", {"type": "object", "required": ["drills"], "properties": {
                    "drills": {"type": "array", "items": {"type": "object"}}}}), **_errors(400, 401, 404)}}}
    paths["/v1/drills/{id}"] = {"get": {
        "summary": "one drill: checks, phases against their SLOs, operations", "parameters": [drill_id],
        "responses": {"200": _resp("drill", {"type": "object", "required": ["id", "service", "kind", "state"]}),
                      **_errors(401, 404)}}}
    paths["/v1/drills/{id}/report"] = {"get": {
        "summary": "one drill as an HTML report (phase timeline against the SLOs, inline SVG)",
        "parameters": [drill_id],
        "responses": {"200": _resp("HTML", {"type": "string"}, "text/html"), **_errors(401, 404)}}}
    paths["/v1/peer/verdict"] = {"post": {
        "summary": "peers only: an HMAC-signed verdict (X-Failover-Timestamp, X-Failover-Signature)",
        "security": [], "requestBody": {"required": True, "content": {JSON: {"schema": {"type": "object"}}}},
        "responses": {"200": _resp("accepted"), **_errors(401, 413)}}}
    paths["/v1/peer/claim"] = {"post": {
        "summary": "peer engines only: an HMAC-signed claim on a service before a runbook starts (or its release); "
                   "409 when an operation of this engine, or one it granted, holds the service",
        "security": [], "requestBody": {"required": True, "content": {JSON: {"schema": {"type": "object"}}}},
        "responses": {"200": _resp("granted"), **_errors(401, 409, 413)}}}
    _name_operations(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "failover-engine", "version": __version__,
                 "description": "Status, audit log, runbooks and operator actions of one engine instance."},
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "tags": [{"name": t, "description": d} for t, d in TAGS.items()],
        "paths": paths,
    }
