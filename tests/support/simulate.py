"""A discrete-event simulation of three voters probing two sites, on simulated time.

Each voter (two engines and a witness) probes each site every ``interval`` seconds at its own
fixed phase, feeding its own :class:`~engine.core.health.HealthMachine`. Noise: each probe may start a
*blip* (a random failure or a latency spike past the timeout) of one or two failed probes, after
which at least one probe succeeds; blips are independent per voter and site. Verdicts are
broadcast every ``tick`` second and each delivery is lost with ``loss`` probability. Outages make
one site fail for every voter (``rst``: probes fail at once; ``blackhole``: they fail after the
timeout).

Decisions are the real :func:`~engine.core.policy.decide_cluster` over the real
:func:`~engine.core.quorum.tally`, evaluated every tick whenever any machine is not UP (a voter whose
machines are all UP cannot vote a site down, so quiet ticks are skipped). The simulation never
moves the service: it records when a failover would be acted on.
"""

from __future__ import annotations

import bisect
import heapq
import random
from dataclasses import dataclass, field

from engine.config.model import PolicyConfig
from engine.core.decide import ServiceState
from engine.core.health import Health, HealthMachine
from engine.core.policy import decide_cluster
from engine.core.quorum import Received, VoterInfo, tally
from engine.core.verdict import ServiceVerdict

VOTERS = [VoterInfo("engine-gcp", "engine", "gcp"), VoterInfo("engine-azure", "engine", "azure"),
          VoterInfo("witness", "witness", "witness")]
ENGINES = VOTERS[:2]
SITES = ("gcp", "azure")


@dataclass(frozen=True)
class Outage:
    site: str
    start: float
    end: float
    mode: str  # rst | blackhole


@dataclass
class Result:
    probes: int = 0
    blips: int = 0
    lost_messages: int = 0
    decisions_evaluated: int = 0
    false_failovers: list[float] = field(default_factory=list)
    detections: dict[int, float] = field(default_factory=dict)  # outage index -> seconds to decision
    majority_down: dict[int, float] = field(default_factory=dict)  # outage index -> seconds to majority DOWN
    recovered: dict[int, float] = field(default_factory=dict)  # outage index -> time a majority saw it UP again


class Simulation:
    def __init__(self, *, days: float, interval: float = 10.0, timeout: float = 5.0, tick: float = 1.0,
                 blip_rate: float = 0.05, loss: float = 0.1, threshold: int = 3, seed: int = 1,
                 outages: list[Outage] | None = None, flaky_voter: str | None = None,
                 flaky_rate: float = 0.01) -> None:
        self.rng = random.Random(seed)
        self.end = days * 86400
        self.interval, self.timeout, self.tick = interval, timeout, tick
        self.blip_rate, self.loss = blip_rate, loss
        self.policy = PolicyConfig(failure_threshold=threshold, success_threshold=2, rpo=30, cooldown=1800)
        self.outages = sorted(outages or [], key=lambda o: o.start)
        self.flaky_voter, self.flaky_rate = flaky_voter, flaky_rate  # its own link fails for 3-8 probes at times
        self._starts = [o.start for o in self.outages]
        self.machines = {(v.id, s): HealthMachine(threshold, 2) for v in VOTERS for s in SITES}
        self.blip_left = {(v.id, s): 0 for v in VOTERS for s in SITES}
        self.cool = {(v.id, s): False for v in VOTERS for s in SITES}
        # per voter: times its view changed, and the views (for what peers saw at a past tick)
        self.view_times: dict[str, list[float]] = {v.id: [] for v in VOTERS}
        self.views: dict[str, list[ServiceVerdict]] = {v.id: [] for v in VOTERS}

    def _outage_at(self, site: str, t: float) -> Outage | None:
        i = bisect.bisect_right(self._starts, t) - 1
        while i >= 0:  # outages do not overlap much: look back a few
            o = self.outages[i]
            if o.site == site and o.start <= t < o.end:
                return o
            if t - o.start > 3600:
                break
            i -= 1
        return None

    def _view(self, voter: str) -> ServiceVerdict:
        return ServiceVerdict(active="gcp", epoch=1, lag_s=1.0,
                              sites={s: str(self.machines[(voter, s)].state) for s in SITES})  # type: ignore[misc]

    def _record_view(self, voter: str, t: float) -> None:
        view = self._view(voter)
        if not self.views[voter] or self.views[voter][-1] != view:
            self.view_times[voter].append(t)
            self.views[voter].append(view)

    def _seen(self, voter: str, t_tick: float) -> ServiceVerdict | None:
        i = bisect.bisect_right(self.view_times[voter], t_tick) - 1
        return self.views[voter][i] if i >= 0 else None

    def _received(self, receiver: str, now: float, result: Result) -> dict[str, Received | None]:
        out: dict[str, Received | None] = {}
        for peer in VOTERS:
            if peer.id == receiver:
                continue
            got = None
            k = int(now // self.tick) * self.tick
            for back in range(3):  # the newest delivered verdict of the last three ticks
                t_sent = k - back * self.tick
                if t_sent < 0:
                    break
                if self.rng.random() < self.loss:
                    result.lost_messages += 1
                    continue
                view = self._seen(peer.id, t_sent)
                if view is not None:
                    got = Received(view, received_at=t_sent, interval=self.tick)
                break
            out[peer.id] = got
        return out

    def _probe_fails(self, key: tuple[str, str], t: float, result: Result) -> tuple[bool, float]:
        outage = self._outage_at(key[1], t)
        if outage is not None:
            return True, (self.timeout if outage.mode == "blackhole" else 0.002)
        if key[0] == self.flaky_voter and self.blip_left[key] == 0 and self.rng.random() < self.flaky_rate:
            self.blip_left[key] = self.rng.randint(3, 8)  # long enough to take this voter's view DOWN
            result.blips += 1
        if self.blip_left[key] > 0:
            self.blip_left[key] -= 1
            self.cool[key] = self.blip_left[key] == 0
            return True, self.timeout
        if not self.cool[key] and self.rng.random() < self.blip_rate:
            result.blips += 1
            self.blip_left[key] = self.rng.choice((1, 2)) - 1
            self.cool[key] = self.blip_left[key] == 0
            return True, self.rng.choice((0.002, self.timeout))  # random failure or latency spike
        self.cool[key] = False
        return False, 0.01

    def run(self) -> Result:
        result = Result()
        events: list[tuple[float, str, str]] = []
        for v in VOTERS:
            self._record_view(v.id, 0.0)
            for s in SITES:
                heapq.heappush(events, (self.rng.uniform(0, self.interval), v.id, s))
        pending: list[tuple[float, str, str, bool]] = []  # completions: (time, voter, site, ok)
        next_tick = 0.0
        while next_tick < self.end:
            # run every probe that starts before the next tick
            while events and events[0][0] < next_tick + self.tick:
                t, voter, site = heapq.heappop(events)
                failed, latency = self._probe_fails((voter, site), t, result)
                heapq.heappush(pending, (t + latency, voter, site, not failed))
                heapq.heappush(events, (t + self.interval, voter, site))
                result.probes += 1
            while pending and pending[0][0] < next_tick + self.tick:
                t, voter, site, ok = heapq.heappop(pending)
                if self.machines[(voter, site)].observe(ok, t) is not None:
                    self._record_view(voter, t)
            now = next_tick + self.tick
            if any(m.state is not Health.UP for m in self.machines.values()):
                self._decide(now, result)
                next_tick = now
            else:  # all quiet: nothing can be voted down before the next probe completes
                upcoming = min(events[0][0], pending[0][0] if pending else float("inf"))
                next_tick = max(now, (upcoming // self.tick) * self.tick)
        return result

    def _decide(self, now: float, result: Result) -> None:
        state = ServiceState("gcp", epoch=1)
        for voter in ENGINES:
            own = self._view(voter.id)
            votes = tally(VOTERS, voter.id, own, self._received(voter.id, now, result), now)
            decision = decide_cluster(state, "api", "gcp", votes, voter.id, ENGINES, now, self.policy,
                                      rpo_applies=True)
            result.decisions_evaluated += 1
            if not decision.acting:
                continue
            # an outage's failures keep arriving for a timeout after it ends, and a machine it took
            # down needs successes to come back: decisions until then are about that outage
            late = self.timeout + self.policy.failure_threshold * self.interval
            index = next((i for i, o in enumerate(self.outages)
                          if o.site == "gcp" and o.start <= now
                          and (now <= o.end + late or i not in result.recovered)), None)
            if index is None:
                result.false_failovers.append(now)
            else:
                result.detections.setdefault(index, now - self.outages[index].start)
        for index, outage in enumerate(self.outages):
            if outage.start > now:
                break
            states = [self.machines[(v.id, outage.site)].state for v in VOTERS]
            if now <= outage.end and index not in result.majority_down and states.count(Health.DOWN) >= 2:
                result.majority_down[index] = now - outage.start
            if now > outage.end and index not in result.recovered and states.count(Health.DOWN) < 2:
                result.recovered[index] = now


def random_outages(rng: random.Random, days: float, count: int) -> list[Outage]:
    """``count`` gcp outages from 5 s to 10 min, RST or black hole, at least an hour apart."""
    out = []
    slot = days * 86400 / count
    for i in range(count):
        start = i * slot + rng.uniform(600, slot - 1800)
        out.append(Outage("gcp", start, start + rng.uniform(5, 600), rng.choice(("rst", "blackhole"))))
    return out
