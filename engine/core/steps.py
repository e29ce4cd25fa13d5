"""Step plans: one table per runbook kind, read by the runner, the worst-case RTO and the dry run alike.

A :class:`StepSpec` bounds one step (timeout, attempts, backoff, best effort) and says when the
service's config makes the step return at once (``skipped``: no ``dns:``, no ``database:``,
fencing off), so :mod:`engine.core.rto` can add up exactly what the runner will wait for.

- failover (:func:`failover_plan`): precheck → fence → promote → shift_dns → verify_dns →
  consistency → reconcile → report. The fence must succeed (3 attempts, waiting out the lease when
  the old primary cannot be fenced) when the service has a self-fencing lease or the move asked for
  it (``fence_first``, switchover); otherwise it is best effort.
- switchover (:func:`switchover_plan`): precheck → lower_ttl → weighted_failback → fence → drain → promote →
  shift_dns → verify_dns → reverse → restore_ttl → reconcile → report. ``weighted_failback`` runs only for a
  move home with ``dns.weighted_failback`` (its worst case: every step held, checked, plus a write each).

Pure: config in, tuples out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.config.base import format_duration
from engine.config.lease import Lease
from engine.config.model import ServiceConfig

FAILOVER_STEPS = ("precheck", "fence", "promote", "shift_dns", "verify_dns", "consistency", "reconcile", "report")
SWITCHOVER_STEPS = ("precheck", "lower_ttl", "weighted_failback", "fence", "drain", "promote", "shift_dns",
                    "verify_dns", "reverse", "restore_ttl", "reconcile", "report")
RUNBOOKS = {"failover": FAILOVER_STEPS, "switchover": SWITCHOVER_STEPS}
# after a crash or an operator's retry: read DNS again, and fence again (the old primary may have been
# unfenced meanwhile; fencing is idempotent)
RERUN_ON_RESUME = frozenset({"precheck", "fence"})


def format_seconds(value: float) -> str:
    """``35.4``, ``0.02``, ``843.5``, ``60``: at most two decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


@dataclass(frozen=True, slots=True)
class StepSpec:
    """The time bounds of one runbook step, and whether this service's config skips it outright."""

    name: str
    timeout: float = 30.0
    attempts: int = 3
    backoff: float = 0.5
    best_effort: bool = False
    skipped: str | None = None  # why the step returns at once for this config (e.g. no dns configured)
    source: str = ""  # where the timeout comes from, when the config sets it

    @property
    def worst_s(self) -> float:
        """The longest the step can take while the runbook still goes on.

        A step that must succeed does so on its last attempt, just before its timeout, after a
        backoff that doubles between attempts: ``attempts * timeout + backoff * (2^(attempts-1) - 1)``.
        A best-effort step may fail every attempt and the runbook still continues; the runner also
        sleeps a backoff after the last failed attempt: ``attempts * timeout + backoff * (2^attempts - 1)``.
        """
        if self.skipped is not None:
            return 0.0
        pauses = self.attempts if self.best_effort else self.attempts - 1
        return self.attempts * self.timeout + self.backoff * (2.0 ** pauses - 1)

    def explain(self) -> str:
        if self.skipped is not None:
            return f"{self.name} skipped: {self.skipped}"
        pauses = self.attempts if self.best_effort else self.attempts - 1
        backoff = self.backoff * (2.0 ** pauses - 1)
        parts = [format_duration(self.timeout) if self.attempts == 1
                 else f"{self.attempts} × {format_duration(self.timeout)}"]
        if backoff:
            parts.append(f" + {format_seconds(backoff)}s backoff")
        if self.source:
            parts.append(f", {self.source}")
        if self.best_effort:
            parts.append(", best effort")
        return f"{self.name} ({''.join(parts)})"


def _skips(svc: ServiceConfig) -> tuple[str | None, str | None, str | None]:
    dns, db = svc.dns, svc.database
    no_dns = None if dns is not None else "no dns configured"
    no_db = None if db is not None else "no database configured"
    no_fence = no_db or (None if db is None or db.fencing.enabled else "fencing disabled")
    return no_dns, no_db, no_fence


def failover_plan(svc: ServiceConfig, *, lease: Lease | None = None, require_fence: bool = False,
                  ) -> tuple[StepSpec, ...]:
    """The failover runbook's steps for ``svc``, in order. With a lease (or ``require_fence``) the fence
    must succeed: it fences, or waits out the lease (its wait is part of the step's timeout)."""
    dns, db = svc.dns, svc.database
    no_dns, no_db, no_fence = _skips(svc)
    verify_deadline = dns.verify.deadline if dns is not None else 30.0
    fence_timeout = db.fencing.timeout if db is not None else 10.0
    required = lease is not None or require_fence
    lease_wait = lease.wait if lease is not None else 0.0
    budgets = svc.policy.steps
    return (
        StepSpec("precheck", timeout=budgets.precheck.timeout, attempts=budgets.precheck.attempts, backoff=0.5,
                 skipped=no_dns),
        StepSpec("fence", timeout=fence_timeout + 5 + lease_wait, attempts=3 if required else 1,
                 backoff=1.0 if required else 0.5, best_effort=not required, skipped=no_fence,
                 source=f"fencing timeout {format_duration(fence_timeout)} + 5s"
                 + (f" + lease wait {format_duration(lease_wait)}" if lease_wait else "")),
        StepSpec("promote", timeout=db.promotion.timeout + 5 if db is not None else 120.0,
                 attempts=budgets.promote_attempts, backoff=1.0,
                 skipped=no_db, source="promotion timeout + 5s" if db is not None else ""),
        StepSpec("shift_dns", timeout=budgets.shift_dns.timeout, attempts=budgets.shift_dns.attempts, backoff=0.5,
                 skipped=no_dns),
        StepSpec("verify_dns", timeout=verify_deadline + 10, attempts=1, skipped=no_dns,
                 source=f"verify deadline {format_duration(verify_deadline)} + 10s"),
        StepSpec("consistency", timeout=60.0, attempts=2, best_effort=True, skipped=no_db),
        StepSpec("reconcile", timeout=1800.0, attempts=1, best_effort=True, skipped=no_db),
        StepSpec("report", timeout=10.0, attempts=1, best_effort=True),
    )


def switchover_plan(svc: ServiceConfig) -> tuple[StepSpec, ...]:
    """The planned switchover's steps for ``svc``, in order (the fence must succeed)."""
    dns, db, policy = svc.dns, svc.database, svc.policy
    no_dns, no_db, no_fence = _skips(svc)
    old_ttl = max((r.ttl for r in dns.records), default=0.0) if dns is not None else 0.0
    verify_deadline = dns.verify.deadline if dns is not None else 30.0
    fence_timeout = db.fencing.timeout if db is not None else 10.0
    return (
        StepSpec("precheck", timeout=30.0, attempts=3, backoff=0.5, skipped=no_dns),
        StepSpec("lower_ttl", timeout=60.0 + old_ttl, attempts=2, backoff=0.5, skipped=no_dns,
                 source=f"60s + the old TTL {format_duration(old_ttl)}"),
        weighted_failback_spec(svc),
        StepSpec("fence", timeout=fence_timeout + 5, attempts=3, backoff=0.5, skipped=no_fence),
        StepSpec("drain", timeout=policy.switchover_drain + 5, attempts=1, skipped=no_db),
        StepSpec("promote", timeout=db.promotion.timeout + 5 if db is not None else 120.0, attempts=3, backoff=1.0,
                 skipped=no_db),
        StepSpec("shift_dns", timeout=60.0, attempts=4, backoff=0.5, skipped=no_dns),
        StepSpec("verify_dns", timeout=verify_deadline + 10, attempts=1, skipped=no_dns),
        StepSpec("reverse", timeout=600.0, attempts=2, backoff=2.0, skipped=no_db),
        StepSpec("restore_ttl", timeout=60.0, attempts=3, backoff=0.5, best_effort=True, skipped=no_dns),
        StepSpec("reconcile", timeout=1800.0, attempts=1, best_effort=True, skipped=no_db),
        StepSpec("report", timeout=10.0, attempts=1, best_effort=True),
    )


def weighted_failback_spec(svc: ServiceConfig) -> StepSpec:
    """The weighted failback's bounds: each step held ``hold`` and as long as its ``checks`` take, plus 60s a
    write; skipped without ``dns.weighted_failback`` (the runtime also skips it for a move away from home)."""
    weighted = svc.dns.weighted_failback if svc.dns is not None else None
    if weighted is None:
        return StepSpec("weighted_failback", timeout=10.0, attempts=1, skipped="no dns.weighted_failback")
    per_step = max(weighted.hold, weighted.checks * weighted.check_interval) + weighted.check_interval + 60.0
    return StepSpec("weighted_failback", timeout=len(weighted.steps) * per_step, attempts=1,
                    source=f"{len(weighted.steps)} steps × ({format_duration(per_step)} held, checked and written)")


def plan_for(svc: ServiceConfig, *, planned: bool, lease: Lease | None = None, require_fence: bool = False,
             ) -> tuple[StepSpec, ...]:
    """The plan a move runs: the switchover for a planned move, else the failover."""
    return switchover_plan(svc) if planned else failover_plan(svc, lease=lease, require_fence=require_fence)


def names(plan: Sequence[StepSpec]) -> list[str]:
    return [s.name for s in plan]
