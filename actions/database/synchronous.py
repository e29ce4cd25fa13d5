"""Synchronous replication on the primary: name (or stop naming) the standby, and read whether it holds.

The standby is the subscription's walsender on the primary; its ``application_name`` is the
subscription's name (PostgreSQL's default, and what the reverse subscription of
:mod:`actions.database.failback` sets), so :func:`standby_name` is ``database.subscription``.
The name must be unique among the walsenders of the primary's cluster (``synchronous_standby_names``
is cluster-wide): give each service's subscription its own name.

:func:`set_standby_name` changes the setting through ``ALTER SYSTEM`` and ``pg_reload_conf()``;
it reads the setting in effect first and changes nothing when it already is what is wanted
(idempotent). ``ALTER SYSTEM`` needs a superuser or, on PostgreSQL 15, ``GRANT ALTER SYSTEM ON
PARAMETER synchronous_standby_names`` to the engine's role. :func:`observe` reads one
:class:`~engine.core.sync_mode.SyncObservation`: the setting in effect, the walsender's
``pg_stat_replication`` row (``state``, ``sync_state``, flushed LSN) and the oldest commit waiting
for it (``pg_stat_activity`` with ``wait_event = 'SyncRep'``; other roles' sessions are visible to
members of ``pg_read_all_stats``). Neither raises for server trouble: an unreachable primary is an
observation (``reachable = False``) or a failed :class:`Step`.

:func:`apply_mode_after_move` keeps the mode across promotion, switchover, failback and re-protect:
the new primary names the new standby (``strict``, or ``on`` once that standby streams and is caught
up; until then the watch restores it), and the old primary stops naming anyone.
"""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg
from psycopg import sql

from actions.database.results import ActionResult, Step, summarize
from engine.config.database import DatabaseConfig
from engine.core.sync_mode import SyncObservation
from probes.postgres_conn import PgError, connect, describe_pg_error, fetch

APP = "failover-engine synchronous"
WAITS_FOR_FLUSH = ("on", "remote_apply")  # synchronous_commit levels that wait for the standby's flush

STATE = """
SELECT current_setting('synchronous_standby_names'), current_setting('synchronous_commit'),
       r.state, r.sync_state, pg_wal_lsn_diff(pg_current_wal_lsn(), r.flush_lsn)::bigint,
       (SELECT extract(epoch FROM max(clock_timestamp() - a.query_start))::float8
          FROM pg_stat_activity a WHERE a.wait_event = 'SyncRep')
FROM (SELECT 1) one LEFT JOIN LATERAL (
    SELECT state, sync_state, flush_lsn FROM pg_stat_replication WHERE application_name = %s
    ORDER BY state = 'streaming' DESC LIMIT 1) r ON true
"""


def standby_name(config: DatabaseConfig) -> str:
    """The ``application_name`` of the standby's walsender on the primary: the subscription's name."""
    return config.subscription


def names_in(setting: str) -> tuple[set[str], bool]:
    """Pure: the standby names listed in a ``synchronous_standby_names`` value, and whether ``*`` is one.

    Accepts ``a, b``, ``FIRST 1 (a, "B")``, ``ANY 2 (a, b, c)`` and ``2 (a, b)``; quoted names keep their case.
    """
    text = setting.strip()
    match = re.match(r"^(?:(?:FIRST|ANY)\s+)?\d+\s*\((.*)\)\s*$", text, re.IGNORECASE | re.DOTALL)
    body = match.group(1) if match else text
    names: set[str] = set()
    star = False
    for raw in re.findall(r'"(?:[^"]|"")*"|[^,\s]+', body):
        if raw.startswith('"'):
            names.add(raw[1:-1].replace('""', '"'))
        elif raw == "*":
            star = True
        else:
            names.add(raw.lower())
    return names, star


def names_standby(setting: str, name: str) -> bool:
    """True when ``setting`` makes the walsender called ``name`` a synchronous standby candidate."""
    names, star = names_in(setting)
    return star or name in names


def quoted(name: str) -> str:
    """The ``synchronous_standby_names`` value naming exactly ``name`` (case kept)."""
    return '"' + name.replace('"', '""') + '"'


async def observe(config: DatabaseConfig, primary: str) -> SyncObservation:
    """One reading of synchronous replication on ``primary``; never raises."""
    name = standby_name(config)
    try:
        async with await connect(config.sites[primary], statement_timeout=config.lag_probe.statement_timeout,
                                 application_name=APP) as conn:
            rows = await fetch(conn, STATE, (name,), deadline=config.lag_probe.timeout)
    except PgError as exc:
        return SyncObservation(False, reason=f"{primary} unreachable: {exc}")
    except psycopg.Error as exc:
        return SyncObservation(False, reason=describe_pg_error(exc))
    except TimeoutError:
        return SyncObservation(False, reason=f"{primary} did not answer within {config.lag_probe.timeout:g}s")
    setting, level, state, sync_state, lag, waited = rows[0]
    named = names_standby(str(setting), name)
    note = "" if level in WAITS_FOR_FLUSH else f"synchronous_commit is {level}: commits do not wait for the standby"
    return SyncObservation(True, named=named and level in WAITS_FOR_FLUSH, streaming=state == "streaming",
                           sync_state=sync_state, oldest_wait_s=None if waited is None else float(waited),
                           lag_bytes=None if lag is None else int(lag), reason=note)


async def _set(conn: psycopg.AsyncConnection[Any], config: DatabaseConfig, site: str, name: str | None) -> Step:
    t0 = time.perf_counter()
    cur = await conn.execute("SELECT current_setting('synchronous_standby_names')")
    row = await cur.fetchone()
    current = str(row[0]) if row else ""
    want = "" if name is None else quoted(name)
    if current == want or (name is None and not names_standby(current, standby_name(config))):
        # the engine only ever removes its own name: a setting naming others is the DBA's
        what = ("names no synchronous standby of ours" if name is None
                else f"already names {name} as synchronous standby")
        return Step("synchronous", "ok", f"{site} {what}", time.perf_counter() - t0)
    if name is None:
        await conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
    else:
        # a utility statement takes no bind parameters: the value goes in as a quoted literal
        await conn.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(want)))
    await conn.execute("SELECT pg_reload_conf()")
    done = (f"{site} stopped naming a synchronous standby (was {current})" if name is None
            else f"{site} names {name} as synchronous standby (was {current or 'none'})")
    return Step("synchronous", "ok", done, time.perf_counter() - t0)


async def set_standby_name(config: DatabaseConfig, site: str, name: str | None) -> Step:
    """Make ``site`` name ``name`` (None: nobody) as its synchronous standby; idempotent, never raises."""
    t0 = time.perf_counter()
    try:
        async with await connect(config.sites[site], statement_timeout=config.lag_probe.statement_timeout,
                                 application_name=APP) as conn:
            return await _set(conn, config, site, name)
    except PgError as exc:
        return Step("synchronous", "failed", f"{site} unreachable: {exc}", time.perf_counter() - t0)
    except (psycopg.Error, TimeoutError) as exc:
        why = describe_pg_error(exc) if isinstance(exc, psycopg.Error) else "timed out"
        return Step("synchronous", "failed", f"{site}: {why}", time.perf_counter() - t0)


async def mode_on_new_primary(conn: psycopg.AsyncConnection[Any], config: DatabaseConfig, site: str,
                              ) -> Step | None:
    """On a primary being promoted (its standby does not stream yet), before it takes writes: ``strict`` names
    the standby (commits wait until it subscribes); ``on`` names nobody (the watch restores it after catch-up);
    ``off`` only removes a name of ours (None: nothing to do). Never fails the promotion: trouble is a
    ``skipped`` step with the reason (the watch applies the mode again every tick)."""
    name = standby_name(config)
    t0 = time.perf_counter()
    try:
        if config.synchronous == "off":
            row = await (await conn.execute("SELECT current_setting('synchronous_standby_names')")).fetchone()
            if row is None or not names_standby(str(row[0]), name):
                return None
        step = await _set(conn, config, site, name if config.synchronous == "strict" else None)
    except psycopg.Error as exc:
        lost = " (strict NOT in effect until the watch can apply it)" if config.synchronous == "strict" else ""
        return Step("synchronous", "skipped", f"{describe_pg_error(exc)}{lost}", time.perf_counter() - t0)
    if config.synchronous == "strict":
        return Step(step.name, step.status, f"{step.detail} (strict: commits wait until the standby subscribes)",
                    step.seconds)
    return step


async def apply_mode_after_move(config: DatabaseConfig, new_primary: str) -> ActionResult:
    """After a move: the new primary names the new standby as the mode says, the old primary nobody.

    ``on`` names the standby only when it streams within ``restore_lag`` bytes (else the watch restores it
    once it has caught up: naming a lagging standby would stall every commit). Never raises.
    """
    old = config.other_site(new_primary)
    name = standby_name(config)
    steps: list[Step] = []
    if config.synchronous == "on":
        seen = await observe(config, new_primary)
        limit = config.synchronous_degrade.restore_lag
        ready = seen.streaming and seen.lag_bytes is not None and seen.lag_bytes <= limit
        step = await set_standby_name(config, new_primary, name if ready else None)
        if not ready and step.status == "ok":
            why = seen.reason or ("the standby does not stream" if not seen.streaming else "the standby lags")
            step = Step(step.name, "ok", f"{step.detail}; asynchronous until the standby catches up ({why})",
                        step.seconds)
        steps.append(step)
    else:
        steps.append(await set_standby_name(config, new_primary, name if config.synchronous == "strict" else None))
    back = await set_standby_name(config, old, None)
    if back.status == "failed":  # the old primary may be gone: it names nobody that could answer anyway
        back = Step("old primary", "skipped", back.detail, back.seconds)
    else:
        back = Step("old primary", "ok", back.detail, back.seconds)
    steps.append(back)
    return summarize(f"synchronous {config.synchronous}", new_primary, steps, required=("synchronous",))


async def reprotect_step(config: DatabaseConfig, new_primary: str) -> Step:
    """Re-protect keeps the mode: the new primary names its new (caught-up) standby; never fails the step."""
    kept = await apply_mode_after_move(config, new_primary)
    return Step("synchronous", "ok" if kept.ok else "skipped", kept.sentence)
