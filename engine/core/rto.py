"""Worst-case RTO of a service, computed from its configuration (pure: no I/O, no clock).

The recovery time objective a configuration can promise is the longest time from "the home site
fails" to "clients reach the standby", when every part of the chain is as slow as its bounds allow
but the failover still succeeds. :func:`worst_case_rto` adds it up from the same numbers the engine
runs with, so an operator sees in ``check-config`` (and in status and drill reports, beside the RTO
measured in the last drill or failover) what probe intervals, thresholds, step timeouts and TTLs
cost, and whether they fit the service's ``rto_slo``.

Theory of operation: the terms, in the order they happen
--------------------------------------------------------
detection
    Automatic failover only moves away from the home site (``services.<name>.active``), so the
    signals that matter are that site's probes and its ``scope: site`` dependencies. A site is
    DOWN as soon as one of its signals is DOWN (:func:`engine.core.decide.site_health`), so a failure
    that only one signal sees is detected by that signal alone: the worst case is the slowest
    signal. A signal goes DOWN after ``failure_threshold`` consecutive failures (the probe's
    override, else the policy's: :mod:`engine.core.health`, wired in ``Engine._add_signal``). Checks run
    at a fixed phase with ±jitter per slot (:mod:`engine.core.cadence`: ``default_jitter``); in the
    worst case the failure starts just after a check that still succeeded, so the N-th failing
    check starts ``N * interval`` later, up to ``2 * jitter`` more (that check late, the last
    good one early), and reports ``timeout`` after it starts (a check that hangs). When
    ``timeout + 2 * jitter >= interval`` a check can still be running at its next slot, which the
    scheduler then skips (:mod:`engine.runtime.probe_scheduler`): every failing check may cost two slots.
decision
    A DOWN change pokes the decision loop, which ticks within ``POKE_GAP`` (``engine.runtime.daemon``).
    With peers, a failover needs a majority of the configured voters seeing the home site down
    (:mod:`engine.core.quorum`, :mod:`engine.core.policy`); the slowest vote is a peer's: it detects as late
    as we do (the same config is assumed on every voter), pokes its own loop (``POKE_GAP``), may
    find its previous broadcast still in flight, so its verdict leaves on a later tick
    (``tick * ceil(deadline / tick)``), travels within the post deadline (``max(0.2 s, 0.8 *
    tick)``, :meth:`engine.runtime.peering.Peering.dispatch`), and its arrival pokes the executor's loop
    (``POKE_GAP``). A verdict stays a vote for two of the sender's ticks; clock skew up to
    ``SKEW_ALLOWANCE`` does not age it (:mod:`engine.runtime.peering`). The cool-down does not apply to
    the first move (:func:`engine.core.decide.cooldown_reason`: no last move), so it is not counted.
lease
    With a self-fencing lease (:mod:`engine.config.lease`), when the executor cannot fence the old primary
    itself, the fence step waits until enough voters certify the old site's engines silent for the
    lease + drift margin (``Lease.wait``), so the cut-off primary has fenced itself first. Given as
    ``lease_wait``; else the service's lease (``EngineConfig.lease``); else 0.
runbook
    The failover steps up to and including ``verify_dns`` (traffic has moved when the
    authoritative servers answer the target). Each step is bounded by its
    :class:`~engine.core.steps.StepSpec` from :func:`engine.core.steps.failover_plan`, the very table
    the runner executes. ``consistency``, ``reconcile`` and ``report`` run after traffic moved and are listed
    apart, not added.
DNS propagation
    When the caller knows the provider's worst-case propagation (``actions.dns.propagation_worst_s``;
    the core cannot import actions, so the CLI and the runtime pass it in), the verify step is counted
    as what it really waits for: that propagation plus one round of queries (its ``interval`` and
    ``query_timeout``), never more than its own bound. A provider that itself waits for the change to
    be applied inside ``shift_dns`` (``change_timeout``: Route 53, Cloud DNS) has spent the
    propagation there, so verify costs one round. A propagation the waiting step's deadline cannot
    cover is a note: that step gives up before the provider's worst case.
synchronous commit
    With ``database.synchronous: on``, the promoted primary may still name the lost site's
    subscription in ``synchronous_standby_names`` (a name kept from when it was the primary): its
    commits then wait until the engine degrades to asynchronous, ``synchronous_degrade.after`` plus
    one ``check_interval`` (:func:`engine.core.loss.write_stall`). With ``strict`` the engine names
    the lost site at once and never degrades: writes stay blocked until re-protect, which no
    figure can bound; the term is 0 and a note says so. ``off`` (or no database): no term.
DNS TTL
    After the authoritative servers answer the target, resolvers may serve the old answer for up
    to the largest record TTL.

Not counted: compute time of a tick, event loop stalls, clients that ignore TTLs, a standby that
is not already UP (it needs ``success_threshold`` successes first), and an RPO gate that holds the
move (replication lag unknown or above the RPO: that is a refusal, not a delay).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.config.base import format_duration
from engine.config.coordination import etcd_lease_wait
from engine.config.model import EngineConfig, PolicyConfig, ServiceConfig
from engine.core.cadence import default_jitter
from engine.core.loss import write_stall
from engine.core.steps import StepSpec, failover_plan, format_seconds

POKE_GAP = 0.02
"""Mirror of ``engine.runtime.daemon.POKE_GAP``: the longest wait between a poke and the decision tick."""

SKEW_ALLOWANCE = 2.0
"""Mirror of ``engine.runtime.peering.SKEW_ALLOWANCE``: clock difference that does not age a verdict."""

CLOUDFLARE_AUTOMATIC_TTL = 300.0
"""Cloudflare serves a record written with TTL 1 ("automatic") with a 300 s TTL."""

TRAFFIC_STEPS = ("precheck", "fence", "promote", "shift_dns", "verify_dns")
"""The runbook steps traffic waits for; the others run after it has moved."""

WAITS_FOR_CHANGE = frozenset({"route53", "cloud_dns"})
"""Providers whose shift polls the change until applied (``actions/dns/route53.py`` INSYNC, ``cloud_dns.py`` done)."""

LABELS = {"detection": "detection", "decision": "decision", "lease": "lease", "runbook": "runbook",
          "dns_ttl": "DNS TTL", "dns_propagation": "DNS propagation",
          "sync_stall": "synchronous commit"}


@dataclass(frozen=True, slots=True)
class Component:
    """One term of the estimate: its name, its worst case and the arithmetic behind it, in one line."""

    name: str
    seconds: float
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": round(self.seconds, 3), "explanation": self.explanation}


def runbook_steps(svc: ServiceConfig) -> tuple[StepSpec, ...]:
    """The failover runbook's step bounds for ``svc``, in order: :func:`engine.core.steps.failover_plan`
    without the lease (the lease wait is its own component of the estimate)."""
    return failover_plan(svc)


def _component(step: StepSpec) -> Component:
    return Component(step.name, step.worst_s, step.explain())


@dataclass(frozen=True, slots=True)
class SignalDetection:
    """How long one signal of the home site may take to go DOWN after a failure starts."""

    signal: str
    interval: float
    timeout: float
    threshold: int

    @property
    def jitter(self) -> float:
        return default_jitter(self.interval)

    @property
    def may_skip(self) -> bool:
        """A check can still be running at its next slot, which the scheduler then skips."""
        return self.timeout + 2 * self.jitter >= self.interval

    @property
    def slots(self) -> int:
        return 2 * self.threshold if self.may_skip else self.threshold

    @property
    def worst_s(self) -> float:
        return self.slots * self.interval + self.timeout + 2 * self.jitter

    def explain(self) -> str:
        count = (f"{self.threshold} failures × 2 slots (timeout + jitter reach the interval: a slot can be "
                 "skipped)" if self.may_skip else f"{self.threshold} failures")
        return (f"{count} × {format_duration(self.interval)} interval + {format_duration(self.timeout)} timeout "
                f"+ {format_seconds(2 * self.jitter)}s jitter")


@dataclass(frozen=True, slots=True)
class RtoEstimate:
    """The worst-case RTO of one service: ordered components that add up to :attr:`total_s`.

    ``after_traffic`` lists the runbook steps that run once traffic has moved (not in the total);
    ``automatic`` is False when no automatic failover can happen at all; ``notes`` say why, and
    anything else the figure hides (a whole-site loss the quorum cannot survive, the SLO missed).
    """

    service: str
    components: tuple[Component, ...]
    steps: tuple[Component, ...] = ()
    after_traffic: tuple[Component, ...] = ()
    rto_slo_s: float | None = None
    automatic: bool = True
    notes: tuple[str, ...] = field(default=())

    @property
    def total_s(self) -> float:
        return math.fsum(c.seconds for c in self.components)

    @property
    def over_slo_s(self) -> float | None:
        """How far the worst case exceeds ``rto_slo`` (None: within it, or no SLO)."""
        if self.rto_slo_s is None or self.total_s <= self.rto_slo_s:
            return None
        return self.total_s - self.rto_slo_s

    def dominant(self) -> str:
        """The largest term, and for the runbook its largest step: ``runbook 465 s (largest step: ...)``."""
        largest = max(self.components, key=lambda c: c.seconds)
        text = f"{LABELS.get(largest.name, largest.name)} {format_seconds(largest.seconds)} s"
        if largest.name == "runbook" and self.steps:
            step = max(self.steps, key=lambda c: c.seconds)
            text += f" (largest step: {format_seconds(step.seconds)} s = {step.explanation})"
        return text

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def line(self, measured_s: float | None = None, measured_in: str = "the last drill or failover") -> str:
        """``worst-case RTO for shop: 940.74 s (detection 35.4 s + decision 1.84 s + ...)``."""
        terms = " + ".join(f"{LABELS.get(c.name, c.name)} {format_seconds(c.seconds)} s" for c in self.components)
        text = f"worst-case RTO for {self.service}: {format_seconds(self.total_s)} s ({terms})"
        if measured_s is not None:
            text += f"; measured {format_seconds(measured_s)} s in {measured_in}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "total_s": round(self.total_s, 3),
            "components": [c.to_dict() for c in self.components],
            "runbook_steps": [c.to_dict() for c in self.steps],
            "after_traffic_moved": [c.to_dict() for c in self.after_traffic],
            "rto_slo_s": self.rto_slo_s,
            "within_slo": None if self.rto_slo_s is None else self.total_s <= self.rto_slo_s,
            "automatic": self.automatic,
            "notes": list(self.notes),
        }


def home_signals(svc: ServiceConfig) -> list[SignalDetection]:
    """The signals that judge the home site: its probes and its ``scope: site`` dependencies."""
    policy = svc.policy
    home = svc.active
    out = [SignalDetection(p.signal_name, p.interval, p.timeout,
                           p.failure_threshold or policy.failure_threshold) for p in svc.sites[home].probes]
    out += [SignalDetection(f"dep:{d.name}", d.probe.interval, d.probe.timeout,
                            d.probe.failure_threshold or policy.failure_threshold)
            for d in svc.dependencies if d.scope == "site" and d.site == home]
    return out


def _detection(svc: ServiceConfig) -> tuple[Component, list[str]]:
    signals = home_signals(svc)
    if not signals:
        return (Component("detection", 0.0, f"home site {svc.active} has no signals: it is never judged down"),
                [f"{svc.active} has no signals: the engine never sees it down, so it never fails over by itself"])
    slowest = max(signals, key=lambda s: s.worst_s)
    fastest = min(signals, key=lambda s: s.worst_s)
    text = f"{slowest.explain()} (slowest signal of {svc.active}: {slowest.signal}"
    if len(signals) > 1 and fastest.worst_s < slowest.worst_s:
        text += f"; a whole-site outage is seen by {fastest.signal} within {format_seconds(fastest.worst_s)}s"
    return Component("detection", slowest.worst_s, text + ")"), []


def _decision(config: EngineConfig, policy: PolicyConfig) -> Component:
    voters = 1 + len(config.peers)
    cooldown = f"cool-down {format_duration(policy.cooldown)} not counted (first move)"
    if voters == 1:
        return Component("decision", POKE_GAP, f"single voter: the DOWN change pokes the decision loop, which "
                                               f"decides within {format_seconds(POKE_GAP)}s; {cooldown}")
    tick = config.instance.tick
    deadline = max(0.2, 0.8 * tick)
    wait = tick * math.ceil(deadline / tick)
    total = POKE_GAP + wait + deadline + POKE_GAP
    poke, fmt = format_seconds(POKE_GAP), format_seconds
    return Component("decision", total, (
        f"majority {voters // 2 + 1} of {voters} voters: {poke}s poke + {fmt(wait)}s until the peer's next "
        f"broadcast + {fmt(deadline)}s verdict post deadline + {poke}s poke at the executor; a verdict votes for "
        f"{fmt(2 * tick)}s (2 × tick, clocks within {fmt(SKEW_ALLOWANCE)}s); {cooldown}"))


def _lease(config: EngineConfig, service: str, lease_wait: float | None) -> Component:
    if lease_wait is not None:
        return Component("lease", lease_wait,
                         f"self-fencing lease: wait {format_seconds(lease_wait)}s before promoting")
    svc = config.services[service]
    coord = config.coordination
    if coord.type == "etcd" and svc.database is not None and svc.database.fencing.enabled:
        wait = etcd_lease_wait(coord, config.instance.tick)
        return Component("lease", wait, (
            f"etcd mode: when the old primary cannot be fenced, the fence step waits until etcd drops the old "
            f"site's write lease: lease_ttl {format_seconds(coord.lease_ttl)}s + deadline "
            f"{format_seconds(coord.deadline)}s + 2 ticks = {format_seconds(wait)}s"))
    lease = config.lease(service)
    if lease is not None:
        return Component("lease", lease.wait, (
            f"when the old primary cannot be fenced, the fence step waits for {format_seconds(lease.wait)}s of "
            f"certified silence ({lease.explain()})"))
    return Component("lease", 0.0, "no lease configured (no database, fencing off, lease null, "
                                   "or fewer than 3 voters)")


def _verify_within(svc: ServiceConfig, step: StepSpec, propagation_s: float) -> Component:
    """verify_dns as long as the provider's propagation plus one round of queries, within its own bound."""
    assert svc.dns is not None  # a step that is not skipped
    verify = svc.dns.verify
    change_timeout = _change_timeout(svc)
    left = 0.0 if change_timeout is not None else propagation_s
    wait = left + verify.interval + verify.query_timeout
    if wait >= step.worst_s:
        return _component(step)
    why = (f"the provider reported the change applied inside shift_dns (change_timeout "
           f"{format_duration(change_timeout)}), then" if change_timeout is not None
           else f"provider propagation {format_seconds(propagation_s)}s +")
    return Component(step.name, wait, (
        f"verify_dns ({why} one round: interval {format_duration(verify.interval)} + query timeout "
        f"{format_duration(verify.query_timeout)}; bound {format_seconds(step.worst_s)}s)"))


def _change_timeout(svc: ServiceConfig) -> float | None:
    """A provider that waits, inside shift_dns, for the change to be applied (Route 53 INSYNC, Cloud DNS
    done) bounds that wait by ``change_timeout``; None for the others."""
    if svc.dns is None or svc.dns.provider.type not in WAITS_FOR_CHANGE:
        return None
    value = getattr(svc.dns.provider, "change_timeout", None)
    return float(value) if isinstance(value, int | float) else None


def _propagation_notes(svc: ServiceConfig, propagation: float) -> list[str]:
    """Where the provider's worst propagation does not fit the step that waits for it."""
    dns = svc.dns
    if dns is None:
        return []
    kind, worst = dns.provider.type, format_seconds(propagation)
    change_timeout = _change_timeout(svc)
    shift = svc.policy.steps.shift_dns.timeout
    if change_timeout is not None:
        notes = []
        if propagation > change_timeout:
            notes.append(f"{kind} may take {worst}s to apply a change, longer than dns.provider.change_timeout "
                         f"{format_duration(change_timeout)}: the shift may give up first")
        if change_timeout > shift:
            notes.append(f"policy.steps.shift_dns.timeout {format_duration(shift)} is shorter than "
                         f"dns.provider.change_timeout {format_duration(change_timeout)}: an attempt may time out "
                         "while the provider applies the change")
        return notes
    if propagation > dns.verify.deadline:
        return [f"{kind} may take {worst}s to reach every authoritative server, longer than dns.verify.deadline "
                f"{format_duration(dns.verify.deadline)}: the verify step may give up first"]
    return []


def _runbook(svc: ServiceConfig, propagation_s: float | None = None,
             ) -> tuple[Component, tuple[Component, ...], tuple[Component, ...]]:
    budgets = runbook_steps(svc)
    traffic = tuple(_verify_within(svc, b, propagation_s)
                    if b.name == "verify_dns" and b.skipped is None and propagation_s is not None
                    else _component(b) for b in budgets if b.name in TRAFFIC_STEPS)
    after = tuple(_component(b) for b in budgets if b.name not in TRAFFIC_STEPS)
    ran = [c.explanation for c, b in zip(traffic, (b for b in budgets if b.name in TRAFFIC_STEPS), strict=True)
           if b.skipped is None]
    skipped = [b.name for b in budgets if b.name in TRAFFIC_STEPS and b.skipped is not None]
    text = " + ".join(ran) or "every traffic step skipped"
    if skipped:
        text += f"; skipped: {', '.join(skipped)}"
    return Component("runbook", math.fsum(c.seconds for c in traffic), text), traffic, after


def _sync_stall(svc: ServiceConfig) -> tuple[tuple[Component, ...], list[str]]:
    """How long commits on the promoted primary may wait for the lost site (see the module docstring);
    no term without a database or with synchronous ``off``."""
    db = svc.database
    if db is None or db.synchronous == "off":
        return (), []
    degrade = db.synchronous_degrade
    stall, why = write_stall(db.synchronous, degrade.after)
    if stall is None:
        return (Component("sync_stall", 0.0, f"synchronous {why}: not counted, it has no bound"),), [
            "synchronous strict: after a failover the new primary's commits wait for the lost site until it "
            "is re-protected; clients reach the standby within this figure but their writes do not commit"]
    seconds = stall + degrade.check_interval
    return (Component("sync_stall", seconds, (
        f"synchronous {why}, read every {format_duration(degrade.check_interval)}: the promoted primary may still "
        "name the lost site (a name kept from when it was primary)")),), []


def _dns_ttl(svc: ServiceConfig) -> Component:
    dns = svc.dns
    if dns is None:
        return Component("dns_ttl", 0.0, "no dns configured: the engine does not move traffic")
    cloudflare = dns.provider.type == "cloudflare"

    def effective(ttl: float) -> float:
        return CLOUDFLARE_AUTOMATIC_TTL if cloudflare and ttl == 1 else ttl

    record = max(dns.records, key=lambda r: effective(r.ttl))
    ttl = effective(record.ttl)
    how = (f"TTL 1 (Cloudflare automatic: {format_duration(ttl)})" if ttl != record.ttl
           else f"TTL {format_duration(ttl)}")
    others = "" if len(dns.records) == 1 else f", the largest of {len(dns.records)} records"
    return Component("dns_ttl", ttl, f"{record.name} {how}{others}: resolvers may serve the old answer this long "
                                     "after the authoritative servers answer")


def _quorum_notes(config: EngineConfig, svc: ServiceConfig) -> list[str]:
    """Whether losing the whole home site (its voters with it) leaves a majority and an executor."""
    inst = config.instance
    voters = [(inst.id, inst.role, inst.site)] + [(p.id, p.role, p.site) for p in config.peers]
    majority = len(voters) // 2 + 1
    survivors = [v for v in voters if v[2] != svc.active]
    engines = [v[0] for v in voters if v[1] == "engine"]
    order = [i for i in svc.policy.executors if i in engines] or engines
    if len(voters) == 1 and not survivors:
        return [f"the only voter runs in {svc.active}, the home site: losing all of {svc.active} leaves nothing "
                "to fail over; the figure holds when only the service fails"]
    if len(survivors) < majority:
        return [f"losing all of {svc.active} (its {len(voters) - len(survivors)} voter(s) too) leaves "
                f"{len(survivors)} of {len(voters)} voters, below the majority {majority}: the engines hold "
                "and page (manual failover); the figure holds when only the service fails"]
    if not any(site != svc.active for vid, _, site in voters if vid in order):
        return [f"no executor outside {svc.active}: losing that site leaves no engine able to act"]
    return []


def worst_case_rto(config: EngineConfig, service: str, *, lease_wait: float | None = None,
                   dns_propagation: Callable[[str], float] | None = None) -> RtoEstimate:
    """The worst-case RTO of ``service`` under ``config``; see the module docstring for every term.

    ``lease_wait``: the self-fencing lease the majority waits out before promoting (None: the
    service's own lease, see :meth:`EngineConfig.lease`). ``dns_propagation``: a provider type's
    worst-case propagation to its authoritative servers (``actions.dns.propagation_worst_s``; None:
    the verify step counted at its full bound).
    """
    svc = config.services[service]
    policy = svc.policy
    detection, notes = _detection(svc)
    propagation = (dns_propagation(svc.dns.provider.type)
                   if dns_propagation is not None and svc.dns is not None else None)
    runbook, steps, after = _runbook(svc, propagation)
    if propagation is not None:
        notes += _propagation_notes(svc, propagation)
    stall, stall_notes = _sync_stall(svc)
    notes += stall_notes
    components = (detection, _decision(config, policy), _lease(config, service, lease_wait), runbook, *stall,
                  _dns_ttl(svc))
    automatic = bool(home_signals(svc)) and policy.auto_failover
    if not policy.auto_failover:
        notes.append("automatic failover is disabled: detection pages, and an operator's reaction adds to this")
    notes += _quorum_notes(config, svc)
    if config.instance.role == "witness":
        notes.append("a witness never runs the runbook: the runbook and DNS TTL terms are the engines' "
                     "(run check-config on their files)")
    elif svc.dns is None:
        notes.append("no dns configured: the engine moves no traffic (precheck, shift_dns and verify_dns are skipped)")
    estimate = RtoEstimate(service, components, steps, after, policy.rto_slo, automatic, tuple(notes))
    over = estimate.over_slo_s
    if over is None:
        return estimate
    note = (f"above rto_slo {format_duration(policy.rto_slo)} by {format_seconds(over)}s "
            f"(largest term: {estimate.dominant()})")
    return RtoEstimate(service, components, steps, after, policy.rto_slo, automatic, (*notes, note))


def worst_case_rtos(config: EngineConfig, *, lease_wait: float | None = None,
                    dns_propagation: Callable[[str], float] | None = None) -> list[RtoEstimate]:
    """:func:`worst_case_rto` of every service, in config order."""
    return [worst_case_rto(config, name, lease_wait=lease_wait, dns_propagation=dns_propagation)
            for name in config.services]

