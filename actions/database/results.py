"""Results of database actions: ordered steps, each ok, skipped or failed, and one human sentence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

StepStatus = Literal["ok", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class Step:
    """One step of an action and what came of it."""

    name: str
    status: StepStatus
    detail: str
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True, slots=True)
class ActionResult:
    """The outcome of fence / promote / prepare-failback: ``ok`` only when every required step was."""

    action: str
    site: str
    ok: bool
    sentence: str
    steps: tuple[Step, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return bool(self.steps) and all(s.status == "skipped" for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "site": self.site, "ok": self.ok, "sentence": self.sentence,
                "steps": [s.to_dict() for s in self.steps], "data": dict(self.data)}

    def __str__(self) -> str:
        return self.sentence


def summarize(action: str, site: str, steps: list[Step], *, data: dict[str, Any] | None = None,
              required: tuple[str, ...] = ()) -> ActionResult:
    """Build the result: ok iff no step failed and every ``required`` step ran (ok or skipped).

    The sentence names the failed steps, so a partial outcome is never silent:
    ``promotion of azure incomplete: sequences failed (statement timeout); done: subscription``.
    """
    failed = [s for s in steps if s.status == "failed"]
    missing = [name for name in required if not any(s.name == name and s.status != "failed" for s in steps)]
    done = [s.name for s in steps if s.status == "ok"]
    if failed or missing:
        why = "; ".join(f"{s.name} failed ({s.detail})" for s in failed)
        if missing and not failed:
            why = "not done: " + ", ".join(missing)
        sentence = f"{action} of {site} incomplete: {why}" + (f"; done: {', '.join(done)}" if done else "")
        return ActionResult(action, site, False, sentence, tuple(steps), data or {})
    notes = "; ".join(f"{s.name}: {s.detail}" for s in steps)
    return ActionResult(action, site, True, f"{action} of {site} done: {notes}", tuple(steps), data or {})
