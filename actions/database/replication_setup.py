"""``db init``: the publication on the primary and the subscription on the standby, made when absent.

The publication lists the reconciled tables and the heartbeat table (``FOR TABLE``: a table added
later never replicates by surprise). The subscription on the standby points at the primary (its
``replication_host``/``replication_port`` when set; ``replication_passfile`` instead of an
embedded password when set) and copies the existing rows. When the engine's role may not do it
(``CREATE`` on the database for a publication, superuser or ``pg_create_subscription`` for a
subscription), nothing is half-done: the step fails with the exact SQL to run and the privilege
that is missing. The SQL printed never contains a password (``password=...`` is shown as
``password=<secret>``).
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import psycopg
from psycopg import sql

from actions.database.heartbeat import heartbeat_ddl
from actions.database.results import Step
from engine.config.database import DatabaseConfig
from probes.postgres_conn import PgError, connect, conninfo, describe_pg_error

PUBLICATION_PRIVILEGE = "CREATE on the database (and ownership of the tables), or superuser"
SUBSCRIPTION_PRIVILEGE = "superuser (PostgreSQL 16: pg_create_subscription)"


def _tables(config: DatabaseConfig) -> list[str]:
    names = [t.name for t in config.reconcile.tables]
    return [*names, config.heartbeat.table] if config.heartbeat.table not in names else names


def publication_sql(config: DatabaseConfig) -> sql.Composed:
    """Pure: the ``CREATE PUBLICATION`` of the module docstring."""
    tables = sql.SQL(", ").join(sql.Identifier(*name.split(".")) for name in _tables(config))
    return sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(config.publication), tables)


def subscription_sql(config: DatabaseConfig, primary: str) -> sql.Composed:
    """Pure: the ``CREATE SUBSCRIPTION`` of the module docstring (carries the connection string)."""
    source = conninfo(config.sites[primary], for_replication=True, application_name=config.subscription)
    return sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (slot_name = {})").format(
        sql.Identifier(config.subscription), sql.Literal(source), sql.Identifier(config.publication),
        sql.Literal(config.slot_name))


def masked(text: str) -> str:
    """The SQL to show a human: any password in a connection string replaced."""
    return re.sub(r"password=('(?:[^'\\]|\\.)*'|\S+)", "password=<secret>", text)


async def ensure_publication(conn: psycopg.AsyncConnection[Any], config: DatabaseConfig, site: str) -> Step:
    """The publication on the primary ``site``, created when absent."""
    t0 = time.perf_counter()
    row = await (await conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (config.publication,))
                 ).fetchone()
    if row is not None:
        return Step("publication", "ok", f"{config.publication} exists on {site}", time.perf_counter() - t0)
    statement = publication_sql(config)
    try:
        await conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        text = statement.as_string(conn)
        return Step("publication", "failed", f"not allowed to create it on {site}: needs {PUBLICATION_PRIVILEGE}; "
                    f"run as such a role: {text};", time.perf_counter() - t0)
    except psycopg.Error as exc:
        return Step("publication", "failed", f"{site}: {describe_pg_error(exc)}", time.perf_counter() - t0)
    return Step("publication", "ok", f"created {config.publication} on {site} ({', '.join(_tables(config))})",
                time.perf_counter() - t0)


async def ensure_subscription(conn: psycopg.AsyncConnection[Any], config: DatabaseConfig, primary: str,
                              site: str) -> Step:
    """The subscription on the standby ``site`` to ``primary``, created when absent."""
    t0 = time.perf_counter()
    row = await (await conn.execute(
        "SELECT 1 FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid AND d.datname = current_database() "
        "WHERE subname = %s", (config.subscription,))).fetchone()
    if row is not None:
        return Step("subscription", "ok", f"{config.subscription} exists on {site}", time.perf_counter() - t0)
    statement = subscription_sql(config, primary)
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):  # a failure must not log the conninfo
        await conn.execute("SET log_min_error_statement = panic")
    try:
        await conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        text = masked(statement.as_string(conn))
        return Step("subscription", "failed", f"not allowed to create it on {site}: needs {SUBSCRIPTION_PRIVILEGE}; "
                    f"run as such a role: {text};", time.perf_counter() - t0)
    except psycopg.Error as exc:
        return Step("subscription", "failed", f"{site}: {describe_pg_error(exc, config.sites[primary])}",
                    time.perf_counter() - t0)
    return Step("subscription", "ok", f"created {config.subscription} on {site} from {primary}",
                time.perf_counter() - t0)


async def setup_replication(config: DatabaseConfig, primary: str) -> list[Step]:
    """Heartbeat table on both sites, then publication (primary) and subscription (standby) when absent."""
    standby = config.other_site(primary)
    steps: list[Step] = []
    timeout = config.promotion.statement_timeout
    for site in (primary, standby):
        try:
            async with await connect(config.sites[site], statement_timeout=timeout, writable=True,
                                     application_name="failover-engine db init") as conn:
                await conn.execute(heartbeat_ddl(config.heartbeat.table))
                if site == primary:
                    steps.append(await ensure_publication(conn, config, site))
                else:
                    steps.append(await ensure_subscription(conn, config, primary, site))
        except (PgError, psycopg.Error) as exc:
            why = str(exc) if isinstance(exc, PgError) else describe_pg_error(exc)
            steps.append(Step("publication" if site == primary else "subscription", "failed", f"{site}: {why}"))
        if steps[-1].status == "failed":
            break
    return steps
