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


def test_a_leading_not_null_int_seeds_the_chain_but_a_lone_column_is_still_hashed() -> None:
    two = text_of(row_hash(shape(col("a", "int8", not_null=True), col("b", "text", not_null=True)), "native"))
    assert two == 'hashtextextended("b", "a"::bigint)'
    alone = text_of(row_hash(shape(col("a", "int8", not_null=True)), "native"))
    assert alone == 'hashint8extended("a", 0::bigint)'
    nullable_first = text_of(row_hash(shape(col("a", "int8"), col("b", "int4", not_null=True)), "native"))
    assert nullable_first.startswith('hashint4extended("b", (coalesce(hashint8extended("a", 1), ')


def test_each_nullable_column_has_its_own_seed_and_null_mark_so_swaps_show() -> None:
    """Two nullable text columns XORed with the same seed would cancel a swap of their values."""
    text = text_of(row_hash(shape(col("id", not_null=True), col("x", "text"), col("y", "text")), "native"))
    assert 'hashtextextended("x", 1)' in text and 'hashtextextended("y", 2)' in text
    marks = re.findall(r" (-?\d{6,})::bigint\)", text)
    assert len(set(marks)) == len(marks) == 2, text


def test_types_hash_exactly_their_identity() -> None:
    """Collatable values under "C", scale-free numerics through text, timestamps as a distance unless
    infinite, bool as an int, arrays of exact types natively, other types as their text."""
    columns = (col("id", not_null=True), col("n", "numeric"), col("m", "numeric", typmod=786438, not_null=True),
               col("t", "text", collation="en_US", not_null=True), col("ts", "timestamptz", not_null=True),
               col("b", "bool", not_null=True), col("a", "_int4", element="int4", not_null=True),
               col("j", "jsonb", not_null=True))
    text = text_of(row_hash(shape(*columns), "native"))
    assert 'hashtextextended("n"::text COLLATE "C", ' in text
    assert 'hash_numeric_extended("m", ' in text
    assert 'hashtextextended("t" COLLATE "C", ' in text
    assert "interval_hash_extended(CASE WHEN isfinite(\"ts\") THEN \"ts\" - TIMESTAMPTZ '2000-01-01" in text
    assert 'hashint4extended("b"::int, ' in text
    assert 'hash_array_extended("a", ' in text
    assert 'hashtextextended("j"::text COLLATE "C", ' in text


def test_composite_key_hash_seeds_with_a_leading_int_and_ends_hashed() -> None:
    key = (col("tenant", not_null=True), col("seq", "int8", not_null=True))
    assert text_of(key_hash(shape(*key, key=key), "native")) == 'hashint8extended("seq", "tenant"::bigint)'
    single = (col("id", "int8", not_null=True),)
    assert text_of(key_hash(shape(*single, key=single), "native")) == 'hashint8extended("id", 0::bigint)'
