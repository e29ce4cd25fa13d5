"""The data-loss verdict after the primary is lost: an upper bound the engine can justify, or zero by proof.

Pure: plain values in, a :class:`LossVerdict` out; no I/O, time passed in. The runtime gathers the
values (:mod:`actions.consistency`), this module judges them.

Theory. A write is *acknowledged* when the client's COMMIT returned. Logical replication applies
transactions in commit order, so a standby that applied a row committed at time ``t`` has every
write committed before ``t``. Three facts can push that point forward:

- the freshest heartbeat of the old primary the standby applied (``standby_has``: written by this
  engine, so its time is this engine's clock);
- the standby's applied WAL position reaching the LSN of the last heartbeat this engine saw the
  primary write (``lsn_gap_bytes == 0``): then it has everything up to ``primary_seen``;
- synchronous commit: while the primary names the standby in ``synchronous_standby_names``, a
  COMMIT returns only once the standby flushed it, so every acknowledged write up to the moment the
  engine degraded to asynchronous (or, unseen, could have) is on the standby.

After that point, the old primary may have acknowledged writes until it **ended**: it was fenced
(proof), its own engine reported its database down, or its engine went silent (then it is *assumed*
that the database stopped with its engine: a whole-site loss; a self-fencing lease, when configured,
bounds the case where it outlived its engine). The bound is ``end - covered``. Nothing else is
claimed: without an end, the verdict is "unknown since" the covered point.

Verdicts: ``zero_by_proof`` (``ok``), ``bounded`` (possible loss <= X s, an alert), ``unknown``
(an alert). Every verdict carries what is *known* and what is *assumed*, in one sentence.

:func:`rpo_gate` and :func:`write_stall` tell the RPO gate and the RTO estimate about the mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

SyncMode = Literal["off", "on", "strict"]
EndHow = Literal["fenced", "reported_down", "engine_silent"]
Kind = Literal["zero_by_proof", "bounded", "unknown"]

BASE_ASSUMPTIONS = ("only this engine changes synchronous_standby_names",
                    "clients neither lower synchronous_commit nor cancel a commit's wait for the standby")


def clock_text(at: float) -> str:
    """A moment for a sentence: UTC time of day with milliseconds (``12:00:01.250Z``)."""
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"


def _s(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


@dataclass(frozen=True, slots=True)
class Seen:
    """A moment of the old primary: a heartbeat time on this engine's clock, with its WAL position."""

    at: float
    lsn: str | None = None


@dataclass(frozen=True, slots=True)
class PrimaryEnd:
    """When the old primary stopped acknowledging writes, and how that is known."""

    at: float
    how: EndHow


@dataclass(frozen=True, slots=True)
class SyncEvidence:
    """What is known of synchronous commit on the old primary.

    ``confirmed_at``: the last observation showing the standby named in ``synchronous_standby_names``,
    ``sync_state = 'sync'`` and no commit waiting past the limit. ``degraded_since``: the engine
    degraded to asynchronous then (journal or a peer's verdict), None when not known to have.
    ``degrade_after``/``check_interval``: the ``on`` mode's degrade delay and the watch's tick: an unseen
    degrade cannot take effect before ``confirmed_at + degrade_after - check_interval``.
    """

    mode: SyncMode = "off"
    confirmed_at: float | None = None
    degraded_since: float | None = None
    degrade_after: float = 0.0
    check_interval: float = 0.0

    def covered_until(self) -> float | None:
        """Every write acknowledged before this moment is on the standby (``inf``: any write); None: no proof."""
        if self.mode == "off" or self.confirmed_at is None:
            return None
        if self.degraded_since is not None and self.degraded_since >= self.confirmed_at:
            return self.degraded_since
        if self.mode == "strict":
            return math.inf
        return self.confirmed_at + max(0.0, self.degrade_after - self.check_interval)


@dataclass(frozen=True, slots=True)
class LossEvidence:
    """Everything the verdict uses, in plain values (times on this engine's clock)."""

    standby_has: Seen | None = None
    primary_seen: Seen | None = None
    end: PrimaryEnd | None = None
    lease_end_at: float | None = None
    sync: SyncEvidence = SyncEvidence()
    lsn_gap_bytes: int | None = None
    standby: str = "the standby"
    primary: str = "the old primary"


@dataclass(frozen=True, slots=True)
class LossVerdict:
    """The verdict: its kind, the bound in seconds (0, X, or None), since when it is unknown, and why."""

    kind: Kind
    sentence: str
    bound_s: float | None
    unknown_since: float | None = None
    covered_until: float | None = None
    bound_if_outlived_s: float | None = None
    known: tuple[str, ...] = ()
    assumed: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.kind == "zero_by_proof"

    @property
    def alert(self) -> bool:
        return not self.ok

    @property
    def status(self) -> str:
        """The status line: ``ok`` only when zero by proof."""
        if self.kind == "zero_by_proof":
            return "ok"
        if self.kind == "bounded":
            return f"possible loss <= {_s(self.bound_s or 0.0)}"
        return "unknown" if self.unknown_since is None else f"unknown since {clock_text(self.unknown_since)}"

    def metric_value(self) -> float:
        """The possible-loss gauge: 0 by proof, the bound, or +Inf when unknown."""
        return math.inf if self.bound_s is None else self.bound_s

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status, "sentence": self.sentence, "bound_s": self.bound_s,
                "unknown_since": self.unknown_since,
                "covered_until": None if self.covered_until in (None, math.inf) else self.covered_until,
                "bound_if_outlived_s": self.bound_if_outlived_s, "known": list(self.known),
                "assumed": list(self.assumed)}


_END_KNOWN = {"fenced": "{p} was fenced at {t}",
              "reported_down": "{p}'s own engine reported its database down at {t}",
              "engine_silent": "{p}'s engine went silent at {t}"}
_END_ASSUMED = {"fenced": None,
                "reported_down": "clients could not reach {p} after its own engine could not",
                "engine_silent": "{p}'s database stopped with its engine (a whole-site loss)"}


def _covered(ev: LossEvidence, known: list[str]) -> float | None:
    """The moment up to which every acknowledged write is on the standby (None: nothing known)."""
    points: list[float] = []
    if ev.standby_has is not None:
        points.append(ev.standby_has.at)
        known.append(f"{ev.standby} applied {ev.primary}'s heartbeat of "
                     f"{clock_text(ev.standby_has.at)}")
    if ev.primary_seen is not None and ev.lsn_gap_bytes is not None:
        if ev.lsn_gap_bytes <= 0:
            points.append(ev.primary_seen.at)
            known.append(f"{ev.standby} applied {ev.primary}'s WAL up to its last seen commit "
                         f"({clock_text(ev.primary_seen.at)})")
        else:
            known.append(f"{ev.lsn_gap_bytes} B of {ev.primary}'s WAL before its last seen commit "
                         f"({clock_text(ev.primary_seen.at)}) were not applied")
    sync = ev.sync.covered_until()
    if sync is not None:
        points.append(sync)
        assert ev.sync.confirmed_at is not None
        confirmed = f"synchronous commit to {ev.standby} was confirmed at {clock_text(ev.sync.confirmed_at)}"
        if ev.sync.degraded_since is not None and ev.sync.degraded_since >= ev.sync.confirmed_at:
            known.append(f"{confirmed} and degraded to asynchronous at {clock_text(ev.sync.degraded_since)}")
        elif ev.sync.mode == "strict":
            known.append(f"{confirmed} (strict: never degraded)")
        else:
            known.append(f"{confirmed}; a degrade needs {_s(ev.sync.degrade_after)} of trouble")
    elif ev.sync.mode != "off":
        known.append(f"synchronous commit ({ev.sync.mode}) was never confirmed")
    return max(points) if points else None


def _zero(why: str, covered: float | None, known: list[str], assumed: list[str]) -> LossVerdict:
    sentence = f"no acknowledged write lost, by proof ({why}); known: {'; '.join(known)}"
    if assumed:
        sentence += f"; assumed: {'; '.join(assumed)}"
    return LossVerdict("zero_by_proof", sentence, 0.0, covered_until=covered, known=tuple(known),
                       assumed=tuple(assumed))


def judge(ev: LossEvidence) -> LossVerdict:
    """The data-loss verdict from the evidence (see the module docstring)."""
    known: list[str] = []
    assumed: list[str] = []
    covered = _covered(ev, known)
    sync_used = ev.sync.covered_until() is not None
    if sync_used:
        assumed.extend(BASE_ASSUMPTIONS)
    if ev.primary_seen is not None:
        known.append(f"{ev.primary} was last seen writing at {clock_text(ev.primary_seen.at)}")
    end = ev.end
    if end is not None:
        known.append(_END_KNOWN[end.how].format(p=ev.primary, t=clock_text(end.at)))
        note = _END_ASSUMED[end.how]
        if note:
            assumed.append(note.format(p=ev.primary))
    sync_until = ev.sync.covered_until()
    if covered is not None and end is not None and end.at <= covered:
        # the standby has every write acknowledged before the end: proof when the end is (a fence), or when
        # synchronous commit covered it and no degrade could have happened before the end (for a silent
        # engine, the lease bounds when a partitioned one could still act)
        acted_by = ev.lease_end_at if end.how == "engine_silent" and ev.lease_end_at is not None else end.at
        if end.how == "fenced" or (sync_until is not None and acted_by <= sync_until):
            why = ("the primary ended before synchronous commit could have degraded" if sync_until is not None
                   and end.how != "fenced" else f"{ev.standby} has every write acknowledged before the fence")
            return _zero(why, covered, known, assumed)
    if sync_until == math.inf:
        return _zero("strict synchronous commit: no write was acknowledged without the standby", covered, known,
                     assumed)
    if covered is None:
        sentence = (f"data loss unknown: nothing shows what {ev.standby} holds of {ev.primary}"
                    + (f"; known: {'; '.join(known)}" if known else ""))
        return LossVerdict("unknown", sentence, None, None, None, known=tuple(known), assumed=tuple(assumed))
    if end is None:
        sentence = (f"data loss unknown since {clock_text(covered)}: {ev.standby} has every acknowledged write "
                    f"up to then, and nothing shows when {ev.primary} stopped accepting writes "
                    f"(not fenced, no report of its engine); known: {'; '.join(known)}"
                    + (f"; assumed: {'; '.join(assumed)}" if assumed else ""))
        return LossVerdict("unknown", sentence, None, covered, covered, known=tuple(known), assumed=tuple(assumed))
    bound = max(0.0, end.at - covered)
    unobserved = max(0.0, end.at - ev.primary_seen.at) if ev.primary_seen is not None else None
    outlived = None
    if end.how != "fenced" and ev.lease_end_at is not None:
        outlived = max(bound, ev.lease_end_at - covered)
        assumed.append(f"if the database outlived its engine, its self-fencing lease ended by "
                       f"{clock_text(ev.lease_end_at)}: possible loss <= {_s(outlived)}")
    sentence = (f"possible loss <= {_s(bound)}: {ev.standby} has every acknowledged write up to "
                f"{clock_text(covered)}, {ev.primary} may have acknowledged writes until {clock_text(end.at)}"
                + (f" ({_s(unobserved)} of it unobserved)" if unobserved is not None else "")
                + f"; known: {'; '.join(known)}" + (f"; assumed: {'; '.join(assumed)}" if assumed else ""))
    return LossVerdict("bounded", sentence, round(bound, 3), None, covered,
                       None if outlived is None else round(outlived, 3), tuple(known), tuple(assumed))


def sync_confirmed_now(sync: SyncEvidence, now: float) -> bool:
    """True when an acknowledged write of the primary cannot, by proof, be missing on the standby now."""
    covered = sync.covered_until()
    return covered is not None and now <= covered


def rpo_gate(lag_s: float | None, rpo_s: float, sync: SyncEvidence, now: float) -> tuple[bool, str]:
    """The RPO gate knowing the mode: synchronous commit confirmed passes whatever the lag says."""
    if sync_confirmed_now(sync, now):
        assert sync.confirmed_at is not None
        return True, (f"synchronous commit ({sync.mode}) confirmed at {clock_text(sync.confirmed_at)}: "
                      "no acknowledged write can be missing on the standby")
    if lag_s is None:
        return False, "replication lag is unknown"
    ok = lag_s <= rpo_s
    return ok, f"standby lag {lag_s:.1f}s {'within' if ok else 'exceeds'} RPO {rpo_s:g}s"


def write_stall(mode: SyncMode, degrade_after: float) -> tuple[float | None, str]:
    """How long writes may wait on a lost standby (None: without limit), for the RTO estimate and status."""
    if mode == "strict":
        return None, ("strict: with the standby lost (also after a failover, until re-protect) commits wait "
                      "without limit")
    if mode == "on":
        return degrade_after, (f"on: with the standby lost, commits wait up to {_s(degrade_after)} before "
                               "the engine degrades to asynchronous")
    return 0.0, "off: commits never wait for the standby"
