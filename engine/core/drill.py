"""A drill's record: its checks with their verdicts, its timed phases against their SLOs, its outcome.

Pure data kept in the journal (``drills`` table) and served by the API; the runtime's drills
(:mod:`engine.runtime.drills`) fill it in as a drill goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("shadow", "full")
PHASES = ("decision", "dns_shift", "dns_verified", "consistency", "rto", "failback")
RUNNING, PASSED, FAILED = "running", "passed", "failed"


@dataclass
class Drill:
    id: str
    service: str
    kind: str
    trigger: str
    actor: str | None
    reason: str
    started_at: float
    state: str = RUNNING
    finished_at: float | None = None
    sentence: str = ""
    checks: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    source: str | None = None
    target: str | None = None
    rto_estimate: dict[str, Any] | None = None

    def check(self, name: str, ok: bool, detail: str, *, at: float, seconds: float | None = None,
              data: dict[str, Any] | None = None) -> bool:
        self.checks.append({"check": name, "ok": ok, "detail": detail, "at": at,
                            "seconds": None if seconds is None else round(seconds, 3), "data": data or {}})
        return ok

    def phase(self, name: str, started_at: float, finished_at: float, slo: float) -> None:
        seconds = max(0.0, finished_at - started_at)
        self.phases.append({"phase": name, "started_at": started_at, "finished_at": finished_at,
                            "seconds": round(seconds, 3), "slo_s": slo, "met": seconds <= slo})

    @property
    def slo_met(self) -> bool:
        return all(p["met"] for p in self.phases)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "service": self.service, "kind": self.kind, "trigger": self.trigger,
                "actor": self.actor, "reason": self.reason, "started_at": self.started_at,
                "finished_at": self.finished_at, "state": self.state, "sentence": self.sentence,
                "checks": self.checks, "phases": self.phases, "operations": self.operations,
                "source": self.source, "target": self.target, "slo_met": self.slo_met,
                "duration_s": None if self.finished_at is None else round(self.finished_at - self.started_at, 3),
                "rto_estimate": self.rto_estimate}


def summary(drill: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "service", "kind", "trigger", "actor", "state", "started_at", "finished_at", "duration_s",
            "sentence", "slo_met", "source", "target")
    return {k: drill.get(k) for k in keys}
