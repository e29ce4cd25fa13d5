"""What reconciliation needs to know about a table on one server: its key, its columns, its row hash.

**Key.** The configured ``key`` columns, or else the primary key read from the catalog. A
configured key must be the primary key or the columns of a valid, non-partial unique index whose
columns are all ``NOT NULL`` (a unique index lets many rows share NULL: they could not be matched).
A table with neither is refused with the reason. Any key type works: integers are carried as
Python ints, every other type as its text form and cast back to the column's type in SQL, so
uuid, text, numeric, dates, timestamps and composite keys need no per-type code.

**Row hash** (``native``, both servers share a major version >= 14): the columns' own extended hash
functions (the ones PostgreSQL's hash indexes use), *chained* through their 64-bit seed, columns by
name: ``h = f_n(c_n, ... f_2(c_2, f_1(c_1, 0)))``. Each step hashes everything before it, so the result is
non-linear: a plain sum over rows sees two rows that swapped a column's values. A step must use
its seed once (a seed written twice doubles the expression per column), so a nullable column is
hashed *alone* with its position as seed, a NULL being a fixed 64-bit mark of its own per position
(NULL and ``''`` differ), and XORed into the chain; a chain that ends on such a step is hashed once
more (through the seed of ``hashint4extended``, which keeps all 64 bits). Chaining costs a function
call or two per column; the former ``hash_record_extended(ROW(...))`` built and took apart a record
per row, which cost about twice as much (1M rows of 21 int columns: 376 ms vs 714 ms of backend CPU).

Comparison must be *exact*: a function is chained only where it hashes every bit of the value and
its ``=`` is identity (:data:`CHAIN`). ``int8`` is the seed of a fixed hash (``hashint8extended``
folds 64 bits to 32: ``0`` and ``4294967297`` hash alike), ``bool`` its integer, times (timestamps,
dates, time, timetz) their binary form, infinities included (:data:`SEND`; their native hashes fold
to 32 bits too). Everything else goes through its canonical text form (:data:`CANONICAL_SETTINGS`:
UTC, ISO dates, every float digit, hex bytea), which is exact: ``numeric`` (its hash ignores the
sign and the scale), arrays (their hash ignores the seed when empty, and dimensions), ``bytea``,
``float`` (``-0 = 0``), ``jsonb`` numbers, ``interval`` (``'1 day' = '24 hours'``), ``enum`` (its
hash is its OID, different on every server) and every type without a hash function.

**Row hash** (``portable``, different majors, or forced): the low 60 bits of ``md5`` of the row's
canonical text form, the columns in one agreed order (by name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from probes.postgres_conn import Refused

HashMode = Literal["native", "portable"]
INT_TYPES = frozenset({"int2", "int4", "int8"})
CANONICAL_SETTINGS = ("SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET IntervalStyle = 'postgres'",
                      "SET extra_float_digits = 3", "SET bytea_output = 'hex'")

COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), b.typname, coalesce(e.typname, ''), a.atttypmod,
       a.attnotnull, coalesce(co.collname, '')
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type e ON e.oid = b.typelem AND b.typcategory = 'A'
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""
UNIQUE_KEYS = """
SELECT i.indisprimary, array_agg(a.attname::text ORDER BY k.ord)
FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
  AND i.indexprs IS NULL AND k.ord <= i.indnkeyatts
GROUP BY i.indexrelid, i.indisprimary ORDER BY i.indisprimary DESC, i.indexrelid
"""


@dataclass(frozen=True, slots=True)
class Column:
    """One column as the catalog describes it."""

    name: str
    type: str          # format_type(): the SQL spelling, e.g. ``numeric(12,2)``, ``text[]``
    base: str          # base type name (domains resolved), e.g. ``numeric``, ``_int4``
    element: str       # element type name of an array, else ''
    typmod: int
    not_null: bool
    collation: str

    @property
    def is_int(self) -> bool:
        return self.base in INT_TYPES


@dataclass(frozen=True, slots=True)
class TableShape:
    """What reconciliation needs to know about a table on one server."""

    name: str
    key: tuple[Column, ...]
    columns: tuple[Column, ...]      # compared columns (chosen or all but excluded), by name; key included
    all_columns: tuple[str, ...]     # every column of the table, by name
    key_source: str = "primary key"

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.key)


def _norm(key: str | list[str] | None) -> tuple[str, ...] | None:
    if key is None:
        return None
    return (key,) if isinstance(key, str) else tuple(key)


async def inspect_table(conn: psycopg.AsyncConnection[Any], table: str, key: str | list[str] | None, where: str, *,
                        columns: list[str] | None = None, exclude: list[str] | None = None) -> TableShape:
    """Key and columns of ``table`` on one server; raises :class:`Refused` with the reason."""
    try:
        row = await (await conn.execute("SELECT to_regclass(%s)", (table,))).fetchone()
    except psycopg.Error as exc:
        raise Refused(f"table {table}: {exc}") from None
    if row is None or row[0] is None:
        raise Refused(f"table {table} not found on {where}")
    described = {str(r[0]): Column(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), bool(r[5]), str(r[6]))
                 for r in await (await conn.execute(COLUMNS, (table,))).fetchall()}
    uniques = [(bool(p), tuple(str(c) for c in cols)) for p, cols in
               await (await conn.execute(UNIQUE_KEYS, (table,))).fetchall()]
    wanted = _norm(key)
    key_names, source = resolve_key(table, where, wanted, uniques, described)
    chosen = choose_columns(table, where, described, key_names, columns, exclude)
    return TableShape(table, tuple(described[n] for n in key_names), tuple(described[n] for n in chosen),
                      tuple(sorted(described)), source)


def resolve_key(table: str, where: str, wanted: tuple[str, ...] | None, uniques: list[tuple[bool, tuple[str, ...]]],
                described: dict[str, Column]) -> tuple[tuple[str, ...], str]:
    """Pure: the key columns to match rows on, and where they come from; raises :class:`Refused`."""
    primary = next((cols for is_pk, cols in uniques if is_pk), None)
    if wanted is None:
        if primary is None:
            raise Refused(f"table {table} on {where} has no primary key: rows cannot be matched "
                          "(declare `key` with the columns of a unique index whose columns are NOT NULL)")
        return primary, "primary key"
    missing = [c for c in wanted if c not in described]
    if missing:
        raise Refused(f"table {table} on {where}: key column {', '.join(missing)} not found")
    if primary is not None and set(wanted) == set(primary):
        return wanted, "primary key"
    if not any(set(cols) == set(wanted) for _, cols in uniques):
        pk = f" (primary key: {', '.join(primary)})" if primary else ""
        raise Refused(f"table {table} on {where}: configured key {', '.join(wanted)} is not the primary key nor "
                      f"a unique index{pk}")
    nullable = [c for c in wanted if not described[c].not_null]
    if nullable:
        raise Refused(f"table {table} on {where}: key column {', '.join(nullable)} may be NULL: a unique index "
                      "lets many rows share NULL, so rows cannot be matched (make it NOT NULL)")
    return wanted, "unique index"


def choose_columns(table: str, where: str, described: dict[str, Column], key: tuple[str, ...],
                   columns: list[str] | None, exclude: list[str] | None) -> list[str]:
    """Pure: the compared columns, by name: ``columns`` (or all) minus ``exclude``; the key always."""
    for label, names in (("column", columns or []), ("excluded column", exclude or [])):
        unknown = [n for n in names if n not in described]
        if unknown:
            raise Refused(f"table {table} on {where}: {label} {', '.join(unknown)} not found")
    excluded_key = [n for n in exclude or [] if n in key]
    if excluded_key:
        raise Refused(f"table {table}: key column {', '.join(excluded_key)} cannot be excluded")
    chosen = set(columns if columns is not None else described) - set(exclude or [])
    return sorted(chosen | set(key))


def agree(primary: TableShape, standby: TableShape, primary_site: str, standby_site: str) -> list[str]:
    """Refuse when the two sides do not have the same key and compared columns; return notes
    (differences that do not stop the comparison, e.g. a key collation that differs)."""
    if primary.key_names != standby.key_names:
        raise Refused(f"table {primary.name}: key ({', '.join(primary.key_names)}) on {primary_site} "
                      f"but ({', '.join(standby.key_names)}) on {standby_site}")
    left = {(c.name, c.type) for c in primary.columns}
    right = {(c.name, c.type) for c in standby.columns}
    if left != right:
        only_left = ", ".join(f"{n} {t}" for n, t in sorted(left - right)) or "-"
        only_right = ", ".join(f"{n} {t}" for n, t in sorted(right - left)) or "-"
        raise Refused(f"table {primary.name}: compared columns differ (only on {primary_site}: {only_left}; "
                      f"only on {standby_site}: {only_right})")
    notes = []
    for a, b in zip(primary.key, standby.key, strict=True):
        if a.collation != b.collation:
            notes.append(f"key column {a.name} collates as {a.collation or '-'} on {primary_site} and "
                         f"{b.collation or '-'} on {standby_site}: still exact, but ranges match less often")
    return notes


def key_expr(column: Column, value: sql.Composable) -> sql.Composable:
    """A key column's ``value`` as keys travel (the reconciliation, the quarantine, the decoded slot):
    an int as an int, a numeric as ``trim_scale(value)::text`` (``1.0`` and ``1.00`` are one key by
    ``=``: one text form for both), every other type as its text."""
    if column.is_int:
        return value
    if column.base == "numeric":
        return sql.SQL("trim_scale({})::text").format(value)
    return sql.SQL("{}::text").format(value)


def row_hash(shape: TableShape, mode: HashMode) -> sql.Composable:
    """The per-row hash expression (a bigint) over the compared columns (module docstring). Every
    collatable value is hashed under ``COLLATE "C"``: a nondeterministic collation's hash follows its
    ``=`` (``'Alice'`` and ``'alice'`` alike under a case-insensitive one), the bytes must decide."""
    if mode == "portable":
        return _md5(shape.columns)
    expression: sql.Composable = sql.SQL("0::bigint")  # not a raw column: int8 steps XOR their value in
    mixed = False  # the last step was an XOR: re-hash at the end
    for position, column in enumerate(shape.columns, start=1):
        name = sql.Identifier(column.name)
        if column.not_null:
            expression, mixed = _hash(column, name, expression), False
        else:  # coalesce would need the seed twice: hash alone (own seed, own NULL mark), XOR it into the chain
            alone = sql.SQL("coalesce({}, {}::bigint)").format(_hash(column, name, sql.Literal(position)),
                                                                sql.Literal(_null_mark(position)))
            expression, mixed = sql.SQL("({} # {})").format(alone, expression), True
    return sql.SQL("hashint4extended(0, {})").format(expression) if mixed else expression  # the seed keeps 64 bits


def _md5(columns: tuple[Column, ...]) -> sql.Composable:
    """Portable hash (row or key): the low 60 bits of md5 of the columns' text form as a record."""
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    return sql.SQL("('x' || left(md5(ROW({})::text), 15))::bit(60)::bigint").format(cols)


def _first_as_seed(columns: tuple[Column, ...]) -> tuple[sql.Composable, tuple[Column, ...]]:
    """Key hash: the seed the chain starts from and the columns left to chain: a leading integer key
    column is the seed itself (one hash call less per row), unless it is the only column (its raw
    value is no hash). Not for the row hash: an ``int8`` step XORs its value into its seed, and two
    raw values XORed (``(1, 2)`` and ``(2, 1)``) would collide."""
    first = columns[0]
    if len(columns) > 1 and first.is_int and first.not_null:
        return sql.SQL("{}::bigint").format(sql.Identifier(first.name)), columns[1:]
    return sql.SQL("0::bigint"), columns


def _null_mark(position: int) -> int:
    """A NULL in column ``position``: a fixed 64-bit value of its own per position (signed)."""
    value = (0x9E3779B97F4A7C15 * position) & 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= 1 << 63 else value


# Native extended hash functions chained as ``f(value, seed)``: their ``=`` is identity for these types
# and they hash every bit of the value (``hashint8extended`` folds 64 bits to 32, ``hash_numeric_extended``
# ignores the sign and hashes 0 and NaN without mixing, ``hash_array_extended`` ignores the seed for
# an empty array: none of those is used).
CHAIN = {"int2": "hashint2extended", "int4": "hashint4extended", "oid": "hashoidextended",
         "name": "hashnameextended", "char": "hashcharextended", "text": "hashtextextended",
         "varchar": "hashtextextended", "bpchar": "hashbpcharextended", "uuid": "uuid_hash_extended",
         "inet": "hashinetextended", "cidr": "hashinetextended", "macaddr": "hashmacaddrextended",
         "macaddr8": "hashmacaddr8extended"}
# Times hash their binary form (every bit, infinities included) as hex text.
SEND = {"timestamptz": "timestamptz_send", "timestamp": "timestamp_send", "date": "date_send",
        "time": "time_send", "timetz": "timetz_send"}


def _hash(column: Column, name: sql.Composable, seed: sql.Composable) -> sql.Composable:
    """One column's value hashed with ``seed`` (which appears once); NULL when the value is NULL.
    Numeric, arrays, bytea and every type whose hash follows ``=`` (not in :data:`CHAIN`, :data:`SEND`):
    the canonical text form, which is exact."""
    if column.element or column.base not in (*CHAIN, *SEND, "int8", "bool"):
        return sql.SQL('hashtextextended({}::text COLLATE "C", {})').format(name, seed)
    if column.base == "int8":  # the value as the seed: all 64 bits count
        return sql.SQL("hashint4extended(0, ({} # {}))").format(name, seed)
    if column.base == "bool":
        return sql.SQL("hashint4extended({}::int, {})").format(name, seed)
    if column.base in SEND:
        return sql.SQL("hashtextextended({}({})::text, {})").format(sql.SQL(SEND[column.base]), name, seed)
    collated = sql.SQL('{} COLLATE "C"').format(name) if column.collation else name
    return sql.SQL("{}({}, {})").format(sql.SQL(CHAIN[column.base]), collated, seed)


# The key's own hash: which rows share a hash class in the hashed scan (:mod:`actions.reconcile.bisect`).
# It must follow ``=`` on the key (equal keys, equal hashes) and be the same on both servers; the
# type's own extended hash function does both (under the column's own collation). Any other type is
# hashed through its canonical text form (an enum's label, not its OID, which differs per server).
# Chained through the seed for composite keys. A collision only puts two keys in one class, so the
# hashes the row hash must avoid (int8's 32-bit fold, numeric's sign) serve here.
KEY_HASH = {**CHAIN, "int8": "hashint8extended", "numeric": "hash_numeric_extended"}


def key_hash(shape: TableShape, mode: HashMode) -> sql.Composable:
    """A bigint hash of the key columns only (see :data:`KEY_HASH`)."""
    if mode == "portable":
        return _md5(shape.key)
    expression, key = _first_as_seed(shape.key)
    for column in key:
        name = sql.Identifier(column.name)
        if column.element or column.base not in KEY_HASH:
            expression = sql.SQL('hashtextextended({}::text COLLATE "C", {})').format(name, expression)
        else:
            expression = sql.SQL("{}({}, {})").format(sql.SQL(KEY_HASH[column.base]), name, expression)
    return expression
