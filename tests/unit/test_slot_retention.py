"""Replication slot retention: the alert size in the config, the once-per-crossing rule (engine.core.retention)
and the plan of ``db reinit-subscription`` (actions.database.reinit.plan)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from actions.database.reinit import Facts, plan
from engine.config.database import DatabaseConfig
from engine.core.retention import crossings

SITES = {"gcp": {"host": "h", "dbname": "d", "user": "u"}, "azure": {"host": "h", "dbname": "d", "user": "u"}}


@pytest.mark.parametrize(("given", "size"), [("1GiB", 1024**3), ("512MB", 512 * 1000**2), ("64KiB", 65536),
                                             (4096, 4096), ("1.5MiB", 1572864)])
def test_the_alert_size_reads_units(given: object, size: int) -> None:
    """Sizes with binary or decimal units, or bytes as a number, become bytes."""
    assert DatabaseConfig.model_validate({"sites": SITES, "slot_retained_alert": given}).slot_retained_alert == size


def test_the_default_alert_size_is_one_gibibyte() -> None:
    """Without a setting the alert fires past 1 GiB."""
    assert DatabaseConfig.model_validate({"sites": SITES}).slot_retained_alert == 1024**3


@pytest.mark.parametrize("given", ["lots", "1XB", float("inf"), 10, "2PiB", True, -5])
def test_a_bad_alert_size_is_one_clear_error_on_its_path(given: object) -> None:
    """Unknown units, infinities and sizes out of 1 KiB..1 PiB are refused at slot_retained_alert."""
    with pytest.raises(ValidationError) as err:
        DatabaseConfig.model_validate({"sites": SITES, "slot_retained_alert": given})
    assert [e["loc"] for e in err.value.errors()] == [("slot_retained_alert",)]


def test_a_slot_crossing_the_limit_alerts_once_and_clears_once() -> None:
    """Over the limit: raised once; still over: nothing; back under: cleared once."""
    first = crossings(frozenset(), {"sub": 2000, "other": 10}, 1000)
    assert (first.raised, first.cleared, first.over) == (("sub",), (), frozenset({"sub"}))
    still = crossings(first.over, {"sub": 5000, "other": 10}, 1000)
    assert (still.raised, still.cleared) == ((), ())
    back = crossings(still.over, {"sub": 999, "other": 10}, 1000)
    assert (back.raised, back.cleared, back.over) == ((), ("sub",), frozenset())


def test_a_dropped_slot_clears_and_an_unknown_size_changes_nothing() -> None:
    """A slot that vanished clears its alert; a slot whose size is unknown keeps its state."""
    assert crossings(frozenset({"sub"}), {}, 1000).cleared == ("sub",)
    kept = crossings(frozenset({"sub"}), {"sub": None}, 1000)
    assert (kept.raised, kept.cleared, kept.over) == ((), (), frozenset({"sub"}))
    assert crossings(frozenset(), {"sub": None}, 1000).over == frozenset()


# -- db reinit-subscription: the plan (pure) --------------------------------------------------------
def reinit_facts(**over: object) -> Facts:
    base = Facts(subscriber="azure", publisher="gcp", active="gcp", publication=True,
                 tables=[("public", "orders")], slot=None, subscription=False, non_empty=['"public"."orders"'])
    for key, value in over.items():
        setattr(base, key, value)
    return base


CONFIG = DatabaseConfig.model_validate({"sites": SITES})


def test_reinit_plans_detach_truncate_and_a_fresh_subscription_with_copy_data() -> None:
    """A lost slot and a disabled subscription: drop it, empty the tables, subscribe again with copy_data."""
    found = plan(CONFIG, reinit_facts())
    assert found.refusals == ()
    assert found.statements == (
        ("azure", "ALTER SUBSCRIPTION failover_sub DISABLE"),
        ("azure", "ALTER SUBSCRIPTION failover_sub SET (slot_name = NONE)"),
        ("azure", "DROP SUBSCRIPTION failover_sub"),
        ("azure", 'TRUNCATE "public"."orders"'),
        ("azure", "CREATE SUBSCRIPTION failover_sub CONNECTION '<gcp, password masked>' PUBLICATION failover_pub "
                  "WITH (copy_data = true, create_slot = true, slot_name = 'failover_sub')"))


def test_reinit_drops_an_orphan_slot_nobody_uses() -> None:
    """No subscription but an inactive slot left on the primary: it is dropped before the new one is made."""
    found = plan(CONFIG, reinit_facts(subscription=None, slot=False, non_empty=[]))
    assert list(found.statements) == [
        ("gcp", "SELECT pg_drop_replication_slot('failover_sub')"), found.statements[-1]]


@pytest.mark.parametrize(("over", "refusal"), [
    ({"subscriber": "gcp", "publisher": "azure", "active": "gcp"},
     "gcp is the active site (the primary): a copy must flow to the standby, not into the primary"),
    ({"publisher_read_only": True}, "gcp is fenced (read-only): it is not the primary to copy from"),
    ({"publication": False}, "publication failover_pub does not exist on gcp: create it first (replication-broken.md)"),
    ({"slot": True}, "slot failover_sub on gcp exists and is in use: nothing to re-initialise"),
    ({"slot": False}, "slot failover_sub on gcp still exists and failover_sub on azure can use it: "
                      "ALTER SUBSCRIPTION failover_sub ENABLE instead (replication-broken.md)"),
    ({"only_here": {'"public"."orders"': ["7"]}},
     '"public"."orders" on azure holds 1 row(s) gcp does not have (key 7): emptying it would lose them; '
     "reconcile and keep them first (failover-engine reconcile)"),
    ({"unprovable": ['"public"."log"']},
     '"public"."log" on azure has rows and no primary key: cannot prove gcp has them'),
])
def test_reinit_refuses_with_one_reason_and_plans_nothing(over: dict[str, object], refusal: str) -> None:
    """Each unsafe or pointless situation refuses with its own sentence and no statement at all."""
    found = plan(CONFIG, reinit_facts(**over))
    assert found.refusals == (refusal,) and found.statements == ()
