"""Which differences a failback may leave to the reverse stream, and which it must not: pure.

After a failover the reconciliation of the pair (new primary vs the returned old one) lists differing
rows; the reverse slot tells which keys the new primary wrote after promotion (:mod:`actions.database.reverse`).
:func:`explain` sorts every listed row into *explained* (the stream brings the old primary to the new
primary's version) and *unexplained* (a write lost at failover, a row the old primary changed or deleted),
and names what cannot be judged row by row. :mod:`actions.database.failback` acts on the answer.
"""

from __future__ import annotations

from typing import Any, Protocol

from actions.database.quarantine import row_key
from actions.database.reverse import Touched


class Reconciled(Protocol):
    """What failback needs to know from a reconciliation result (row details are read if present:
    a :class:`~actions.reconcile.result.ReconcileResult`, or an object with ``data``/``to_dict()``)."""

    @property
    def identical(self) -> bool: ...

    @property
    def sentence(self) -> str: ...


def reconciliation_tables(reconciliation: Any) -> list[dict[str, Any]] | None:
    """The per-table results (as dicts) of a reconciliation, or None when it carries only a summary."""
    data: Any = None
    if hasattr(reconciliation, "to_dict"):
        data = reconciliation.to_dict()
    elif isinstance(getattr(reconciliation, "data", None), dict):
        data = reconciliation.data
    elif isinstance(reconciliation, dict):
        data = reconciliation
    if not isinstance(data, dict) or data.get("error") or not isinstance(data.get("tables"), list):
        return None
    return [t for t in data["tables"] if isinstance(t, dict)]


def explain(tables: list[dict[str, Any]], touched: Touched, names: dict[str, tuple[str, str]], new_primary: str,
            old: str) -> tuple[int, list[dict[str, Any]], list[str]]:
    """Pure: (explained rows, unexplained rows, problems that cannot be judged row by row).

    ``tables`` come from a reconciliation with ``new_primary`` as its primary: ``missing_on_primary``
    is a row only the old primary holds, ``missing_on_standby`` one only the new primary holds.
    """
    explained, unexplained, problems = 0, [], []
    where = {"missing_on_primary": f"only on {old}", "missing_on_standby": f"only on {new_primary}",
             "changed": "changed"}
    for t in tables:
        name = str(t.get("table"))
        if t.get("status") in ("refused", "error"):
            problems.append(f"{name} not compared ({t.get('reason')})")
            continue
        rel = names.get(name)
        listed = [d for d in t.get("differences", []) if isinstance(d, dict) and not d.get("in_flight")]
        unlisted = int(t.get("difference_count") or 0) - len(listed)
        if unlisted > 0:
            problems.append(f"{name}: {unlisted} differing row{'s' * (unlisted != 1)} not listed")
        if t.get("in_flight"):
            problems.append(f"{name}: {t['in_flight']} row(s) in flight not listed")
        for d in listed:
            key, kind = row_key(d["key"]), str(d["kind"])
            if rel is not None and touched.has(rel, key):
                explained += 1
            else:
                unexplained.append({"table": name, "key": key, "kind": kind, "where": where.get(kind, kind)})
    return explained, unexplained, problems


def listed_partly(tables: list[dict[str, Any]]) -> bool:
    """Pure: some table counted more differing rows than it listed (their keys are unknown)."""
    return any(int(t.get("difference_count") or 0) > len([d for d in t.get("differences") or []
                                                          if isinstance(d, dict) and not d.get("in_flight")])
               for t in tables if t.get("status") not in ("refused", "error"))
