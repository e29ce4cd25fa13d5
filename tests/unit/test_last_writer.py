"""Last writer wins at failback: which version of a row wins, what is said about it, and its config rule."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from actions.database.last_writer import LwwTable, judge
from actions.database.reverse import Touched
from actions.reconcile.plan import key_json, key_text
from actions.reconcile.shape import Column, TableShape
from engine.config.database import ReconcileTable
from engine.core.last_writer import Judged, Verdict, Versions, column_problem, describe, identity_problem, settle

T1 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T2 = T1 + datetime.timedelta(microseconds=1)


def verdict(old_at: object, new_exists: bool, new_at: object, written_since: bool = False,
            same: bool = False) -> Verdict:
    return settle(Versions(old_at, new_exists, new_at, written_since, same), column="updated_at", old="gcp",
                  new="azure")


def test_the_later_version_wins_by_the_declared_column() -> None:
    """Old later by a microsecond: written onto the new primary; new later or equal: the new one stays."""
    assert verdict(T2, True, T1) == Verdict("update", f"updated_at later on gcp ({T2} > {T1})")
    assert verdict(T1, True, T2, written_since=True).action == "keep_new"  # the stream carries the new one
    assert verdict(T1, True, T1, written_since=True).why == f"updated_at equal on azure ({T1} vs {T1} on gcp)"


def test_a_new_version_the_stream_would_not_carry_is_copied_onto_the_old_primary() -> None:
    """Kept new, but not written since promotion: nothing would bring it to the old primary, so it is copied."""
    assert verdict(T1, True, T2) == Verdict("copy_new", f"updated_at later on azure ({T2} vs {T1} on gcp); copied "
                                            "onto gcp (not written on azure since promotion, so the reverse stream "
                                            "would not carry it)")
    assert verdict(None, True, T1).action == verdict(T1, True, T1).action == "copy_new"


def test_a_row_only_on_the_old_primary_is_restored_unless_the_new_one_deleted_it() -> None:
    """A write lost at failover is the last one (inserted); a delete after promotion is later than it (kept)."""
    assert verdict(T1, False, None) == Verdict(
        "insert", "only on gcp and not written on azure since promotion: a write lost at failover, the last one")
    assert verdict(None, False, None).action == "insert"
    assert verdict(T2, False, None, written_since=True) == Verdict(
        "keep_new", "deleted on azure after promotion: the delete is the later write")


def test_a_null_gives_no_order_and_the_same_version_is_already_there() -> None:
    """NULL on either side keeps the new version; a row equal to the old version is present (a re-run)."""
    assert verdict(None, True, T1, written_since=True).why == \
        "updated_at is NULL on gcp: no order between the versions, azure's stays"
    assert verdict(T1, True, None, written_since=True).action == "keep_new"
    assert verdict(T2, True, T2, written_since=True, same=True).action == "present"


stamps = st.none() | st.datetimes(min_value=datetime.datetime(2020, 1, 1), max_value=datetime.datetime(2030, 1, 1),
                                  timezones=st.just(datetime.UTC))


@given(old_at=stamps, new_exists=st.booleans(), new_at=stamps, written_since=st.booleans(), same=st.booleans())
def test_the_old_version_is_written_only_when_it_is_the_last_write(old_at: datetime.datetime | None,
                                                                   new_exists: bool, new_at: datetime.datetime | None,
                                                                   written_since: bool, same: bool) -> None:
    """Applied iff the old one is strictly later than an existing new version, or the row was lost and not
    deleted since; never over an identical, newer, equal or undated new version; a kept new version the
    stream would not carry is copied onto the old primary."""
    got = verdict(old_at, new_exists, new_at if new_exists else None, written_since, same)
    if new_exists:
        later = old_at is not None and new_at is not None and old_at > new_at
        assert got.applied == (later and not same)
        assert got.action in (("update",) if got.applied else ("keep_new", "copy_new", "present"))
        assert (got.action == "copy_new") == (not same and not later and not written_since)
    else:
        assert got.applied == (not written_since) and got.action in ("insert", "keep_new")


def test_a_column_that_cannot_order_writes_is_named_with_its_table_and_site() -> None:
    """Absent, or not a timestamp, timestamptz or date: one sentence each; those three are fine."""
    assert column_problem("docs", "gcp", "changed_at", None) == \
        "table docs on gcp: last_writer_wins column changed_at not found"
    assert column_problem("docs", "azure", "v", "int8") == \
        "table docs on azure: last_writer_wins column v is int8, not a timestamp, timestamptz or date"
    assert [column_problem("t", "s", "c", b) for b in ("timestamp", "timestamptz", "date")] == [None] * 3


def test_a_key_the_replica_identity_does_not_cover_is_refused_saying_how_to_fix_it() -> None:
    """Key ``code`` under the default identity (primary key ``id``): named, with the ALTER TABLE to run; an
    identity index on the key, a composite identity containing it, or FULL are fine."""
    problem = identity_problem("coded", "azure", ("code",), "d", ["id"])
    assert problem == ("table coded on azure: the key (code) is not covered by the replica identity (default (the "
                       "primary key): id), so a changed or deleted key cannot be told from the reverse slot: "
                       "ALTER TABLE coded REPLICA IDENTITY USING INDEX <the key's unique index> (or FULL)")
    assert "(nothing)" in str(identity_problem("coded", "azure", ("id",), "n", []))
    assert identity_problem("coded", "azure", ("code",), "i", ["code"]) is None
    assert identity_problem("coded", "azure", ("id",), "d", ["region", "id"]) is None
    assert identity_problem("coded", "azure", ("code",), "f", []) is None


def test_the_record_and_the_sentence_say_what_was_applied_kept_and_why() -> None:
    """Counts per outcome, each row with why; a planned write the compare-and-set skipped counts as kept new."""
    rows = ((("a",), Verdict("update", "later on gcp")), (("b",), Verdict("insert", "lost")),
            (("c",), Verdict("keep_new", "deleted")), (("d",), Verdict("present", "there")))
    judged = Judged("docs", "updated_at", rows, frozenset({("a",)}))
    record = judged.to_dict(key_json, limit=3)
    assert {k: record[k] for k in ("applied", "kept_new", "present", "applied_keys", "kept_new_keys",
                                   "rows_truncated")} == {
        "applied": 1, "kept_new": 2, "present": 1, "applied_keys": ["a"], "kept_new_keys": ["b", "c"],
        "rows_truncated": True}
    assert record["rows"][:2] == [{"key": "a", "outcome": "applied", "why": "later on gcp"},
                                  {"key": "b", "outcome": "kept_new",
                                   "why": "lost; but a newer version was written meanwhile"}]
    pair = Judged("lines", "at", (((1, "x"), Verdict("insert", "lost")),), frozenset({(1, "x")}))
    assert describe([judged, pair], key_text, "azure") == (
        "docs by updated_at: applied on azure 1 (a), kept new 2 (b, c), already there 1 (d); "
        "lines by at: applied on azure 1 ((1, 'x'))")
    assert describe([], key_text, "azure") == "no table resolves conflicts by last writer"


def test_last_writer_wins_needs_the_declared_timestamp_column() -> None:
    """Without updated_at the policy has nothing to order by: refused at updated_at, with the reason."""
    with pytest.raises(ValidationError, match="updated_at: conflict last_writer_wins needs the timestamp column"):
        ReconcileTable(name="docs", conflict="last_writer_wins")
    table = ReconcileTable(name="docs", key=["region", "name"], conflict="last_writer_wins", updated_at="changed_at")
    assert table.conflict == "last_writer_wins" and table.key_columns == ["region", "name"]


def test_quarantined_rows_are_judged_against_the_new_primary_and_the_slots_composite_keys() -> None:
    """Key tuples from the quarantine meet the slot's normalised keys: deleted since, lost, later, re-run."""
    key = (Column("region", "integer", "int4", "", -1, True, ""), Column("name", "text", "text", "", -1, True, "C"))
    shape = TableShape("lines", key, key, ("name", "qty", "region", "updated_at"))
    table = LwwTable("lines", ("public", "lines"), "updated_at", shape, ("name", "qty", "region", "updated_at"),
                     ("qty", "updated_at"), False)
    old_rows = {(1, "gone"): (T2, "(gone,1,1,t2)", "{}"), (1, "lost"): (T1, "(lost,1,1,t1)", "{}"),
                (2, "later"): (T2, "(later,2,2,t2)", "{}"), (3, "done"): (T2, "(done,3,3,t2)", "{}")}
    new_rows = {(2, "later"): (T1, "(later,9,2,t1)"), (3, "done"): (T2, "(done,3,3,t2)")}
    touched = Touched(keys={("public", "lines"): {(1, "gone"), (3, "done")}})
    verdicts = judge(table, old_rows, new_rows, touched, old="gcp", new_primary="azure")
    assert [(k, v.action) for k, v in verdicts] == [((1, "gone"), "keep_new"), ((1, "lost"), "insert"),
                                                    ((2, "later"), "update"), ((3, "done"), "present")]
