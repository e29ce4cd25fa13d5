"""A discrete-event simulation of the echo lease (pure, no sleep): one holder, its voters, lossy links.

Every node has its own monotonic clock (a random offset from the simulation's time), sends a verdict every
tick (with jitter) to every other node over links that delay, drop and reorder, and keeps what it received
the way :mod:`engine.runtime.peering` does (newest stamp per sender, its arrival on the receiver's clock).
The holder judges its lease with :func:`engine.core.lease_echo.judge_holder_lease` after every arrival and
at its exact fence time; the runner (``v1``) asks :func:`engine.core.lease_echo.certify_silent` every
``poll`` seconds with the certifiers built as :meth:`engine.runtime.peering.Peering.certifiers` builds them.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from engine.core.lease_echo import Certifier, certifiers_needed, certify_silent, judge_holder_lease

HOLDER, RUNNER = "h", "v1"


@dataclass
class Node:
    id: str
    offset: float
    heard: dict[str, tuple[float, float]] = field(default_factory=dict)  # sender -> (its stamp, our arrival)
    echoes: dict[str, dict[str, tuple[float | None, float]]] = field(default_factory=dict)  # sender's echoes
    stamps: dict[str, float] = field(default_factory=dict)  # holder only: voter -> newest echo of our stamps

    def mono(self, t: float) -> float:
        return t + self.offset


@dataclass(frozen=True)
class Outcome:
    fence_at: float | None  # simulation time the holder started fencing
    release_at: float | None  # simulation time the runner may promote


def simulate(seed: int, voters: int, length: float, fence_timeout: float, margin: float, drift: float,
             cut_at: float, cut: frozenset[tuple[str, str]], drop: float, max_delay: float, tick: float = 1.0,
             end: float = 40.0, poll: float = 0.05) -> Outcome:
    """Run until ``end``; links in ``cut`` (sender, receiver) carry nothing from ``cut_at`` on."""
    rng = random.Random(seed)
    ids = [HOLDER] + [f"v{i}" for i in range(1, voters)]
    nodes = {i: Node(i, rng.uniform(-1000.0, 1000.0)) for i in ids}
    majority = voters // 2 + 1
    lead, wait = fence_timeout + margin, length + drift
    events: list[tuple[float, int, str, tuple[object, ...]]] = []
    counter = 0

    def push(t: float, kind: str, *data: object) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (t, counter, kind, data))

    for i in ids:
        push(rng.uniform(0.0, tick), "send", i)
    t_poll = poll
    push(t_poll, "poll")
    fence_at: float | None = None
    holder = nodes[HOLDER]

    def judge(t: float) -> float:
        return judge_holder_lease(list(holder.stamps.values()), majority, length, lead, holder.mono(t),
                                  floor=holder.mono(0.0)).fence_at - holder.offset

    pending_fence = judge(0.0)
    while events:
        t, _, kind, data = heapq.heappop(events)
        if t > end:
            break
        if fence_at is None and t >= pending_fence:
            fence_at = max(pending_fence, 0.0)  # the holder's timer fires on the dot (polls come every 50 ms)
        if kind == "send":
            sender = nodes[str(data[0])]
            now = sender.mono(t)
            echoes = {p: (h[0], now - h[1]) for p, h in sender.heard.items()}
            for other in ids:
                if other == sender.id or other in echoes:
                    continue
                echoes[other] = (None, now - sender.mono(0.0))
            for other in ids:
                if other == sender.id or (t >= cut_at and (sender.id, other) in cut) or rng.random() < drop:
                    continue
                push(t + rng.uniform(0.001, max_delay), "arrive", other, sender.id, now, echoes)
            push(t + tick * rng.uniform(0.9, 1.1), "send", sender.id)
        elif kind == "arrive":
            receiver, sender_id, stamp, echoes = nodes[str(data[0])], str(data[1]), float(data[2]), data[3]
            assert isinstance(echoes, dict)
            previous = receiver.heard.get(sender_id)
            if previous is not None and previous[0] >= stamp:
                continue  # reordered: the verifier rejects an older message
            receiver.heard[sender_id] = (stamp, receiver.mono(t))
            receiver.echoes[sender_id] = echoes
            if receiver.id == HOLDER and HOLDER in echoes and echoes[HOLDER][0] is not None:
                mine = float(echoes[HOLDER][0])  # type: ignore[arg-type]
                receiver.stamps[sender_id] = max(receiver.stamps.get(sender_id, mine), mine)
                if fence_at is None:
                    pending_fence = judge(t)
        elif kind == "poll":
            if release(nodes, voters, majority, length, lead, wait, t, tick):
                return Outcome(fence_at, t)
            push(t + poll, "poll")
    return Outcome(fence_at, None)


def release(nodes: dict[str, Node], voters: int, majority: int, length: float, lead: float, wait: float,
            t: float, tick: float) -> bool:
    runner = nodes[RUNNER]
    now = runner.mono(t)
    own = runner.heard.get(HOLDER)
    certs = [Certifier(RUNNER, own[1] if own is not None else runner.mono(0.0), now)]
    for vid in nodes:
        if vid in (HOLDER, RUNNER) or vid not in runner.heard:
            continue
        received = runner.heard[vid][1]
        if now - received > 2 * tick:
            continue
        echoes = runner.echoes[vid]
        about, mine = echoes.get(HOLDER), echoes.get(RUNNER)
        if about is None:
            continue
        certs.append(Certifier(vid, received - about[1], None if mine is None else mine[0]))
    return certify_silent(certs, certifiers_needed(voters, majority), length, lead, wait, now).certified
