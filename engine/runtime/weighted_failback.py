"""The weighted failback step and the canary drill: :mod:`engine.runtime.weighted_shift` wired to a service.

How the epoch relates (docs/providers.md, "Weighted failback"): the operation claimed epoch N (precheck read
N). The weight steps run under that claim, at epoch N: the first write is conditional on a fresh read at
epoch N, every later one on the weights this move wrote last (``set_weights`` compares the weights AND the
epoch), so a rival's move or a hand edit between two steps halts the failback (stand down) and nothing is
overwritten. The epoch itself moves only in ``shift_dns``, the compare-and-set N -> N+1, after the weights
reached 100 % and the database moved. The step sits before the fence: a rollback (home unhealthy at some
step) puts 100 % back on the source and halts the failback before any database is touched.

Health between steps: every probe of the target site that counts (``counts_as: info`` vantages do not) is
run once more, out of schedule, each ``check_interval``; one failure is an unhealthy check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from actions.dns.errors import DnsRefused
from actions.dns.weights import weighted
from engine.config.dns import WeightedFailbackConfig
from engine.core.clock import Clock
from engine.core.operations import Operation, Outcome, StepFailed
from engine.core.weighted import WeightedPlan
from engine.runtime.service import ServiceRuntime
from engine.runtime.weighted_shift import ShiftReport, run_weighted_shift

Health = Callable[[], Awaitable[tuple[bool, str]]]
Sleep = Callable[[float], Awaitable[None]]


def site_health(rt: ServiceRuntime, site: str) -> Health:
    """A check of ``site``: each of its counting probes observed once now; (healthy, reason)."""

    async def check() -> tuple[bool, str]:
        signals = [s for s in rt.signals.get(site, []) if s.counts and s.probe is not None]
        if not signals:
            return False, f"{site} has no probe to check"
        bad = []
        for sig in signals:
            obs = await sig.probe.observe()
            if not obs.ok:
                bad.append(f"{sig.key.name}: {obs.reason}")
        return not bad, "; ".join(bad) or f"{len(signals)} probe(s) of {site} pass"

    return check


def report_data(report: ShiftReport) -> dict[str, Any]:
    """A weighted move's record: outcome, each decision with its weights, the failed checks (a canary's errors)."""
    return {"outcome": report.outcome, "message": report.message, "failed_checks": report.failed_checks,
            "steps": [{"at": at, "message": message, "weights": weights} for at, message, weights in report.steps]}


async def weighted_failback(rt: ServiceRuntime, op: Operation, provider: Any, *, clock: Clock,
                            health: Health | None = None, sleep: Sleep | None = None) -> Outcome:
    """The ``weighted_failback`` step of the switchover runbook (see the module docstring)."""
    dns = rt.config.dns
    cfg = dns.weighted_failback if dns is not None else None
    if dns is None or cfg is None:
        return Outcome.skip("no dns.weighted_failback for this service")
    if op.target != rt.config.active:
        return Outcome.skip(f"not a failback: {op.target} is not home ({rt.config.active})")
    try:
        moving = weighted(provider, dns.provider.type)
    except DnsRefused as exc:
        raise StepFailed(str(exc), retry=False) from None
    now = await moving.read_weights()
    if now.epoch != op.epoch_from:  # the step runs before shift_dns and is not rerun after it: any other epoch
        return Outcome(f"the weights are at epoch {now.epoch}, not {op.epoch_from}: another operation moved "
                       f"{op.service}; not shifting weights", {"weights": now.describe()}, stand_down=True)
    if now.as_dict().get(op.target) == 100:
        return Outcome.skip(f"{op.target} already has 100 % of the traffic", weights=now.describe())
    plan = WeightedPlan(op.source, op.target, tuple(cfg.steps), hold_s=cfg.hold, checks_needed=cfg.checks)
    report = await _run(moving, plan, cfg, rt, clock, health, sleep)
    data = report_data(report)
    if report.outcome == "done":
        return Outcome(f"{op.target} took {' -> '.join(str(s) for s in cfg.steps)} % of the traffic, healthy at "
                       f"each step; the epoch moves in shift_dns", data)
    if report.outcome == "halted":
        return Outcome(report.message, data, stand_down=True)
    raise StepFailed(f"weighted failback rolled back: {report.message}"
                     + (f" ({report.failed_checks[-1]})" if report.failed_checks else ""), retry=False)


async def canary(rt: ServiceRuntime, provider: Any, standby: str, *, clock: Clock, health: Health | None = None,
                 sleep: Sleep | None = None) -> ShiftReport:
    """A canary drill: ``canary_percent`` of the traffic to ``standby`` for one hold, its errors reported, then
    100 % back on the active site. DnsRefused when the provider has no weights."""
    dns = rt.config.dns
    assert dns is not None and dns.weighted_failback is not None
    cfg = dns.weighted_failback
    moving = weighted(provider, dns.provider.type)
    plan = WeightedPlan(rt.state.active, standby, (cfg.canary_percent,), hold_s=cfg.hold, checks_needed=cfg.checks,
                        kind="canary")
    return await _run(moving, plan, cfg, rt, clock, health or site_health(rt, standby), sleep)


async def _run(moving: Any, plan: WeightedPlan, cfg: WeightedFailbackConfig, rt: ServiceRuntime, clock: Clock,
               health: Health | None, sleep: Sleep | None) -> ShiftReport:
    kwargs: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
    return await run_weighted_shift(moving, plan, health or site_health(rt, plan.target), clock=clock,
                                    check_interval=cfg.check_interval, **kwargs)
