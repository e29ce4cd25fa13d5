"""Weighted moves, planned purely: traffic goes to a site in steps (e.g. 10 -> 50 -> 100 %), holding and
checking health between steps, and rolls back to the source at the first failure.

Two kinds, one table of phases::

    failback:  START -> HOLD(step 0) -> HOLD(step 1) -> ... -> DONE       (target at 100 %)
                           |  an unhealthy check, at any step  -> ROLLED_BACK (source at 100 %)
    canary:    START -> HOLD(step 0 = e.g. 1 %) -> ... -> FINISHED        (source back at 100 %, the
                           |  an unhealthy check                -> ROLLED_BACK    errors reported)

:func:`decide` takes the plan, the state, ``now`` and the latest health check of the target (True,
False, or None when none came in since the last step) and returns the next :class:`Decision`: the
weights to write (or None), the new state, and one human sentence. It does no I/O and reads no clock;
:mod:`engine.runtime.weighted_shift` carries the decisions out against a provider.
A step is left only after ``hold_s`` has passed since it was written AND at least ``checks_needed``
healthy checks came in during the hold; no check at all is not health.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Phase(StrEnum):
    START = "start"
    HOLD = "hold"
    DONE = "done"
    FINISHED = "finished"
    ROLLED_BACK = "rolled_back"


TERMINAL = frozenset({Phase.DONE, Phase.FINISHED, Phase.ROLLED_BACK})


@dataclass(frozen=True)
class WeightedPlan:
    """Move ``target``'s share of traffic through ``steps`` (percent), from ``source``."""

    source: str
    target: str
    steps: tuple[int, ...] = (10, 50, 100)
    hold_s: float = 300.0
    checks_needed: int = 3
    kind: str = "failback"  # or "canary": a drill that ends back at the source

    def problems(self) -> list[str]:
        """What makes this plan unusable, one sentence each (empty: usable)."""
        found = []
        if self.source == self.target:
            found.append("source and target are the same site")
        if not self.steps:
            found.append("needs at least one step")
        if any(not 0 < s <= 100 for s in self.steps):
            found.append(f"every step must be a percentage in 1..100 ({list(self.steps)})")
        if list(self.steps) != sorted(set(self.steps)):
            found.append(f"steps must grow strictly ({list(self.steps)})")
        if self.kind == "failback" and self.steps and self.steps[-1] != 100:
            found.append(f"a failback ends at 100 % (last step {self.steps[-1]})")
        if self.kind not in ("failback", "canary"):
            found.append(f"kind must be failback or canary, not {self.kind!r}")
        if self.hold_s < 0 or self.checks_needed < 1:
            found.append("hold_s must be >= 0 and checks_needed >= 1")
        return found

    def weights(self, percent: int) -> dict[str, int]:
        """The weights that give ``target`` ``percent`` % of the traffic."""
        return {self.target: percent, self.source: 100 - percent}


@dataclass(frozen=True)
class ShiftState:
    """Where a weighted move is: its phase, the step held, since when, healthy checks and failures seen."""

    phase: Phase = Phase.START
    step: int = -1
    since: float = 0.0
    healthy: int = 0
    failures: int = 0


@dataclass(frozen=True)
class Decision:
    """What to do next: weights to write (None: nothing), the state after, and one sentence."""

    weights: dict[str, int] | None
    state: ShiftState
    message: str

    @property
    def finished(self) -> bool:
        return self.state.phase in TERMINAL


def decide(plan: WeightedPlan, state: ShiftState, now: float, healthy: bool | None) -> Decision:
    """The next step of ``plan`` from ``state`` at ``now``, given the latest health check of the target."""
    problems = plan.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if state.phase in TERMINAL:
        return Decision(None, state, f"already {state.phase}")
    if state.phase is Phase.START:
        first = plan.steps[0]
        return Decision(plan.weights(first), ShiftState(Phase.HOLD, 0, now, 0, 0),
                        f"{plan.kind}: {first} % of traffic to {plan.target}, holding {plan.hold_s:g}s")
    percent = plan.steps[state.step]
    if healthy is False:
        return Decision(plan.weights(0), replace(state, phase=Phase.ROLLED_BACK, failures=state.failures + 1),
                        f"{plan.target} unhealthy at {percent} %: rolled back, 100 % to {plan.source}")
    counted = replace(state, healthy=state.healthy + (1 if healthy else 0))
    waited = now - state.since
    if waited < plan.hold_s or counted.healthy < plan.checks_needed:
        left = max(0.0, plan.hold_s - waited)
        return Decision(None, counted, f"holding {percent} % to {plan.target}: {left:g}s and "
                                       f"{max(0, plan.checks_needed - counted.healthy)} healthy check(s) to go")
    if state.step + 1 < len(plan.steps):
        nxt = plan.steps[state.step + 1]
        return Decision(plan.weights(nxt), ShiftState(Phase.HOLD, state.step + 1, now, 0, state.failures),
                        f"{plan.target} healthy at {percent} % for {waited:g}s: {nxt} % now")
    if plan.kind == "canary":
        return Decision(plan.weights(0), replace(counted, phase=Phase.FINISHED),
                        f"canary: {plan.target} took {percent} % for {waited:g}s without an error; "
                        f"100 % back to {plan.source}")
    return Decision(None, replace(counted, phase=Phase.DONE),
                    f"failback done: 100 % to {plan.target} after {len(plan.steps)} step(s)")
