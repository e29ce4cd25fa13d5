"""Carry out a weighted move (:mod:`engine.core.weighted`) against a provider with weights.

The executor writes each step's weights through the provider's compare-and-set (``set_weights`` on the
weights it just read), then checks the target's health every ``check_interval`` and feeds the result
to the pure :func:`~engine.core.weighted.decide` until the plan is done, finished (a canary) or rolled
back. A rival's change of the weights or the epoch (DnsConflict) halts the move where it is and says
so: nothing is overwritten. A health callback that raises counts as an unhealthy check. The report
lists every decision with its time, the weights written and the failed checks (a canary's errors).

Wiring (by the lead, after the redesign): failback calls :func:`run_weighted_shift` with a ``failback``
plan instead of one shift when the service's provider has weights; a canary drill calls it with a
``canary`` plan (e.g. ``steps=(1,)``) and puts the report into the drill report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from actions.dns.errors import DnsConflict, DnsError
from actions.dns.weights import WeightedProvider, Weights
from engine.core.clock import Clock
from engine.core.weighted import Phase, ShiftState, WeightedPlan, decide


@dataclass
class ShiftReport:
    """What a weighted move did: each decision (time, message, weights written), its end and failed checks."""

    plan: WeightedPlan
    steps: list[tuple[float, str, dict[str, int] | None]] = field(default_factory=list)
    outcome: str = "running"  # done | finished | rolled_back | halted
    message: str = ""
    failed_checks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome in ("done", "finished")


async def run_weighted_shift(provider: WeightedProvider, plan: WeightedPlan,
                             health: Callable[[], Awaitable[tuple[bool, str]]], *, clock: Clock,
                             check_interval: float = 10.0,
                             sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> ShiftReport:
    """Run ``plan`` on ``provider``; ``health()`` answers (healthy, reason) for the target site."""
    report = ShiftReport(plan)
    state = ShiftState()
    healthy: bool | None = None
    written: Weights | None = None
    while True:
        decision = decide(plan, state, clock.now(), healthy)
        report.steps.append((clock.now(), decision.message, decision.weights))
        if decision.weights is not None:
            written = await _write(provider, written, decision.weights, report)
            if written is None:
                return report
        state = decision.state
        if decision.finished:
            report.outcome = str(state.phase) if state.phase is not Phase.DONE else "done"
            report.message = decision.message
            return report
        await sleep(check_interval)
        try:
            healthy, reason = await health()
        except Exception as exc:  # a health check that cannot answer is not health
            healthy, reason = False, f"health check failed: {type(exc).__name__}"
        if not healthy:
            report.failed_checks.append(reason)


async def _write(provider: WeightedProvider, last: Weights | None, shares: dict[str, int],
                 report: ShiftReport) -> Weights | None:
    """Write ``shares`` on the weights this move wrote last (the first time: on a fresh read), so a change
    made by anyone else between two steps is refused; None (report halted) when the write is refused."""
    try:
        expected = last if last is not None else await provider.read_weights()
        return await provider.set_weights(expected, shares)
    except DnsConflict as exc:
        report.outcome, report.message = "halted", f"weights moved by someone else, halting: {exc.found}"
    except DnsError as exc:
        report.outcome, report.message = "halted", f"weights not written ({exc}); halting at the last weights written"
    return None
