"""After a failover: how much was lost? The new primary's latest commit vs the last known primary commit.

The daemon keeps the **last known primary commit point** in its journal continuously (each heartbeat
the engine writes on the primary returns one, and the lag probe reports one in
``details["primary_commit"]``). After the primary dies that point is all we know about it. The
new primary (the old standby) holds the replicated heartbeat rows: the freshest ``beat_at`` it
applied is the last moment of the old primary it is known to contain. The difference is the
**data-loss window**: writes committed on the old primary in that window may be missing.

Both timestamps come from the clock of the **same writer** (the engine instance named in the last
known point's ``site``), read for the same old primary (its ``primary``): rows of other writers
(other engine instances, whose clocks may be offset) and rows written on other primaries are never
mixed in. Host clock skew does not enter.

The window is a **lower bound**: the old primary may have committed writes after its last
heartbeat, up to one heartbeat interval before it died (or more, if the heartbeat writer was
failing), and those are not counted. When the journal holds the last beat's WAL position (``lsn``)
and the new primary can show its subscription's ``pg_replication_origin_status.remote_lsn``, the
result also says whether the WAL up to that point was applied (``lsn_gap_bytes``: 0 when everything
up to the last known commit arrived, else how many bytes of the old primary's WAL did not).

:func:`assess` is pure; :func:`check_consistency` reads the new primary and calls it. Both are the
old, **lower-bound** window, kept until the runbook calls :func:`check_loss` instead.

**The verdict (issues 17 and 24).** :func:`check_loss` gathers what the new primary shows (its freshest
replicated heartbeat of this engine on the old primary, the WAL it applied) into a
:class:`~engine.core.loss.LossEvidence`, with what the runtime knows (the last commit point seen, when
the old primary ended, the self-fencing lease, this engine's synchronous evidence), and returns the
pure :func:`~engine.core.loss.judge` verdict: ``zero_by_proof`` (status ``ok``), ``bounded``
("possible loss <= X s", an alert) or ``unknown`` since T (an alert); its
:meth:`~engine.core.loss.LossVerdict.metric_value` is the ``failover_engine_possible_data_loss_seconds``
gauge. :func:`primary_end` and :func:`silent_since` turn the runtime's facts into the end of the old primary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from engine.config.base import format_duration
from engine.config.database import DatabaseConfig
from engine.core.loss import EndHow, LossEvidence, LossVerdict, PrimaryEnd, Seen, SyncEvidence, judge
from probes.postgres import table_ident
from probes.postgres_conn import PgError, connect, describe_pg_error, fetch

Status = Literal["ok", "rpo_breached", "unknown"]


@dataclass(frozen=True, slots=True)
class CommitPoint:
    """A moment of the primary: the heartbeat time (engine clock, epoch seconds) and the WAL LSN."""

    heartbeat_at: float
    lsn: str | None = None
    site: str | None = None      # the engine site that wrote the beat (whose clock heartbeat_at is)
    primary: str | None = None   # the database site the beat was written on

    def to_dict(self) -> dict[str, Any]:
        return {"heartbeat_at": self.heartbeat_at, "lsn": self.lsn, "site": self.site, "primary": self.primary}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CommitPoint:
        """Inverse of :meth:`to_dict`; also accepts the lag probe's ``primary_commit`` detail."""
        return cls(float(data["heartbeat_at"]), data.get("lsn"), data.get("site"), data.get("primary"))


@dataclass(frozen=True, slots=True)
class ConsistencyResult:
    """The verdict: ``ok``, ``rpo_breached`` or ``unknown``, with the loss window and a sentence."""

    status: Status
    sentence: str
    loss_window_s: float | None
    rpo_s: float
    last_known: CommitPoint | None
    new_primary_latest: CommitPoint | None
    lsn_gap_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def alert(self) -> bool:
        """True when an operator must be paged (RPO breached or the loss cannot be bounded)."""
        return self.status != "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "sentence": self.sentence, "loss_window_s": self.loss_window_s,
                "rpo_s": self.rpo_s,
                "last_known": self.last_known.to_dict() if self.last_known else None,
                "new_primary_latest": self.new_primary_latest.to_dict() if self.new_primary_latest else None,
                "lsn_gap_bytes": self.lsn_gap_bytes}


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def _wal_note(gap: int | None) -> str:
    if gap is None:
        return ""
    if gap <= 0:
        return "; its WAL was applied up to the last known commit LSN"
    return f"; {gap} B of its WAL before the last known commit LSN were not applied"


def assess(last_known: CommitPoint | None, new_latest: CommitPoint | None, rpo: float, *,
           interval: float | None = None, lsn_gap_bytes: int | None = None) -> ConsistencyResult:
    """Pure: the data-loss window (a lower bound, see the module docstring) and its verdict against ``rpo``.

    ``interval``: the heartbeat interval, named in the sentence as what the window cannot see.
    ``lsn_gap_bytes``: bytes of the old primary's WAL up to the last known LSN not applied (None: unknown).
    """
    if last_known is None:
        return ConsistencyResult("unknown", "data loss unknown: no last known primary commit point in the journal",
                                 None, rpo, last_known, new_latest, lsn_gap_bytes)
    if new_latest is None:
        return ConsistencyResult(
            "unknown", "data loss unknown: the new primary holds no replicated heartbeat", None, rpo,
            last_known, new_latest, lsn_gap_bytes)
    window = max(0.0, last_known.heartbeat_at - new_latest.heartbeat_at)
    if not math.isfinite(window):
        return ConsistencyResult("unknown", "data loss unknown: invalid heartbeat times", None, rpo,
                                 last_known, new_latest, lsn_gap_bytes)
    after = ("writes after the last heartbeat" + (f" (up to {format_duration(interval)})" if interval else "")
             + " are not counted")
    wal = _wal_note(lsn_gap_bytes)
    if window > rpo:
        sentence = (f"RPO breached: at least about {_seconds(window)} of writes may be lost "
                    f"(RPO {format_duration(rpo)}; {after}){wal}")
        return ConsistencyResult("rpo_breached", sentence, window, rpo, last_known, new_latest, lsn_gap_bytes)
    if window == 0:
        sentence = f"ok: the new primary has every write up to the last known primary commit ({after}){wal}"
    else:
        sentence = (f"ok: about {_seconds(window)} of writes may be lost, within RPO {format_duration(rpo)} "
                    f"({after}){wal}")
    return ConsistencyResult("ok", sentence, window, rpo, last_known, new_latest, lsn_gap_bytes)


async def latest_replicated(config: DatabaseConfig, site: str, last_known: CommitPoint | None = None,
                            ) -> CommitPoint | None:
    """The freshest heartbeat of the old primary that ``site`` holds (None when it holds none).

    Only rows written on the old primary (``last_known.primary``, else the other site) by the
    writer of ``last_known`` (its ``site``, when known) count: beats of other writers carry other
    clocks and must not be compared with the journal's point.
    """

    old_primary = (last_known.primary if last_known is not None and last_known.primary else None) \
        or config.other_site(site)
    writer = last_known.site if last_known is not None else None
    async with await connect(config.sites[site], statement_timeout=config.lag_probe.statement_timeout,
                             application_name="failover-engine consistency") as conn:
        rows = await fetch(conn, sql.SQL("SELECT beat_at, lsn::text, site, primary_site FROM {} "
                                         "WHERE primary_site = %s AND (%s::text IS NULL OR site = %s) "
                                         "ORDER BY beat_at DESC LIMIT 1").format(table_ident(config.heartbeat.table)),
                           (old_primary, writer, writer), deadline=config.lag_probe.timeout)
    if not rows:
        return None
    return CommitPoint(float(rows[0][0]), rows[0][1], rows[0][2], rows[0][3])


async def lsn_gap(config: DatabaseConfig, site: str, lsn: str) -> int | None:
    """Bytes of the old primary's WAL up to ``lsn`` that the subscription on ``site`` did not apply.

    From ``pg_replication_origin_status.remote_lsn`` of the configured subscription (the end of the
    last remote commit applied). None when it cannot be read (no privilege, subscription gone).
    """

    try:
        async with await connect(config.sites[site], statement_timeout=config.lag_probe.statement_timeout,
                                 application_name="failover-engine consistency") as conn:
            rows = await fetch(conn, "SELECT greatest(0, pg_wal_lsn_diff(%s::pg_lsn, os.remote_lsn))::bigint "
                                     "FROM pg_replication_origin_status os JOIN pg_subscription s "
                                     "ON os.external_id = 'pg_' || s.oid "
                                     "JOIN pg_database d ON d.oid = s.subdbid AND d.datname = current_database() "
                                     "WHERE s.subname = %s AND os.remote_lsn IS NOT NULL",
                               (lsn, config.subscription), deadline=config.lag_probe.timeout)
    except (PgError, psycopg.Error, TimeoutError):
        return None
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


async def check_consistency(config: DatabaseConfig, new_primary: str, last_known: CommitPoint | None,
                            rpo: float) -> ConsistencyResult:
    """Read the new primary's latest replicated heartbeat and judge the loss window; never raises
    for an unreachable server or a missing table: the result says "unknown" and why."""

    old_primary = config.other_site(new_primary)
    if last_known is not None and last_known.primary and last_known.primary != old_primary:
        return ConsistencyResult("unknown", f"data loss unknown: the last known commit point was taken on "
                                 f"{last_known.primary}, not on the old primary {old_primary}", None, rpo,
                                 last_known, None)
    try:
        latest = await latest_replicated(config, new_primary, last_known)
    except PgError as exc:
        return ConsistencyResult("unknown", f"data loss unknown: {new_primary} unreachable: {exc}", None, rpo,
                                 last_known, None)
    except (psycopg.Error, TimeoutError) as exc:
        return ConsistencyResult("unknown", f"data loss unknown: {describe_pg_error(exc)}", None, rpo,
                                 last_known, None)
    gap = await lsn_gap(config, new_primary, last_known.lsn) if last_known is not None and last_known.lsn else None
    return assess(last_known, latest, rpo, interval=config.heartbeat.interval, lsn_gap_bytes=gap)


# -- the verdict (issues 17 and 24) ---------------------------------------------------------------
def silent_since(last_heard_at: float, cadence: float, timeout: float) -> float:
    """When an engine last heard at ``last_heard_at`` went silent at the latest: a live engine is heard
    again within one ``cadence`` (its verdict push or our probe interval) plus one request ``timeout``."""
    return last_heard_at + cadence + timeout


def primary_end(*, fenced_at: float | None = None, reported_down_at: float | None = None,
                engine_silent_at: float | None = None) -> PrimaryEnd | None:
    """The strongest known end of the old primary: fenced (proof), its engine reported the database down,
    or its engine went silent (a whole-site loss assumed); None when nothing is known."""
    choices: tuple[tuple[float | None, EndHow], ...] = (
        (fenced_at, "fenced"), (reported_down_at, "reported_down"), (engine_silent_at, "engine_silent"))
    for at, how in choices:
        if at is not None and math.isfinite(at):
            return PrimaryEnd(at, how)
    return None


async def loss_evidence(config: DatabaseConfig, new_primary: str, last_known: CommitPoint | None, *,
                        end: PrimaryEnd | None, sync: SyncEvidence, lease_end_at: float | None = None,
                        ) -> tuple[LossEvidence, str | None]:
    """Read the new primary for the verdict's inputs; never raises (a read failure is the second value)."""
    old = config.other_site(new_primary)
    note = None
    standby_has: Seen | None = None
    gap: int | None = None
    if last_known is not None and last_known.primary not in (None, old):
        note = f"the last known commit point was taken on {last_known.primary}, not on the old primary {old}"
        last_known = None
    try:  # only this engine's own beats: their times are on this engine's clock, like the rest
        latest = await latest_replicated(config, new_primary, last_known) if last_known is not None else None
        standby_has = None if latest is None else Seen(latest.heartbeat_at, latest.lsn)
    except PgError as exc:
        note = f"{new_primary} unreachable: {exc}"
    except (psycopg.Error, TimeoutError) as exc:
        note = describe_pg_error(exc) if isinstance(exc, psycopg.Error) else f"{new_primary} timed out"
    if note is None and last_known is not None and last_known.lsn:
        gap = await lsn_gap(config, new_primary, last_known.lsn)
    seen = None if last_known is None else Seen(last_known.heartbeat_at, last_known.lsn)
    return LossEvidence(standby_has, seen, end, lease_end_at, sync, gap, standby=new_primary, primary=old), note


async def check_loss(config: DatabaseConfig, new_primary: str, last_known: CommitPoint | None, *,
                     end: PrimaryEnd | None, sync: SyncEvidence, lease_end_at: float | None = None,
                     ) -> LossVerdict:
    """The data-loss verdict after a failover to ``new_primary`` (see the module docstring); never raises."""
    evidence, note = await loss_evidence(config, new_primary, last_known, end=end, sync=sync,
                                         lease_end_at=lease_end_at)
    verdict = judge(evidence)
    if note is None:
        return verdict
    return LossVerdict(verdict.kind, f"{verdict.sentence} (could not read: {note})", verdict.bound_s,
                       verdict.unknown_since, verdict.covered_until, verdict.bound_if_outlived_s,
                       verdict.known, (*verdict.assumed,))
