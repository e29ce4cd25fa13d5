"""After a failover: how much was lost? The new primary's latest commit vs the last known primary commit.

The daemon keeps the **last known primary commit point** in its journal continuously (each heartbeat
the engine writes on the primary returns one, and the lag probe reports one in
``details["primary_commit"]``). After the primary dies that point is all we know about it. The
new primary (the old standby) holds the replicated heartbeat rows: the freshest ``beat_at`` it
applied is the last moment of the old primary it is known to contain. The difference is the
**data-loss window**: writes committed on the old primary in that window may be missing.

Both timestamps come from the engine clock that wrote the heartbeat (not from either database
host), so host clock skew does not enter. The window is exact to within one heartbeat interval.

:func:`assess` is pure; :func:`check_consistency` reads the new primary and calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from engine.config.base import format_duration
from engine.config.database import DatabaseConfig

Status = Literal["ok", "rpo_breached", "unknown"]


@dataclass(frozen=True, slots=True)
class CommitPoint:
    """A moment of the primary: the heartbeat time (engine clock, epoch seconds) and the WAL LSN."""

    heartbeat_at: float
    lsn: str | None = None
    site: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"heartbeat_at": self.heartbeat_at, "lsn": self.lsn, "site": self.site}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CommitPoint:
        """Inverse of :meth:`to_dict`; also accepts the lag probe's ``primary_commit`` detail."""
        return cls(float(data["heartbeat_at"]), data.get("lsn"), data.get("site"))


@dataclass(frozen=True, slots=True)
class ConsistencyResult:
    """The verdict: ``ok``, ``rpo_breached`` or ``unknown``, with the loss window and a sentence."""

    status: Status
    sentence: str
    loss_window_s: float | None
    rpo_s: float
    last_known: CommitPoint | None
    new_primary_latest: CommitPoint | None

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
                "new_primary_latest": self.new_primary_latest.to_dict() if self.new_primary_latest else None}


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def assess(last_known: CommitPoint | None, new_latest: CommitPoint | None, rpo: float) -> ConsistencyResult:
    """Pure: the data-loss window and its verdict against ``rpo`` (seconds)."""
    if last_known is None:
        return ConsistencyResult("unknown", "data loss unknown: no last known primary commit point in the journal",
                                 None, rpo, last_known, new_latest)
    if new_latest is None:
        return ConsistencyResult(
            "unknown", "data loss unknown: the new primary holds no replicated heartbeat", None, rpo,
            last_known, new_latest)
    window = max(0.0, last_known.heartbeat_at - new_latest.heartbeat_at)
    if not math.isfinite(window):
        return ConsistencyResult("unknown", "data loss unknown: invalid heartbeat times", None, rpo,
                                 last_known, new_latest)
    if window > rpo:
        sentence = (f"RPO breached: about {_seconds(window)} of writes may be lost "
                    f"(RPO {format_duration(rpo)})")
        return ConsistencyResult("rpo_breached", sentence, window, rpo, last_known, new_latest)
    if window == 0:
        sentence = "ok: the new primary has every write up to the last known primary commit"
    else:
        sentence = (f"ok: at most about {_seconds(window)} of writes may be lost, "
                    f"within RPO {format_duration(rpo)}")
    return ConsistencyResult("ok", sentence, window, rpo, last_known, new_latest)


async def latest_replicated(config: DatabaseConfig, site: str) -> CommitPoint | None:
    """The freshest heartbeat written on the other site that ``site`` holds (None when it holds none)."""
    from psycopg import sql

    from probes.postgres import table_ident
    from probes.postgres_conn import connect, fetch

    async with await connect(config.sites[site], statement_timeout=config.lag_probe.statement_timeout,
                             application_name="failover-engine consistency") as conn:
        rows = await fetch(conn, sql.SQL("SELECT beat_at, lsn::text, site FROM {} WHERE primary_site = %s "
                                         "ORDER BY beat_at DESC LIMIT 1").format(table_ident(config.heartbeat.table)),
                           (config.other_site(site),), deadline=config.lag_probe.timeout)
    if not rows:
        return None
    return CommitPoint(float(rows[0][0]), rows[0][1], rows[0][2])


async def check_consistency(config: DatabaseConfig, new_primary: str, last_known: CommitPoint | None,
                            rpo: float) -> ConsistencyResult:
    """Read the new primary's latest replicated heartbeat and judge the loss window; never raises
    for an unreachable server or a missing table: the result says "unknown" and why."""
    import psycopg

    from probes.postgres_conn import PgError, describe_pg_error

    try:
        latest = await latest_replicated(config, new_primary)
    except PgError as exc:
        return ConsistencyResult("unknown", f"data loss unknown: {new_primary} unreachable: {exc}", None, rpo,
                                 last_known, None)
    except (psycopg.Error, TimeoutError) as exc:
        return ConsistencyResult("unknown", f"data loss unknown: {describe_pg_error(exc)}", None, rpo,
                                 last_known, None)
    return assess(last_known, latest, rpo)
