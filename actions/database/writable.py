"""Does a site's database take writes right now? One cheap look from a fresh session (never raises).

A fresh session matters: a fence (``ALTER DATABASE ... SET default_transaction_read_only``) applies
to new sessions only, so ``transaction_read_only`` in a new one is what a newly connecting client
gets. Writable means that setting is ``off`` and the server is not a physical standby in recovery.
``subscribed`` tells a logical standby (an enabled subscription in this database) from a primary.
The look is bounded by the site's ``connect_timeout`` plus ``timeout``; a failure is an observation
(``writable`` None, with the reason), never an exception.
"""

from __future__ import annotations

import asyncio

import psycopg

from engine.config.database import DatabaseConfig
from engine.core.stray import DbSeen
from probes.postgres_conn import PgError, connect, describe_pg_error

LOOK = """
SELECT current_setting('transaction_read_only') = 'off' AND NOT pg_is_in_recovery(),
       EXISTS (SELECT 1 FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid
               WHERE d.datname = current_database() AND s.subenabled)
"""


async def look(config: DatabaseConfig, site: str, *, timeout: float) -> DbSeen:
    """Whether ``site``'s database takes writes from a new session, and whether it subscribes."""
    conn_cfg = config.sites[site]
    try:
        async with asyncio.timeout(conn_cfg.connect_timeout + timeout):
            async with await connect(conn_cfg, statement_timeout=timeout,
                                     application_name="failover-engine stray watch") as conn:
                cur = await conn.execute(LOOK)
                row = await cur.fetchone()
    except TimeoutError:
        return DbSeen(site, None, None, f"no answer within {conn_cfg.connect_timeout + timeout:g}s")
    except PgError as exc:
        return DbSeen(site, None, None, str(exc))
    except psycopg.Error as exc:
        return DbSeen(site, None, None, describe_pg_error(exc, conn_cfg))
    if row is None:
        return DbSeen(site, None, None, "no answer to the look")
    writable, subscribed = bool(row[0]), bool(row[1])
    return DbSeen(site, writable, subscribed,
                  ("takes writes" if writable else "read-only") + (", subscribes" if subscribed else ""))
