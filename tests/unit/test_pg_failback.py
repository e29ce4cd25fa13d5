"""Pure parts of failback preparation: decoding pgoutput into touched keys, explaining differences."""

from __future__ import annotations

import struct
from typing import Any

from actions.database.failback import explain, reconciliation_tables
from actions.database.reverse import Touched, touched_keys


def relation(relid: int, schema: str, name: str, columns: list[str]) -> bytes:
    body = b"R" + struct.pack("!i", relid) + schema.encode() + b"\0" + name.encode() + b"\0d"
    body += struct.pack("!h", len(columns))
    for column in columns:
        body += b"\x01" + column.encode() + b"\0" + struct.pack("!ii", 20, -1)
    return body


def tuple_data(*values: str | None) -> bytes:
    out = struct.pack("!h", len(values))
    for value in values:
        out += b"n" if value is None else b"t" + struct.pack("!i", len(value.encode())) + value.encode()
    return out


def change(kind: str, relid: int, *tuples: tuple[str, tuple[str | None, ...]]) -> bytes:
    return kind.encode() + struct.pack("!i", relid) + b"".join(tag.encode() + tuple_data(*vals) for tag, vals in tuples)


def test_inserts_updates_deletes_and_key_changes_are_all_touched() -> None:
    """Every key a change names counts, the old key of a key-changing update too; other tables are ignored."""
    messages = [b"B" + bytes(20), relation(1, "public", "accounts", ["owner", "id"]),
                relation(2, "public", "other", ["id"]),
                change("I", 1, ("N", ("a", "10"))),
                change("U", 1, ("N", ("b", "3"))),
                change("U", 1, ("K", (None, "5")), ("N", ("c", "6"))),
                change("D", 1, ("K", (None, "4"))),
                change("I", 2, ("N", ("99",))),
                b"C" + bytes(25)]
    touched = touched_keys(messages, {("public", "accounts"): "id"})
    assert touched.complete and touched.changes == 5
    assert touched.keys == {("public", "accounts"): {10, 3, 5, 6, 4}}


def test_an_unknown_or_broken_message_makes_the_decoding_incomplete() -> None:
    """Streamed transactions (or garbage) are not guessed about: the caller treats keys as unexplained."""
    assert not touched_keys([b"S\x00\x00\x00\x01"], {}).complete
    broken = touched_keys([relation(1, "public", "t", ["id"]), b"I\x00\x00\x00\x01N\x00\x01t\x00\x00\x00\x09ab"],
                          {("public", "t"): "id"})
    assert not broken.complete and "undecodable" in broken.note


def table(name: str, diffs: list[tuple[int, str]], **extra: Any) -> dict[str, Any]:
    return {"table": name, "status": "differences", "difference_count": len(diffs), "in_flight": 0,
            "differences": [{"key": k, "kind": kind, "in_flight": False} for k, kind in diffs], **extra}


def test_differences_written_after_promotion_are_explained_the_others_are_not() -> None:
    """A key the slot carries is explained; a row only the old primary has, untouched since, is not."""
    touched = Touched(keys={("public", "orders"): {501, 7}})
    tables = [table("orders", [(7, "changed"), (501, "missing_on_standby"), (480, "missing_on_primary")]),
              {"table": "accounts", "status": "refused", "reason": "no primary key"}]
    explained, unexplained, problems = explain(tables, touched, {"orders": ("public", "orders")}, "azure", "gcp")
    assert explained == 2
    assert unexplained == [{"table": "orders", "key": 480, "kind": "missing_on_primary", "where": "only on gcp"}]
    assert problems == ["accounts not compared (no primary key)"]


def test_rows_the_reconciliation_did_not_list_cannot_be_explained() -> None:
    """More differences than listed, or rows in flight: they are problems, never assumed explained."""
    tables = [table("orders", [(7, "changed")], difference_count=150, in_flight=2)]
    explained, unexplained, problems = explain(tables, Touched(keys={("public", "orders"): {7}}),
                                               {"orders": ("public", "orders")}, "azure", "gcp")
    assert (explained, unexplained) == (1, [])
    assert problems == ["orders: 149 differing rows not listed", "orders: 2 row(s) in flight not listed"]


def test_row_details_are_read_from_a_result_a_dict_or_not_at_all() -> None:
    """A summary-only reconciliation (identical + sentence) has no row details: failback compares itself."""
    class Summary:
        identical, sentence = False, "differs"

    class WithData:
        identical, sentence, data = False, "differs", {"tables": [table("orders", [])]}

    assert reconciliation_tables(Summary()) is None
    assert reconciliation_tables(WithData()) == [table("orders", [])]
    assert reconciliation_tables({"error": "gcp unreachable", "tables": []}) is None
