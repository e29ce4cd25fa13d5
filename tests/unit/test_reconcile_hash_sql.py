"""The native row hash and key hash expressions (pure SQL text; their behaviour on real data is in
tests/integration/test_pg_reconcile_keys.py)."""

from __future__ import annotations

import re

from psycopg import sql

from actions.reconcile.shape import Column, TableShape, key_hash, row_hash


def col(name: str, base: str = "int4", *, not_null: bool = False, element: str = "", typmod: int = -1,
        collation: str = "") -> Column:
    return Column(name, base, base, element, typmod, not_null, collation)


def text_of(expression: sql.Composable) -> str:
    return expression.as_string(None)


def shape(*columns: Column, key: tuple[Column, ...] | None = None) -> TableShape:
    return TableShape("t", key or (columns[0],), columns, tuple(c.name for c in columns))


def test_the_expression_grows_by_one_step_per_column_whatever_the_columns() -> None:
    """Nullable columns and timestamps would need the chain's seed twice: they are hashed alone and XORed
    in, so the text grows linearly (a doubled seed would make 40 columns 2**40 long)."""
    for kind in ({}, {"base": "timestamptz"}, {"base": "date", "not_null": True}, {"base": "text"}):
        sizes = [len(text_of(row_hash(shape(col("id", not_null=True),
                                            *(col(f"c{i:02d}", **kind) for i in range(n))), "native")))
                 for n in (10, 20, 40)]
        assert sizes[2] - sizes[1] < 2.2 * (sizes[1] - sizes[0]), (kind, sizes)


def test_the_chain_starts_from_a_hash_never_from_a_raw_column() -> None:
    """An int8 step XORs its value into its seed: a raw leading column as the seed would make
    ``(a, b) = (1, 2)`` and ``(2, 1)`` collide; the final re-hash goes through a seed (64 bits kept)."""
    two = text_of(row_hash(shape(col("a", "int4", not_null=True), col("b", "int8", not_null=True)), "native"))
    assert two == 'hashint4extended(0, ("b" # hashint4extended("a", 0::bigint)))'
    nullable_last = text_of(row_hash(shape(col("a", "int8", not_null=True), col("b", "int4")), "native"))
    assert nullable_last.startswith("hashint4extended(0, (coalesce(hashint4extended(\"b\", 2), ")


def test_each_nullable_column_has_its_own_seed_and_null_mark_so_swaps_show() -> None:
    """Two nullable text columns XORed with the same seed would cancel a swap of their values."""
    text = text_of(row_hash(shape(col("id", not_null=True), col("x", "text"), col("y", "text")), "native"))
    assert 'hashtextextended("x", 2)' in text and 'hashtextextended("y", 3)' in text
    marks = re.findall(r" (-?\d{6,})::bigint\)", text)
    assert len(set(marks)) == len(marks) == 2, text


def test_types_hash_exactly_their_identity() -> None:
    """Collatable values under "C"; numeric, arrays, bytea and types whose hash follows ``=`` as text;
    bigint as a seed and times as their binary form (their own hashes fold 64 bits to 32)."""
    columns = (col("id", not_null=True), col("n", "numeric"), col("m", "numeric", typmod=786438, not_null=True),
               col("t", "text", collation="en_US", not_null=True), col("ts", "timestamptz", not_null=True),
               col("b", "bool", not_null=True), col("a", "_int4", element="int4", not_null=True),
               col("j", "jsonb", not_null=True), col("g", "int8", not_null=True), col("y", "bytea", not_null=True))
    text = text_of(row_hash(shape(*columns), "native"))
    for expected in ('hashtextextended("n"::text COLLATE "C", ', 'hashtextextended("m"::text COLLATE "C", ',
                     'hashtextextended("t" COLLATE "C", ', 'hashtextextended(timestamptz_send("ts")::text, ',
                     'hashint4extended("b"::int, ', 'hashtextextended("a"::text COLLATE "C", ',
                     'hashtextextended("j"::text COLLATE "C", ', 'hashint4extended(0, ("g" # ',
                     'hashtextextended("y"::text COLLATE "C", '):
        assert expected in text, expected
    for folded in ("hashint8extended", "hash_numeric_extended", "hash_array_extended", "interval_hash_extended",
                   "timestamp_hash_extended", "time_hash_extended", "hash_record_extended"):
        assert folded not in text


def test_composite_key_hash_seeds_with_a_leading_int_and_ends_hashed() -> None:
    key = (col("tenant", not_null=True), col("seq", "int8", not_null=True))
    assert text_of(key_hash(shape(*key, key=key), "native")) == 'hashint8extended("seq", "tenant"::bigint)'
    single = (col("id", "int8", not_null=True),)
    assert text_of(key_hash(shape(*single, key=single), "native")) == 'hashint8extended("id", 0::bigint)'
