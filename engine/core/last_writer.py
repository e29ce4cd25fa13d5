"""Pure: at failback, which version of a differing row wins under ``conflict: last_writer_wins``.

After a failover the old primary may hold versions of rows that the new primary lacks or holds
differently (the reconciliation's ``changed`` and ``missing_on_primary`` rows, kept in the
quarantine first). A table configured ``last_writer_wins`` declares a timestamp column that every
write sets (``updated_at``); the version with the later value is the last write and wins. The
winner is judged from the **current** state of the new primary (so a re-run after a crash judges
again from what is there, never from a stale listing) and the old version as the quarantine kept
it (the first copy, taken before anything could overwrite it):

| new primary now            | written there since promotion | old vs new by the column    | action    |
|----------------------------|-------------------------------|-----------------------------|-----------|
| holds exactly the old one  | any                           | -                           | present   |
| lacks the row              | yes (deleted after promotion) | -                           | keep_new  |
| lacks the row              | no (a write lost at failover) | -                           | insert    |
| holds another version      | any                           | old later                   | update    |
| holds another version      | yes                           | equal, new later, or a NULL | keep_new  |
| holds another version      | no                            | equal, new later, or a NULL | copy_new  |

``insert`` and ``update`` write the old version onto the new primary with a compare-and-set (the
row is written only while the new primary's version is still older, or absent), so the reverse
stream carries it back to the old primary and a version that became newer meanwhile is never
overwritten. ``keep_new`` leaves the new version to the reverse stream, which carries every row
written since promotion; ``copy_new`` keeps it too, but the stream would never carry a row the new
primary did not write since promotion, so its version is copied onto the old primary (else the two
would stay apart). A delete carries no timestamp: a row deleted on the new primary after promotion stays
deleted (the delete came after the promotion, so after every write the old primary could have
made before it). A NULL on either side gives no order: the new version stays (the old one is in
the quarantine). Rows only on the new primary are not judged here (the old primary holds nothing
to weigh against them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["insert", "update", "keep_new", "copy_new", "present"]
APPLIED: frozenset[Action] = frozenset({"insert", "update"})
TIMESTAMP_TYPES = frozenset({"timestamp", "timestamptz", "date"})
KEYS_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Versions:
    """What is known about one differing row. ``old_at`` / ``new_at``: the declared column's value
    (``None`` for NULL; ``new_at`` is meaningless when ``new_exists`` is False)."""

    old_at: Any
    new_exists: bool
    new_at: Any
    written_since: bool  # the new primary wrote this key after promotion (the reverse slot says so)
    same: bool           # the new primary holds exactly the old version


@dataclass(frozen=True, slots=True)
class Verdict:
    """The action for one row and why, in words."""

    action: Action
    why: str

    @property
    def applied(self) -> bool:
        return self.action in APPLIED


def settle(v: Versions, *, column: str, old: str, new: str) -> Verdict:
    """The table of the module docstring."""
    if v.new_exists and v.same:
        return Verdict("present", f"{new} already holds {old}'s version (written by an earlier run, or alike)")
    if not v.new_exists:
        if v.written_since:
            return Verdict("keep_new", f"deleted on {new} after promotion: the delete is the later write")
        return Verdict("insert", f"only on {old} and not written on {new} since promotion: a write lost at "
                                 "failover, the last one")
    if v.old_at is not None and v.new_at is not None and v.old_at > v.new_at:
        return Verdict("update", f"{column} later on {old} ({v.old_at} > {v.new_at})")
    if v.old_at is None or v.new_at is None:
        side = old if v.old_at is None else new
        why = f"{column} is NULL on {side}: no order between the versions, {new}'s stays"
    else:
        word = "equal" if v.old_at == v.new_at else "later"
        why = f"{column} {word} on {new} ({v.new_at} vs {v.old_at} on {old})"
    if v.written_since:
        return Verdict("keep_new", why)
    return Verdict("copy_new", f"{why}; copied onto {old} (not written on {new} since promotion, so the "
                               "reverse stream would not carry it)")


def column_problem(table: str, site: str, column: str, base: str | None) -> str | None:
    """Pure: why ``column`` (of base type ``base``, None when absent) cannot order writes, or None."""
    if base is None:
        return f"table {table} on {site}: last_writer_wins column {column} not found"
    if base not in TIMESTAMP_TYPES:
        return (f"table {table} on {site}: last_writer_wins column {column} is {base}, not a timestamp, "
                "timestamptz or date")
    return None


IDENTITY_KINDS = {"d": "default (the primary key)", "i": "an index", "n": "nothing", "f": "full"}


def identity_problem(table: str, site: str, key: tuple[str, ...], kind: str, identity: Iterable[str]) -> str | None:
    """Pure: why the reverse slot of ``site`` cannot tell which keys were written on ``table``, or None.

    ``kind`` is ``pg_class.relreplident`` (``d``, ``i``, ``n``, ``f``), ``identity`` the columns of
    the replica identity index. An update or delete names the old row only by its replica identity:
    when that does not cover the key, an update that changes the key sends only the new one, and the
    old key would look "not written since promotion" (and be inserted back)."""
    have = set(identity)
    if kind == "f" or set(key) <= have:
        return None
    shown = IDENTITY_KINDS.get(kind, kind) + (f": {', '.join(sorted(have))}" if have else "")
    return (f"table {table} on {site}: the key ({', '.join(key)}) is not covered by the replica identity "
            f"({shown}), so a changed or deleted key cannot be told from the reverse slot: "
            f"ALTER TABLE {table} REPLICA IDENTITY USING INDEX <the key's unique index> (or FULL)")


@dataclass(frozen=True, slots=True)
class Judged:
    """One table's verdicts, in key order; ``written`` the keys the compare-and-set actually wrote."""

    table: str
    column: str
    rows: tuple[tuple[Any, Verdict], ...]
    written: frozenset[Any] = frozenset()

    def outcome(self, key: Any, verdict: Verdict) -> tuple[str, str]:
        """What happened to a row: ``applied``, ``kept_new`` (also when the compare-and-set found a
        newer version written meanwhile) or ``present``."""
        if verdict.applied:
            if key in self.written:
                return "applied", verdict.why
            return "kept_new", f"{verdict.why}; but a newer version was written meanwhile"
        return ("present" if verdict.action == "present" else "kept_new"), verdict.why  # copy_new: kept new

    def to_dict(self, key_json: Callable[[Any], Any], limit: int = 100) -> dict[str, Any]:
        """The journal's record: counts per outcome, the first ``limit`` keys applied and kept new, and the
        first ``limit`` rows with their outcome and why."""
        outcomes = [(key, *self.outcome(key, v)) for key, v in self.rows]
        counts = Counter(o for _, o, _ in outcomes)
        keys = {name: [key_json(k) for k, o, _ in outcomes if o == name][:limit] for name in ("applied", "kept_new")}
        return {"table": self.table, "column": self.column, "applied": counts["applied"],
                "kept_new": counts["kept_new"], "present": counts["present"], "applied_keys": keys["applied"],
                "kept_new_keys": keys["kept_new"],
                "rows": [{"key": key_json(k), "outcome": o, "why": w} for k, o, w in outcomes[:limit]],
                "rows_truncated": len(outcomes) > limit}


def describe(judged: Iterable[Judged], key_text: Callable[[Any], str], new: str) -> str:
    """The step's sentence: per table, what was applied onto ``new`` and what was kept, keys named."""
    parts = []
    for j in judged:
        groups: dict[str, list[Any]] = {}
        for key, verdict in j.rows:
            groups.setdefault(j.outcome(key, verdict)[0], []).append(key)
        said = []
        for outcome, label in (("applied", f"applied on {new}"), ("kept_new", "kept new"),
                               ("present", "already there")):
            keys = groups.get(outcome, [])
            if keys:
                shown = ", ".join(key_text(k) for k in keys[:KEYS_SHOWN])
                more = f" and {len(keys) - KEYS_SHOWN} more" if len(keys) > KEYS_SHOWN else ""
                said.append(f"{label} {len(keys)} ({shown}{more})")
        parts.append(f"{j.table} by {j.column}: " + (", ".join(said) or "no row to judge"))
    return "; ".join(parts) if parts else "no table resolves conflicts by last writer"
