"""When the promotion may end the standby's apply worker at once instead of waiting for it to notice.

``ALTER SUBSCRIPTION ... DISABLE`` does not wake the apply worker: PostgreSQL 15's worker notices the change
only when it next wakes up (data or a keepalive from the publisher, or its one-second nap), so the
promotion's wait for the worker to exit is often 100-300 ms of a switchover's write gap. Ending the worker
(``pg_terminate_backend``) aborts whatever remote transaction it was applying, so that is only safe when
nothing a client saw acknowledged can still be in flight: the switchover's drain proved that the standby
applied a marker written on the source *after* the fence, and no fence ran after that proof (a resumed
operation fences again: the drain's proof no longer covers the time since).

Pure: the operation's step records in, a decision out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ApplyStop:
    """``at_once``: end the apply worker right after DISABLE; ``why``: the reason, for the step's record."""

    at_once: bool
    why: str


def _done(record: Mapping[str, Any] | None) -> bool:
    return record is not None and str(record.get("state")) == "done" and record.get("finished_at") is not None


def apply_stop(steps: Mapping[str, Mapping[str, Any]]) -> ApplyStop:
    """Decide from an operation's step records (``fence``, ``drain``) how the promotion stops the apply worker."""
    fence, drain = steps.get("fence"), steps.get("drain")
    if not _done(fence):
        return ApplyStop(False, "the source was not fenced by this operation: wait for the apply worker")
    if not _done(drain):
        return ApplyStop(False, "no drain proved the standby caught up: wait for the apply worker")
    assert fence is not None and drain is not None
    if float(drain["started_at"]) < float(fence["finished_at"]):
        return ApplyStop(False, "the source was fenced again after the drain: wait for the apply worker")
    data = drain.get("data") or {}
    if data.get("ok") is False:
        return ApplyStop(False, "the drain did not prove the standby caught up: wait for the apply worker")
    return ApplyStop(True, "the drain proved every acknowledged write applied after the fence: "
                           "apply worker ended at once")
