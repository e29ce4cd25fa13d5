"""Pure parts of failback preparation: decoding pgoutput into touched keys, explaining differences."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from actions.database.failback_plan import explain, listed_partly, reconciliation_tables
from actions.database.quarantine import (
    KeptTable,
    clean_tag,
    describe,
    divergent_rows,
    promotion_tag,
    quarantine_table_name,
)
from actions.database.reverse import Touched, key_form, normalised_ints, touched_keys


def relation(relid: int, schema: str, name: str, columns: list[str], identity: list[str] | None = None,
             kind: str = "d") -> bytes:
    """A relation message; ``identity``: the columns flagged as the replica identity (default: all)."""
    body = b"R" + struct.pack("!i", relid) + schema.encode() + b"\0" + name.encode() + b"\0" + kind.encode()
    body += struct.pack("!h", len(columns))
    for column in columns:
        flag = b"\x01" if identity is None or column in identity else b"\x00"
        body += flag + column.encode() + b"\0" + struct.pack("!ii", 20, -1)
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
    touched = touched_keys(messages, {("public", "accounts"): ("id",)})
    assert touched.complete and touched.changes == 5
    assert touched.raw == {("public", "accounts"): {("10",), ("3",), ("5",), ("6",), ("4",)}}
    assert normalised_ints(touched.raw[("public", "accounts")]) == {10, 3, 5, 6, 4}


def test_a_composite_key_is_decoded_in_the_key_order_not_the_column_order() -> None:
    """Key (region, name) of a table whose columns run name, v, region: each change gives one tuple."""
    messages = [relation(7, "sales", "lines", ["name", "v", "region"]),
                change("I", 7, ("N", ("a", "1", "3"))),
                change("D", 7, ("K", ("b", None, "4"))),
                change("U", 7, ("K", ("c", None, "5")), ("N", ("d", "2", "5")))]
    touched = touched_keys(messages, {("sales", "lines"): ("region", "name")})
    assert touched.complete
    assert touched.raw == {("sales", "lines"): {("3", "a"), ("4", "b"), ("5", "c"), ("5", "d")}}
    assert touched.decoded == {("sales", "lines")}
    assert normalised_ints({("3", "7")}) == {(3, 7)} and normalised_ints({("42",)}) == {42}
    assert key_form(["x"]) == "x" and key_form([1, "x"]) == (1, "x")


def test_a_change_without_its_key_values_makes_the_decoding_incomplete_naming_the_table() -> None:
    """A delete that carries only the replica identity, not the configured key: never guessed."""
    messages = [relation(7, "public", "docs", ["id", "code"]), change("D", 7, ("K", ("1", None)))]
    touched = touched_keys(messages, {("public", "docs"): ("code",)})
    assert not touched.complete and "a change of public.docs without its key values" in touched.note


def test_an_update_of_a_table_whose_key_is_not_its_replica_identity_makes_the_decoding_incomplete() -> None:
    """Key ``code``, identity ``id``: an update sends only the new code, so the old one would go unseen; inserts
    are fine, and the note names the table and the fix."""
    rel = relation(7, "public", "coded", ["id", "code"], identity=["id"])
    inserted = touched_keys([rel, change("I", 7, ("N", ("1", "c1")))], {("public", "coded"): ("code",)})
    assert inserted.complete and inserted.raw == {("public", "coded"): {("c1",)}}
    updated = touched_keys([rel, change("U", 7, ("N", ("1", "c2")))], {("public", "coded"): ("code",)})
    assert not updated.complete and "table public.coded: an update or delete on it names only its replica " \
        "identity" in updated.note and "REPLICA IDENTITY USING INDEX" in updated.note
    by_index = relation(7, "public", "coded", ["id", "code"], identity=["code"], kind="i")
    full = relation(7, "public", "coded", ["id", "code"], identity=[], kind="f")
    for covered in (by_index, full):
        ok = touched_keys([covered, change("U", 7, ("K", (None, "c1")), ("N", ("1", "c2")))],
                          {("public", "coded"): ("code",)})
        assert ok.complete and ok.raw == {("public", "coded"): {("c1",), ("c2",)}}


def test_an_unknown_or_broken_message_makes_the_decoding_incomplete() -> None:
    """Streamed transactions (or garbage) are not guessed about: the caller treats keys as unexplained."""
    assert not touched_keys([b"S\x00\x00\x00\x01"], {}).complete
    broken = touched_keys([relation(1, "public", "t", ["id"]), b"I\x00\x00\x00\x01N\x00\x01t\x00\x00\x00\x09ab"],
                          {("public", "t"): ("id",)})
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


def test_the_rows_to_quarantine_are_those_the_old_primary_holds_differently_or_alone() -> None:
    """Only-on-old and changed rows are kept, with why; a row the old primary lacks has nothing to keep."""
    tables = [table("accounts", [(3, "changed"), (4, "missing_on_primary"), (9, "missing_on_standby"),
                                 (500, "missing_on_primary"), (2, "changed")]),
              {"table": "orders", "status": "refused", "reason": "no primary key"}]
    rows = divergent_rows(tables, old="gcp", new_primary="azure", explained=lambda t, k: k in (3, 4))
    assert [(r.table, r.key) for r in rows] == [("accounts", 3), ("accounts", 4), ("accounts", 500), ("accounts", 2)]
    why = {r.key: r.reason for r in rows}
    assert why[3] == "differs from azure: written there after promotion (the reverse stream overwrites it)"
    assert why[4] == "only on gcp: deleted on azure after promotion (the reverse stream deletes it)"
    assert why[500] == "only on gcp: not on azure and not written there since promotion (a write lost at failover)"
    assert why[2] == "differs from azure: not written there since promotion (a change lost at failover)"
    assert divergent_rows([table("t", [(1, "missing_on_standby")])], old="gcp", new_primary="azure") == []


def test_quarantine_names_fit_postgres_and_stay_distinct() -> None:
    """Names carry the source and the tag, stay within 63 bytes, and two long sources never collide."""
    assert quarantine_table_name("public", "accounts", "azure_0_3000a28") == "accounts__azure_0_3000a28"
    assert quarantine_table_name("billing", "accounts", "t") == "billing_accounts__t"
    long_a = quarantine_table_name("public", "x" * 60 + "a", "azure_0_3000a28")
    long_b = quarantine_table_name("public", "x" * 60 + "b", "azure_0_3000a28")
    assert long_a != long_b and long_a.endswith("__azure_0_3000a28")
    assert max(len(long_a.encode()), len(long_b.encode())) <= 63
    accented = quarantine_table_name("public", "é" * 40, "t" * 40)
    assert len(accented.encode()) <= 63 and accented.endswith("__" + "t" * 40)


def test_tags_are_cleaned_and_bounded() -> None:
    """A tag is part of a table name: lower case, letters, digits and underscores, at most 40 characters."""
    assert promotion_tag("Azure-West", "0/3000A28") == "azure_west_0_3000a28"
    assert clean_tag("Incident 42!") == "incident_42"
    with pytest.raises(ValueError, match="no letter or digit"):
        clean_tag("--")
    with pytest.raises(ValueError, match="longer than 40"):
        clean_tag("x" * 41)


def test_a_partly_listed_table_is_noticed_and_the_sentence_names_what_was_kept() -> None:
    """More differing rows counted than listed means the keys must be listed again before quarantining."""
    assert listed_partly([table("orders", [(7, "changed")], difference_count=150)])
    assert not listed_partly([table("orders", [(7, "changed")]),
                              {"table": "accounts", "status": "refused", "difference_count": 3}])
    kept = [KeptTable("public.orders", "q.orders__t", 12, 2, tuple((i,) for i in range(12)), 13)]
    assert describe(kept, "q", "gcp") == ("kept 12 rows of gcp in schema q: orders__t 12 (keys 0, 1, 2, 3, 4, 5, "
                                          "6, 7, 8, 9 and 2 more; 10 kept earlier, 1 no longer on gcp)")
    assert describe([], "q", "gcp") == "no row of gcp to keep"


def test_the_default_failback_conflict_policy_keeps_the_new_version() -> None:
    """Unless a table says keep_both, a row written on the new primary after promotion is not quarantined."""
    from engine.config.database import ReconcileTable

    assert ReconcileTable(name="accounts").conflict == "keep_new"
