"""Before a run: do the configured tables, keys and columns exist, the same, on both sides?

Used by ``failover-engine reconcile --check`` and ``check-config --connect``. It reads the catalog
only (no table is scanned): per table, both sides' key (declared or primary key) and compared
columns (:func:`actions.reconcile.runner.shapes_of`, the same check a run starts with), and the
``updated_at`` column; for a ``last_writer_wins`` table, what failback checks again before it
changes anything: this column can order writes (a ``timestamp``, ``timestamptz`` or ``date``, of
the same type on both sides), the same key and columns on both sides, and a replica identity
that covers the key. Never raises for server trouble: an unreachable site is an ``error`` (exit
2), a table that would be refused is a ``problem`` (exit 1).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import psycopg

from actions.database.last_writer import compare_sides
from actions.reconcile.runner import SESSION, shapes_of
from engine.config.database import DatabaseConfig, ReconcileTable
from probes.postgres_conn import PgError, Refused, connect, describe_pg_error


@dataclass
class Preflight:
    """Lines to print, problems found, and an error that stopped the check."""

    service: str
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        return 2 if self.error is not None else 1 if self.problems else 0

    def render(self) -> str:
        head = (f"{self.service}: cannot check: {self.error}" if self.error is not None else
                f"{self.service}: {len(self.problems)} problem{'s' * (len(self.problems) != 1)}" if self.problems
                else f"{self.service}: every reconciled table is ready on both sides")
        return "\n".join([head, *(f"  {line}" for line in self.lines)])


async def preflight(config: DatabaseConfig, *, service: str, primary: str) -> Preflight:
    """Check every configured table on ``primary`` and the other site (module docstring)."""
    out = Preflight(service)
    sites = (primary, config.other_site(primary))
    rc = config.reconcile
    deadline = rc.statement_timeout + 5.0
    conns: list[psycopg.AsyncConnection[Any]] = []
    try:
        for site in sites:
            try:
                conns.append(await connect(config.sites[site], statement_timeout=rc.statement_timeout,
                                           application_name="failover-engine reconcile check", settings=SESSION))
            except PgError as exc:
                out.error = f"{site} unreachable: {exc}"
                return out
        for table in rc.tables:
            try:
                left, _, notes = await shapes_of(conns[0], conns[1], table, sites, deadline)
            except Refused as exc:
                out.problems.append(str(exc))
                out.lines.append(f"table {table.name}: PROBLEM: {exc}")
                continue
            ordering = await _ordering_problems(conns, table, sites) if table.conflict == "last_writer_wins" else []
            if ordering:
                out.problems.extend(ordering)
                out.lines.extend(f"table {table.name}: PROBLEM: {p}" for p in ordering)
                continue
            columns = ", ".join(c.name for c in left.columns)
            out.lines.append(f"table {table.name}: ok: key ({', '.join(left.key_names)}) from the "
                             f"{left.key_source}; compares {columns}")
            out.lines.extend(f"  note: {n}" for n in notes)
        if not rc.tables:
            out.lines.append("no table configured under reconcile.tables")
    except (psycopg.Error, TimeoutError) as exc:
        out.error = describe_pg_error(exc)
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return out


async def _ordering_problems(conns: list[psycopg.AsyncConnection[Any]], table: ReconcileTable,
                             sites: tuple[str, str]) -> list[str]:
    """A ``last_writer_wins`` table: the comparison failback makes before it changes anything
    (:func:`actions.database.last_writer.compare_sides`), the replica identity on both sides (either
    may be the new primary whose slot is decoded). Never raises :class:`Refused`: it is a problem."""
    try:
        _, problems = await compare_sides((conns[0], conns[1]), sites, table, identity_on=(0, 1))
    except Refused as exc:
        return [str(exc)]
    return problems
