"""When a scheduled drill is due, waiting or overdue (pure: times in, a verdict out).

A cron expression (UTC) names the fire times. At ``now`` the latest fire time ``f <= now`` decides:

- a drill started at or after ``f``: *done*; the next fire time is when to look again;
- otherwise, while ``now < f + window``: *due* (start it, unless something refuses);
- after the window: *overdue* until a drill runs.

Fire times before ``not_before`` (the engine's first start: it cannot have drilled before it
existed) count as done. Tests walk a year of minutes through this on a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from croniter import croniter


def previous_fire(expr: str, now: float) -> float:
    """The latest fire time at or before ``now``."""
    base = datetime.fromtimestamp(now, UTC)
    prev = float(croniter(expr, base).get_prev(float))
    nxt = float(croniter(expr, datetime.fromtimestamp(prev, UTC)).get_next(float))
    return nxt if nxt <= now else prev


def next_fire(expr: str, now: float) -> float:
    """The first fire time strictly after ``now``."""
    return float(croniter(expr, datetime.fromtimestamp(now, UTC)).get_next(float))


@dataclass(frozen=True, slots=True)
class DrillTiming:
    state: Literal["done", "due", "overdue"]
    fire: float  # the fire time this verdict is about (done: the next one)
    deadline: float  # due: the end of the window; overdue: when the window closed; done: next fire + window


def drill_timing(expr: str, window: float, now: float, last_started: float | None,
                 not_before: float | None = None) -> DrillTiming:
    fire = previous_fire(expr, now)
    ran = last_started is not None and last_started >= fire
    if ran or (not_before is not None and fire < not_before):
        upcoming = next_fire(expr, now)
        return DrillTiming("done", upcoming, upcoming + window)
    if now < fire + window:
        return DrillTiming("due", fire, fire + window)
    return DrillTiming("overdue", fire, fire + window)
