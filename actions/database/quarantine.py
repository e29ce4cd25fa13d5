"""Quarantine: keep a copy of the old primary's divergent rows before it is resynchronised.

Why. Failback makes the old primary a subscriber of the new one (:mod:`actions.database.failback`).
From then on the reverse stream overwrites or deletes every row the new primary wrote after
promotion, and a later write on the new primary can overwrite any row the old primary alone changed.
The rows the old primary holds *differently* from the new primary (the reconciliation's ``changed``
rows) or holds *alone* (its ``missing_on_primary`` rows, with the new primary as primary) are the
only copy of what may be lost writes; they are copied first, into a schema of the old primary, so
nothing is overwritten without being kept. Rows the old primary lacks have nothing to keep.

Layout. One table per source table in schema ``failover_quarantine`` (configurable), named
``<table>__<tag>`` (``<schema>_<table>__<tag>`` outside ``public``; shortened with a hash to fit
PostgreSQL's 63-byte names). The tag names the failover the rows belong to; failback derives it from
the reverse slot's position (stable until the old primary starts consuming it, so a re-run finds
the same table). Created with ``CREATE TABLE ... (LIKE source, ...)``: the source's columns and
``NOT NULL`` constraints, identity and generated columns as plain values, its key columns as the
primary key, plus ``quarantined_at``, ``quarantine_tag`` and ``quarantine_reason`` (per row: why it
differed). Defaults are deliberately **not** copied (``INCLUDING DEFAULTS``): every column is
filled from the source, and a copied ``nextval()`` default would tie the quarantine table to the
source's sequence (``DROP TABLE`` of the source would then fail, and an insert into the quarantine
would advance a production sequence). A table comment names the source, the sites and the tag.

Theory of operation, one transaction on the old primary:

1. ``SET transaction_read_only = off`` first: the old primary is fenced (``ALTER DATABASE ... SET
   default_transaction_read_only = on``, :mod:`actions.database.fence`), and the engine's own
   session may write; nothing else is unfenced;
2. ``CREATE SCHEMA IF NOT EXISTS``, then per source table ``CREATE TABLE IF NOT EXISTS``;
3. **not replicated**: every publication that would publish the quarantine schema is refused, and
   the transaction rolls back. The engine's publications are ``FOR TABLE`` lists
   (:func:`actions.database.reverse.ensure_publication`), which never gain a new table; but a
   publication an operator made ``FOR ALL TABLES`` (or ``FOR TABLES IN SCHEMA`` of this schema)
   would publish every quarantine table, and PostgreSQL cannot exclude a schema from it: a
   subscriber that lacks the tables (the other site, after failback or re-protection) would fail
   ``CREATE SUBSCRIPTION`` or stop applying. The check reads ``pg_publication_tables`` after the
   tables exist, so it covers every way a table can be published;
4. ``INSERT ... SELECT`` from the source restricted to the differing keys, ``ON CONFLICT DO
   NOTHING`` on the key: re-running with the same tag never duplicates a row and never replaces a
   kept version with a later one (the first copy is the one taken before any resynchronisation).

Rows are matched by the key the reconciliation compares on (:func:`actions.reconcile.shape.inspect_table`:
the configured ``key`` or the primary key; any types, composite keys too). Keys arrive as the
reconciliation's JSON gives them (one column as its value, ints as ints, numerics as
``trim_scale(value)::text``, other types as their canonical text, a composite key as a list)
and are passed as one array per key column, cast to that column's own type; a table whose key
cannot be matched (no primary key, a key that is not unique, a key of another width) is refused
with the reason, naming the table. The result lists per
table the quarantine table, how many of the differing rows it holds, how many this run copied, and
the keys (the first :data:`KEYS_LISTED`, with the total).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from actions.database.results import ActionResult, Step, summarize
from actions.reconcile.plan import Key, key_json, key_text, sort_keys
from actions.reconcile.shape import CANONICAL_SETTINGS, TableShape, inspect_table, key_expr
from engine.config.database import DatabaseConfig
from probes.postgres_conn import PgError, Refused, connect, describe_pg_error

DEFAULT_SCHEMA = "failover_quarantine"
KEYS_LISTED = 100          # keys named per table in the result (all of them are counted)
KEYS_IN_SENTENCE = 10      # keys named per table in the sentence
MAX_NAME = 63              # PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes
MAX_TAG = 40               # leaves room for a recognisable table name
EXTRA_COLUMNS = ("quarantined_at", "quarantine_tag", "quarantine_reason")
HELD_BY_OLD = ("missing_on_primary", "changed")  # reconciliation kinds, new primary as its primary

RELATION = ("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(%s)")
PUBLISHING = """
SELECT DISTINCT t.pubname, p.puballtables FROM pg_publication_tables t JOIN pg_publication p ON p.pubname = t.pubname
WHERE t.schemaname = %s ORDER BY 1
"""


@dataclass(frozen=True, slots=True)
class Divergent:
    """One row of the old primary to keep: the table as the reconciliation names it, its key, why."""

    table: str
    key: Any  # as :func:`row_key` gives it: one column's value (int or text), a tuple for a composite key
    reason: str


@dataclass(frozen=True, slots=True)
class KeptTable:
    """What one source table's quarantine holds after a run."""

    source: str          # schema.table on the old primary
    table: str           # quarantine schema.table
    rows: int            # differing rows of this run held in the quarantine table now
    copied: int          # of them, copied by this run (the others were kept by an earlier run)
    keys: tuple[Key, ...]  # each a tuple of the key columns' values
    key_count: int       # differing keys asked for; key_count - rows were not on the old primary

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "table": self.table, "rows": self.rows, "copied": self.copied,
                "keys": [key_json(k) for k in self.keys[:KEYS_LISTED]], "key_count": self.key_count,
                "keys_truncated": self.key_count > KEYS_LISTED, "absent": self.key_count - self.rows}


def divergent_rows(tables: list[dict[str, Any]], *, old: str, new_primary: str,
                   explained: Callable[[str, Any], bool] | None = None,
                   keep_both: Callable[[str], bool] | None = None) -> list[Divergent]:
    """Pure: the rows of a reconciliation (``new_primary`` as its primary) that the old primary holds
    and that differ: only on the old primary, or changed. ``explained(table, key)``: the new primary
    wrote the key after promotion, so the reverse stream will overwrite or delete the old version.
    """
    out: list[Divergent] = []
    for t in tables:
        name = str(t.get("table"))
        for d in t.get("differences") or []:
            if not isinstance(d, dict) or d.get("kind") not in HELD_BY_OLD:
                continue
            key = row_key(d["key"])
            stream = explained is not None and explained(name, key)
            if stream and keep_both is not None and not keep_both(name):
                continue
            if d["kind"] == "missing_on_primary":
                why = (f"only on {old}: deleted on {new_primary} after promotion (the reverse stream deletes it)"
                       if stream else f"only on {old}: not on {new_primary} and not written there since "
                                      "promotion (a write lost at failover)")
            else:
                why = (f"differs from {new_primary}: written there after promotion (the reverse stream "
                       "overwrites it)" if stream else f"differs from {new_primary}: not written there since "
                                                       "promotion (a change lost at failover)")
            if d.get("in_flight"):
                why += "; in flight when reconciled"
            out.append(Divergent(name, key, why))
    return out


def row_key(value: Any) -> Any:
    """Pure: a reconciliation key as a hashable value (an int stays an int; a composite key is a tuple)."""
    return tuple(value) if isinstance(value, list) else value


def clean_tag(tag: str) -> str:
    """Pure: a tag usable in a table name: lower case letters, digits and ``_``; at most :data:`MAX_TAG`."""
    cleaned = re.sub(r"[^a-z0-9_]+", "_", tag.lower()).strip("_")
    if not cleaned:
        raise ValueError(f"quarantine tag {tag!r} has no letter or digit")
    if len(cleaned) > MAX_TAG:
        raise ValueError(f"quarantine tag {tag!r} is longer than {MAX_TAG} characters")
    return cleaned


def promotion_tag(new_primary: str, lsn: str) -> str:
    """Pure: the tag of the failover to ``new_primary`` whose reverse slot starts at ``lsn`` (``0/3000A28``)."""
    return clean_tag(f"{new_primary[:20]}_{lsn.replace('/', '_')}")


def quarantine_table_name(source_schema: str, source_table: str, tag: str) -> str:
    """Pure: ``<table>__<tag>`` (``<schema>_<table>__<tag>`` outside ``public``), at most 63 bytes.

    A name too long keeps the start of the source's name and adds a hash of the full one, so two
    long sources never share a quarantine table.
    """
    base = source_table if source_schema == "public" else f"{source_schema}_{source_table}"
    name = f"{base}__{tag}"
    if len(name.encode()) <= MAX_NAME:
        return name
    digest = hashlib.sha256(f"{source_schema}.{source_table}".encode()).hexdigest()[:8]
    room = MAX_NAME - len(tag.encode()) - len(digest) - 3
    cut = base.encode()[:max(room, 1)].decode(errors="ignore")
    return f"{cut}_{digest}__{tag}"


def describe(kept: list[KeptTable], schema: str, site: str) -> str:
    """The step's detail: what is kept where, keys named (the first few per table)."""
    if not kept:
        return f"no row of {site} to keep"
    total = sum(k.rows for k in kept)
    parts = []
    for k in kept:
        shown = ", ".join(key_text(key) for key in k.keys[:KEYS_IN_SENTENCE])
        more = f" and {k.rows - KEYS_IN_SENTENCE} more" if k.rows > KEYS_IN_SENTENCE else ""
        notes = []
        if k.copied < k.rows:
            notes.append(f"{k.rows - k.copied} kept earlier")
        if k.rows < k.key_count:
            notes.append(f"{k.key_count - k.rows} no longer on {site}")
        note = f"; {', '.join(notes)}" if notes else ""
        keys = f"keys {shown}{more}" if k.rows else "no key"
        parts.append(f"{k.table.split('.', 1)[1]} {k.rows} ({keys}{note})")
    return f"kept {total} row{'s' * (total != 1)} of {site} in schema {schema}: " + "; ".join(parts)


def as_key(value: Any) -> Key:
    """Pure: a :func:`row_key` value as a key tuple (one element per key column)."""
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def _grouped(rows: list[Divergent]) -> dict[str, dict[Key, str]]:
    out: dict[str, dict[Key, str]] = {}
    for r in rows:
        out.setdefault(r.table, {}).setdefault(as_key(r.key), r.reason)
    return out


def key_arrays(shape: TableShape, keys: list[Key]) -> tuple[sql.Composable, list[list[Any]]]:
    """The SQL ``%s::<type>[], ...`` (one array per key column, cast to its own type) and the arrays;
    raises :class:`Refused` when a key has another number of values than the table's key columns."""
    width = len(shape.key)
    odd = next((k for k in keys if len(k) != width), None)
    if odd is not None:
        raise Refused(f"table {shape.name}: key {key_text(odd)} has {len(odd)} value{'s' * (len(odd) != 1)} but "
                      f"the key ({', '.join(shape.key_names)}) has {width}: rows cannot be matched")
    arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(c.type)) for c in shape.key)
    return arrays, [[k[i] for k in keys] for i in range(width)]


def key_select(shape: TableShape, alias: str | None = None) -> sql.Composable:
    """The key columns as the reconciliation reads them (:func:`key_expr`)."""
    def ident(name: str) -> sql.Identifier:
        return sql.Identifier(alias, name) if alias else sql.Identifier(name)
    return sql.SQL(", ").join(key_expr(c, ident(c.name)) for c in shape.key)


def key_columns(shape: TableShape, alias: str | None = None) -> sql.Composable:
    """``(k1, k2)``: the key columns as a row, for ``IN`` / ``=`` against unnested arrays."""
    return sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(alias, n) if alias else sql.Identifier(n)
                                                     for n in shape.key_names))


async def keep_rows(conn: psycopg.AsyncConnection[Any], rows: list[Divergent], *, tag: str,
                    schema: str = DEFAULT_SCHEMA, site: str, other: str,
                    keys: Mapping[str, list[str] | None] | None = None) -> list[KeptTable]:
    """Copy ``rows`` of the database behind ``conn`` (the old primary ``site``) into ``schema``.

    ``keys``: the configured key columns per table (None or absent: the primary key). One
    transaction (module docstring). Raises :class:`Refused` (a table that cannot be matched, a
    publication that would replicate the quarantine) or ``psycopg.Error``; nothing is kept then.
    """
    tag = clean_tag(tag)
    groups = _grouped(rows)
    if not groups:
        return []
    kept: list[KeptTable] = []
    names: dict[str, str] = {}
    q_schema = sql.Identifier(schema)
    async with conn.transaction():
        await conn.execute("SET transaction_read_only = off")  # first statement: the database is fenced
        for statement in CANONICAL_SETTINGS:  # keys are compared in the reconciliation's text forms
            await conn.execute(statement.replace("SET ", "SET LOCAL ", 1))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(q_schema))
        plans = []
        for name, wanted in groups.items():
            shape = await inspect_table(conn, name, (keys or {}).get(name), site)
            rel = await (await conn.execute(RELATION, (name,))).fetchone()
            assert rel is not None  # inspect_table found it
            src_schema, src_table = str(rel[0]), str(rel[1])
            clash = [c for c in EXTRA_COLUMNS if c in shape.all_columns]
            if clash:
                raise Refused(f"table {name} has a column named {clash[0]}, which the quarantine adds")
            q_name = quarantine_table_name(src_schema, src_table, tag)
            source = f"{src_schema}.{src_table}"
            if names.get(q_name, source) != source:  # two sources, one name (``a_b`` vs ``a.b``)
                q_name = quarantine_table_name(src_schema, src_table + "_" + hashlib.sha256(
                    source.encode()).hexdigest()[:6], tag)
            names[q_name] = source
            target = sql.Identifier(schema, q_name)
            await conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} (LIKE {s}, quarantined_at timestamptz NOT NULL DEFAULT now(), "
                "quarantine_tag text NOT NULL, quarantine_reason text NOT NULL, PRIMARY KEY ({k}))").format(
                t=target, s=sql.Identifier(src_schema, src_table),
                k=sql.SQL(", ").join(sql.Identifier(n) for n in shape.key_names)))
            await conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(target, sql.Literal(
                f"failover-engine quarantine: rows of {source} on {site} that differed from {other}, kept before "
                f"{site} was resynchronised from it (tag {tag})")))
            plans.append((source, q_name, target, src_schema, src_table, shape, wanted))
        published = await (await conn.execute(PUBLISHING, (schema,))).fetchall()
        if published:
            raise Refused(_publishing_reason(published, schema, site))
        for source, q_name, target, src_schema, src_table, shape, wanted in plans:
            ordered = sort_keys(wanted)
            arrays, params = key_arrays(shape, ordered)
            cols = sql.SQL(", ").join(sql.Identifier(c) for c in shape.all_columns)
            src_cols = sql.SQL(", ").join(sql.Identifier("s", c) for c in shape.all_columns)
            width = len(shape.key)
            d_cols = sql.SQL(", ").join(sql.Identifier(f"k{i}") for i in range(width))
            d_key = sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier("d", f"k{i}") for i in range(width)))
            cur = await conn.execute(sql.SQL(
                "INSERT INTO {t} ({cols}, quarantine_tag, quarantine_reason) SELECT {src_cols}, %s, d.why "
                "FROM {s} AS s JOIN unnest({arrays}, %s::text[]) AS d({d_cols}, why) ON {s_key} = {d_key} "
                "ON CONFLICT ({pk}) DO NOTHING").format(
                t=target, cols=cols, src_cols=src_cols, s=sql.Identifier(src_schema, src_table), arrays=arrays,
                d_cols=d_cols, s_key=key_columns(shape, "s"), d_key=d_key,
                pk=sql.SQL(", ").join(sql.Identifier(n) for n in shape.key_names)),
                [tag, *params, [wanted[k] for k in ordered]])
            copied = max(cur.rowcount, 0)
            held = await (await conn.execute(sql.SQL(
                "SELECT {sel} FROM {t} WHERE {k} IN (SELECT * FROM unnest({arrays})) ORDER BY {order}").format(
                sel=key_select(shape), t=target, k=key_columns(shape), arrays=arrays,
                order=sql.SQL(", ").join(sql.Identifier(n) for n in shape.key_names)), params)).fetchall()
            kept.append(KeptTable(source, f"{schema}.{q_name}", len(held), copied,
                                  tuple(sort_keys(tuple(h) for h in held)[:KEYS_LISTED]), len(ordered)))
    return kept


def _publishing_reason(published: list[tuple[Any, ...]], schema: str, site: str) -> str:
    everything = [str(p) for p, all_tables in published if all_tables]
    others = [str(p) for p, all_tables in published if not all_tables]
    parts = []
    if everything:
        parts.append(f"publication {', '.join(everything)} on {site} is FOR ALL TABLES: it would publish the "
                     f"quarantine tables (a schema cannot be excluded from it) and a subscriber that lacks them "
                     "fails; recreate it FOR TABLE with its replicated tables, then prepare again")
    if others:
        parts.append(f"publication {', '.join(others)} on {site} publishes schema {schema}: remove the schema "
                     "from it, then prepare again")
    return "; ".join(parts)


def listing(kept: list[KeptTable], *, schema: str, tag: str | None) -> dict[str, Any]:
    """The result's data: where the rows are and which (for the journal record and the API)."""
    return {"schema": schema, "tag": tag, "rows": sum(k.rows for k in kept), "copied": sum(k.copied for k in kept),
            "tables": [k.to_dict() for k in kept]}


async def quarantine(config: DatabaseConfig, site: str, rows: list[Divergent], *, tag: str,
                     schema: str = DEFAULT_SCHEMA) -> ActionResult:
    """Keep ``rows`` of ``site`` (the old primary) in ``schema`` on its own connection; never raises for
    server errors. ``data`` holds :func:`listing` (or ``error``); ``ok`` False when nothing could be kept.
    """
    other = config.other_site(site)
    t0 = time.perf_counter()
    try:
        tag = clean_tag(tag)
        async with await connect(config.sites[site], statement_timeout=config.promotion.statement_timeout,
                                 writable=True, application_name="failover-engine quarantine") as conn:
            kept = await keep_rows(conn, rows, tag=tag, schema=schema, site=site, other=other,
                                   keys={t.name: t.key_columns for t in config.reconcile.tables})
    except (PgError, psycopg.Error, ValueError) as exc:
        why = describe_pg_error(exc) if isinstance(exc, psycopg.Error) else str(exc)
        step = Step("quarantine", "failed", why, time.perf_counter() - t0)
        return summarize("quarantine", site, [step], data={"schema": schema, "tag": tag, "error": why})
    step = Step("quarantine", "ok" if kept else "skipped", describe(kept, schema, site), time.perf_counter() - t0)
    return summarize("quarantine", site, [step], data=listing(kept, schema=schema, tag=tag))
