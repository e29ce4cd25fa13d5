"""Connections to one site's PostgreSQL: conninfo from config, bounded connect, secret-free errors.

Shared by the lag probe, the heartbeat writer and the database actions. Every connection carries a
``statement_timeout`` and opens within ``connect_timeout`` (both libpq's and an asyncio deadline,
because libpq's timeout is per address and has a 2 s floor). Errors are turned into short reasons
that never contain the password (psycopg messages may name the host and user; that is fine).

Errors::

    PgError                  base of everything raised on purpose by the PostgreSQL code
    ├── Unreachable          could not open a connection (refused, timeout, authentication)
    └── Refused              the server answered but the action must not go on (missing
                             publication or subscription, table without primary key, ...)
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from engine.config.database import PgConnection


class PgError(Exception):
    """Base of the PostgreSQL errors raised on purpose; ``str()`` is a short human reason."""


class Unreachable(PgError):
    """A connection could not be opened."""


class Refused(PgError):
    """The server is there, but the action must not go on; the message says why."""


def conninfo(conn: PgConnection, *, for_replication: bool = False, application_name: str = "failover-engine",
             ) -> str:
    """A libpq conninfo string. It contains the password: never log it or put it in a reason.

    ``for_replication``: the string another server uses to reach this one (a subscription); it
    names ``replication_passfile`` instead of the password when that is configured.
    """
    host = (conn.replication_host or conn.host) if for_replication else conn.host
    port = (conn.replication_port or conn.port) if for_replication else conn.port
    params: dict[str, Any] = {
        "host": host, "port": port, "dbname": conn.dbname, "user": conn.user, "sslmode": conn.sslmode,
        "connect_timeout": max(2, math.ceil(conn.connect_timeout)), "application_name": application_name,
    }
    if for_replication and conn.replication_passfile:
        params["passfile"] = conn.replication_passfile  # read by the other server: no password in the string
    elif conn.password is not None:
        params["password"] = conn.password.get_secret_value()
    return make_conninfo("", **params)


def where(conn: PgConnection) -> str:
    """``host:port/dbname`` for messages (no user, no password)."""
    return f"{conn.host}:{conn.port}/{conn.dbname}"


async def connect(conn: PgConnection, *, statement_timeout: float, application_name: str = "failover-engine",
                  writable: bool = False, settings: dict[str, str] | None = None,
                  ) -> psycopg.AsyncConnection[tuple[Any, ...]]:
    """Open an autocommit connection within ``connect_timeout`` with ``statement_timeout`` set.

    ``writable`` makes this one session ignore a fence (``default_transaction_read_only``): the
    engine's own administrative sessions (promote, failback, ``db init``) need that. ``settings``
    are more session settings (name -> value, both plain identifiers/numbers, e.g. ``jit: off``).
    Raises :class:`Unreachable` with a secret-free reason.
    """
    ms = max(1, int(statement_timeout * 1000))
    options = f"-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={ms * 2}"
    if writable:
        options += " -c default_transaction_read_only=off"
    for name, value in (settings or {}).items():
        options += f" -c {name}={value}"
    try:
        async with asyncio.timeout(conn.connect_timeout):
            return await psycopg.AsyncConnection.connect(
                conninfo(conn, application_name=application_name), autocommit=True, options=options)
    except TimeoutError:
        raise Unreachable(f"connect timeout after {conn.connect_timeout:g}s") from None
    except psycopg.Error as exc:
        raise Unreachable(describe_pg_error(exc, conn)) from None
    except OSError as exc:
        raise Unreachable((exc.strerror or str(exc)).lower()) from None


async def fetch(conn: psycopg.AsyncConnection[Any], statement: Any, params: Any = None, *, deadline: float,
                ) -> list[tuple[Any, ...]]:
    """Run one statement and fetch its rows within ``deadline`` seconds.

    ``statement_timeout`` bounds the server; this bounds the network too (a silent peer), so no
    await on a connection is ever unbounded. Raises ``TimeoutError`` past the deadline.
    """
    async with asyncio.timeout(deadline):
        cur = await conn.execute(statement, params)
        return list(await cur.fetchall()) if cur.description else []


_FAILED_PREFIX = re.compile(r'^(connection failed: )?connection to server at "[^"]*"( \([^)]*\))?, port \d+ failed: ')


def describe_pg_error(exc: BaseException, conn: PgConnection | None = None) -> str:
    """A short reason for a psycopg error; the password is masked if a server ever echoed it."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return "statement timeout"
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    text = _FAILED_PREFIX.sub("", text)
    lowered = text.lower()
    if "connection refused" in lowered:
        text = "connect refused"
    elif "timeout expired" in lowered:
        text = "connect timeout"
    elif "password authentication failed" in lowered:
        text = "password authentication failed"
    elif isinstance(exc, psycopg.OperationalError) and "server closed the connection" in lowered:
        text = "server closed the connection"
    if conn is not None and conn.password is not None:
        secret = conn.password.get_secret_value()
        if secret:
            text = text.replace(secret, "**********")
    return text[:200]
