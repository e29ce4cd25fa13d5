"""Failback preparation before the old primary is resynchronised: gate, quarantine, last writer wins.

The steps of :func:`actions.database.failback.prepare_failback` that run only while the reverse
subscription does not exist yet (its module docstring says why each one is there):

1. ``last writer wins`` (check; only with such tables): the declared column on both sides, before
   anything is changed (:func:`actions.database.last_writer.check`);
2. ``reconciliation``: every differing row explained by the reverse slot's keys, or acknowledged;
   the keys of any table the reconciliation accepts (:mod:`actions.reconcile.shape`), decoded from
   the slot and normalised as the reconciliation reports them;
3. ``quarantine``: the old primary's differing rows kept (:mod:`actions.database.quarantine`);
4. ``last writer wins``: later old versions and writes lost at failover written onto the new
   primary (:mod:`actions.database.last_writer`).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from actions.database.failback_plan import Reconciled, explain, listed_partly, reconciliation_tables
from actions.database.last_writer import STEP as LWW_STEP
from actions.database.last_writer import canonical, check, policy_tables, resolve
from actions.database.quarantine import (
    HELD_BY_OLD,
    RELATION,
    Divergent,
    clean_tag,
    describe,
    divergent_rows,
    keep_rows,
    listing,
    promotion_tag,
)
from actions.database.results import Step
from actions.database.reverse import Rel, Touched, peek_touched
from actions.reconcile.runner import reconcile
from actions.reconcile.shape import TableShape, inspect_table
from engine.config.database import DatabaseConfig
from probes.postgres_conn import PgError, Refused, describe_pg_error

SHOWN = 20  # unexplained rows named in the sentence (all of them are in data["differences"]["unexplained"])
LIST_LIMIT = 100_000  # rows listed per table when a reconciliation is run again to list them all


async def before_resync(config: DatabaseConfig, new: psycopg.AsyncConnection[Any], back: psycopg.AsyncConnection[Any],
                        new_primary: str, old: str, reconciliation: Reconciled, *, acknowledge: bool, schema: str,
                        tag: str | None, data: dict[str, Any]) -> list[Step]:
    """The steps of the module docstring, in order; the last one is failed when one failed."""
    steps: list[Step] = []
    lww, problems = await check(new, back, config, new_primary, old) if policy_tables(config) else ([], [])
    if problems:
        return [Step(LWW_STEP, "failed", "; ".join(problems) + ": nothing was changed")]
    gate, divergent, _ = await _gate(config, new, new_primary, old, reconciliation, acknowledge, data)
    steps.append(gate)
    if gate.status == "failed":
        return steps
    kept = await _quarantine(new, back, config.slot_name, new_primary, old, divergent, schema, tag, data,
                             {t.name: t.key_columns for t in config.reconcile.tables})
    steps.append(kept)
    if kept.status == "failed" or not lww:
        return steps
    tag = data["quarantine"].get("tag") or tag or await _tag(new, config.slot_name, new_primary)
    listed = {t["source"]: t["table"] for t in data["quarantine"].get("tables", [])}
    steps.append(await resolve(new, back, lww, config=config, schema=schema, tag=clean_tag(tag), quarantined=listed,
                               new_primary=new_primary, old=old, data=data))
    return steps


async def _gate(config: DatabaseConfig, new: psycopg.AsyncConnection[Any], new_primary: str, old: str,
                reconciliation: Reconciled, acknowledge: bool, data: dict[str, Any],
                ) -> tuple[Step, list[Divergent], Touched | None]:
    """The reconciliation gate of the module docstring; fills ``data`` with what it found and returns
    the step, the differing rows the old primary holds (to quarantine) and the slot's keys (None when
    nothing differs)."""
    t0 = time.perf_counter()
    if reconciliation.identical:
        return Step("reconciliation", "ok", "identical: " + reconciliation.sentence, time.perf_counter() - t0), [], None
    tables = reconciliation_tables(reconciliation)
    source = "given"
    partly = tables is not None and listed_partly(tables) and config.reconcile.max_reported_rows < LIST_LIMIT
    if tables is None or partly:  # compare here (nothing flows to the old primary, nothing is in flight)
        listing_all = config.model_copy(update={"reconcile": config.reconcile.model_copy(
            update={"max_reported_rows": max(LIST_LIMIT, config.reconcile.max_reported_rows)})})
        fresh = await reconcile(listing_all, service="failback", primary=new_primary, now=time.time(),
                                watermark=None)
        if fresh.identical:
            return Step("reconciliation", "ok", "identical: " + fresh.sentence, time.perf_counter() - t0), [], None
        tables, source = reconciliation_tables(fresh), ("re-run to list every row" if partly else "re-run")
        if tables is None:
            return Step("reconciliation", "failed", fresh.sentence, time.perf_counter() - t0), [], None
    await canonical(new)  # the slot's keys are decoded in this session's text forms
    names, shapes, unmatched = await _shapes(config, new, new_primary, tables)
    touched = await peek_touched(new, config.slot_name, config.publication, shapes)
    explained, unexplained, problems = explain(tables, touched, names, new_primary, old)
    problems = unmatched + problems

    def streamed(table: str, key: Any) -> bool:
        rel = names.get(table)
        return rel is not None and touched.has(rel, key)

    both = {t.name for t in config.reconcile.tables if t.conflict in ("keep_both", "last_writer_wins")}
    divergent = divergent_rows(tables, old=old, new_primary=new_primary, explained=streamed,
                               keep_both=lambda table: table in both)
    if not touched.complete:
        problems.append(f"slot not fully decoded ({touched.note})")
    ruled = {t.name for t in config.reconcile.tables if t.conflict == "last_writer_wins"}
    # rows the old primary holds (alone or changed) in such tables: the policy settles them after the quarantine;
    # a row only on the new primary (a delete of the old one that never arrived) is not judged: it stays here
    judged = [u for u in unexplained if u["table"] in ruled and u["kind"] in HELD_BY_OLD]
    unexplained = [u for u in unexplained if u not in judged]
    data["differences"] = {"explained": explained, "unexplained": unexplained, "last_writer_wins": judged,
                           "problems": problems, "changes_since_promotion": touched.changes,
                           "reconciliation": source}
    head = (f"{explained} difference{'s' * (explained != 1)} written on {new_primary} after promotion "
            f"(the slot carries them)")
    if judged:
        head += (f"; {len(judged)} not written since, in last_writer_wins tables (judged after the quarantine: "
                 "no acknowledgement needed)")
    if not unexplained and not problems:
        return Step("reconciliation", "ok", head, time.perf_counter() - t0), divergent, touched
    listed = ", ".join(f"{u['table']} {u['key']} ({u['where']})" for u in unexplained[:SHOWN])
    more = f" and {len(unexplained) - SHOWN} more" if len(unexplained) > SHOWN else ""
    why = "; ".join(([f"{len(unexplained)} not explained by writes since promotion: {listed}{more}"]
                     if unexplained else []) + problems)
    if acknowledge:
        return Step("reconciliation", "ok", f"{head}; acknowledged: {why} (kept on {old} as they are)",
                    time.perf_counter() - t0), divergent, touched
    return Step("reconciliation", "failed", f"{head}; {why}: acknowledge to go on (kept on {old} as they are, "
                "never overwritten by this preparation)", time.perf_counter() - t0), divergent, touched


async def _shapes(config: DatabaseConfig, new: psycopg.AsyncConnection[Any], new_primary: str,
                  tables: list[dict[str, Any]]) -> tuple[dict[str, Rel], dict[Rel, TableShape], list[str]]:
    """Per reconciled table on the new primary: its relation and its key (configured or the primary key,
    as the reconciliation matched rows); a table whose key cannot be matched is a problem, named."""
    configured = {t.name: t.key_columns for t in config.reconcile.tables}
    names: dict[str, Rel] = {}
    shapes: dict[Rel, TableShape] = {}
    problems: list[str] = []
    for t in tables:
        name = str(t.get("table"))
        if t.get("status") in ("refused", "error"):
            continue  # explain() names it
        try:
            shape = await inspect_table(new, name, configured.get(name), new_primary)
        except Refused as exc:
            problems.append(f"{name}: the slot's changes cannot be matched to its rows ({exc})")
            continue
        row = await (await new.execute(RELATION, (name,))).fetchone()
        if row is not None:
            names[name] = (str(row[0]), str(row[1]))
            shapes[names[name]] = shape
    return names, shapes, problems


async def _tag(new: psycopg.AsyncConnection[Any], slot: str, new_primary: str) -> str:
    """The failover's quarantine tag: the new primary's site and the reverse slot's start LSN."""
    row = await (await new.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                   "WHERE slot_name = %s", (slot,))).fetchone()
    lsn = row[0] if row is not None and row[0] else time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return promotion_tag(new_primary, str(lsn))


async def _quarantine(new: psycopg.AsyncConnection[Any], back: psycopg.AsyncConnection[Any], slot: str,
                      new_primary: str, old: str, divergent: list[Divergent], schema: str, tag: str | None,
                      data: dict[str, Any], keys: dict[str, list[str] | None]) -> Step:
    """Keep the old primary's differing rows before anything can overwrite them; fills ``data["quarantine"]``.

    Failed (and the preparation stops) when they cannot be kept: resynchronising would lose them.
    """
    t0 = time.perf_counter()
    if not divergent:
        data["quarantine"] = listing([], schema=schema, tag=tag)
        return Step("quarantine", "skipped", f"no row of {old} differs from {new_primary}", time.perf_counter() - t0)
    if tag is None:
        tag = await _tag(new, slot, new_primary)
    try:
        kept = await keep_rows(back, divergent, tag=tag, schema=schema, site=old, other=new_primary, keys=keys)
    except (PgError, psycopg.Error, ValueError) as exc:
        why = describe_pg_error(exc) if isinstance(exc, psycopg.Error) else str(exc)
        data["quarantine"] = {"schema": schema, "tag": tag, "error": why, "tables": []}
        return Step("quarantine", "failed", f"{len(divergent)} differing row{'s' * (len(divergent) != 1)} of "
                    f"{old} could not be kept ({why}): {old} was not resynchronised", time.perf_counter() - t0)
    data["quarantine"] = listing(kept, schema=schema, tag=tag)
    return Step("quarantine", "ok", describe(kept, schema, old), time.perf_counter() - t0)
