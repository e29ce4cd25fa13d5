"""Replication slot retention against its alert size (pure): which slots crossed it, which came back.

An alert fires once when a slot's retained WAL goes over ``limit`` and clears once when it is back
at or under it; a slot that disappears (dropped) clears too. Unknown sizes (None) change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Crossings:
    """The slots over the limit now, and which of them crossed or cleared since the last reading."""

    over: frozenset[str]
    raised: tuple[str, ...]
    cleared: tuple[str, ...]


def crossings(previous: frozenset[str], retained: Mapping[str, int | None], limit: int) -> Crossings:
    """Compare a reading (slot -> retained bytes) with the slots that were over ``limit`` before."""
    over = {name for name, kept in retained.items() if kept is not None and kept > limit}
    over |= {name for name in previous if name in retained and retained[name] is None}  # unknown: keep
    raised = tuple(sorted(over - previous))
    cleared = tuple(sorted(previous - over))
    return Crossings(frozenset(over), raised, cleared)
