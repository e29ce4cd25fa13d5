"""Could the standby be promoted right now? Checked without changing anything (a shadow drill).

On the standby, in one read-only session:

- ``replica``: a logical replica (not a physical standby in recovery), as :func:`promote` requires;
- ``subscription``: the configured subscription exists, is enabled and its apply worker runs;
- ``control``: this role may disable it (superuser, or a member of its owner's role);
- ``sequences``: every sequence of the subscribed tables is readable and this role may ``setval``
  it, and how many a promotion would move forward (the same arithmetic as
  :func:`actions.database.sequences.sync_sequences`, without the ``setval``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from actions.database.results import ActionResult, Step, summarize
from actions.database.sequences import SEQUENCES, SUBSCRIBED_TABLES, planned_value
from engine.config.database import DatabaseConfig
from probes.postgres_conn import PgError, Unreachable, connect, describe_pg_error

REQUIRED = ("replica", "subscription", "control", "sequences")

SUBSCRIPTION = """
SELECT s.subenabled, pg_has_role(current_user, s.subowner, 'USAGE')
       OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       (SELECT count(*) FROM pg_stat_subscription st WHERE st.subid = s.oid AND st.pid IS NOT NULL
                                                       AND st.relid IS NULL)
FROM pg_subscription s WHERE s.subname = %s AND s.subdbid = (SELECT oid FROM pg_database
                                                             WHERE datname = current_database())
"""


async def _sequences(conn: psycopg.AsyncConnection[Any], config: DatabaseConfig) -> Step:
    t0 = time.perf_counter()
    cur = await conn.execute(SUBSCRIBED_TABLES, (config.subscription,))
    tables = [row[0] for row in await cur.fetchall()]
    cur = await conn.execute(SEQUENCES, {"tables": tables})
    rows = await cur.fetchall()
    denied: list[str] = []
    behind = 0
    for seq_oid, seq_name, table, column in rows:
        cur = await conn.execute("SELECT has_sequence_privilege(%s, 'UPDATE'), has_table_privilege(%s, 'SELECT')",
                                 (seq_oid, table))
        grants = await cur.fetchone()
        if not grants or not grants[0] or not grants[1]:
            denied.append(seq_name)
            continue
        target, _, _ = await planned_value(conn, seq_oid, seq_name, table, column, config.promotion.sequence_margin)
        if target is not None:
            behind += 1
    seconds = time.perf_counter() - t0
    if denied:
        return Step("sequences", "failed", f"no UPDATE/SELECT privilege on {len(denied)} sequence(s): "
                    + ", ".join(denied[:5]), seconds)
    return Step("sequences", "ok", f"{len(rows)} sequence(s) of {len(tables)} subscribed table(s) can be synced; "
                f"{behind} would move forward", seconds)


async def promotion_readiness(config: DatabaseConfig, site: str) -> ActionResult:
    """What :func:`actions.database.promote.promote` would find on ``site``; never raises for server errors."""
    steps: list[Step] = []
    try:
        async with asyncio.timeout(config.promotion.timeout):
            async with await connect(config.sites[site], statement_timeout=config.promotion.statement_timeout,
                                     application_name="failover-engine readiness") as conn:
                cur = await conn.execute("SELECT pg_is_in_recovery()")
                row = await cur.fetchone()
                if row and row[0]:
                    steps.append(Step("replica", "failed", "a physical standby (in recovery): not promotable here"))
                    return summarize("promotion readiness", site, steps, required=REQUIRED)
                steps.append(Step("replica", "ok", "a logical replica"))
                cur = await conn.execute(SUBSCRIPTION, (config.subscription,))
                sub = await cur.fetchone()
                if sub is None:
                    steps.append(Step("subscription", "failed", f"subscription {config.subscription!r} does not "
                                      "exist: promotion would refuse"))
                    return summarize("promotion readiness", site, steps, required=REQUIRED)
                enabled, may_alter, workers = bool(sub[0]), bool(sub[1]), int(sub[2])
                if not enabled:
                    steps.append(Step("subscription", "failed", f"subscription {config.subscription!r} is disabled: "
                                      "the standby is not receiving changes"))
                elif not workers:
                    steps.append(Step("subscription", "failed", f"subscription {config.subscription!r} is enabled "
                                      "but its apply worker is not running"))
                else:
                    steps.append(Step("subscription", "ok", f"subscription {config.subscription!r} enabled, "
                                      "apply worker running"))
                steps.append(Step("control", "ok" if may_alter else "failed",
                                  "this role may disable the subscription" if may_alter else
                                  "this role is neither superuser nor a member of the subscription owner's role: "
                                  "ALTER SUBSCRIPTION ... DISABLE would fail"))
                steps.append(await _sequences(conn, config))
    except TimeoutError:
        steps.append(Step("timeout", "failed", f"no answer within {config.promotion.timeout:g}s"))
    except Unreachable as exc:
        steps.append(Step("connect", "failed", f"{site} unreachable: {exc}"))
    except (PgError, psycopg.Error) as exc:
        steps.append(Step("readiness", "failed", str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)))
    return summarize("promotion readiness", site, steps, required=REQUIRED)
