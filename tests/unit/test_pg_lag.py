"""The replication signal's verdict, from readings to (ok, reason, value, details): pure, table-driven."""

from __future__ import annotations

import psycopg
import pytest
from pydantic import SecretStr

from engine.config.database import PgConnection
from probes.postgres import PrimaryReading, StandbyReading, format_bytes, heartbeat_lag, judge
from probes.postgres_conn import conninfo, describe_pg_error


def primary(slot: int | None = 0, beats: dict[str, float] | None = None, pub: bool = True) -> PrimaryReading:
    return PrimaryReading(slot, True, {"gcp": 1000.0} if beats is None else beats, "0/1505EE0", pub)


def standby(alive: bool = True, beats: dict[str, float] | None = None, found: bool = True,
            enabled: bool = True) -> StandbyReading:
    return StandbyReading(found, enabled, alive, {"gcp": 1000.0} if beats is None else beats)


def run(p: PrimaryReading | None, s: StandbyReading | None, now: float = 5000.0,
        ) -> tuple[bool, str, float | None, dict[str, object]]:
    return judge(p, None if p else "connect refused", s, None if s else "connect refused", now, 30.0,
                 primary_site="gcp", standby_site="azure")


def test_caught_up_reads_zero_even_long_after_the_last_write() -> None:
    """Equal heartbeats on both sides read as 0 s lag whatever the wall clock says (idle primary)."""
    ok, reason, value, details = run(primary(), standby(), now=1_000_000.0)
    assert (ok, reason, value) == (True, "heartbeat lag 0.0s, slot lag 0 B", 0.0)
    assert details["apply_worker_alive"] is True
    assert details["primary_commit"] == {"heartbeat_at": 1000.0, "lsn": "0/1505EE0"}


def test_lag_above_the_limit_fails_with_both_numbers() -> None:
    """A standby 42 s behind with a 30 s limit fails, and the reason leads with the heartbeat lag."""
    ok, reason, value, _ = run(primary(2_200_000, {"gcp": 1042.0}), standby())
    assert (ok, reason, value) == (False, "heartbeat lag 42.0s > 30s, slot lag 2.2 MB", 42.0)


def test_dead_apply_worker_fails_even_with_small_lag() -> None:
    """A stopped apply worker fails the signal: the lag can only grow from here."""
    ok, reason, _, details = run(primary(2_200_000), standby(alive=False))
    assert (ok, reason) == (False, "slot lag 2.2 MB, apply worker not running")
    assert details["apply_worker_alive"] is False
    _, disabled, _, _ = run(primary(0), standby(alive=False, enabled=False))
    assert disabled == "slot lag 0 B, apply worker not running (subscription disabled)"


def test_unreachable_standby_is_unknown_not_zero() -> None:
    """Without the standby, worker liveness and heartbeat lag are None, and the signal fails."""
    ok, reason, value, details = run(primary(10), None)
    assert (ok, reason, value) == (False, "standby azure unreachable: connect refused, slot lag 10 B", None)
    assert details["apply_worker_alive"] is None and details["heartbeat_lag_s"] is None


def test_unreachable_primary_measures_against_the_last_known_commit() -> None:
    """With the primary gone, lag is the gap to the last primary beat seen: 0 when all of it arrived."""
    caught_up = judge(None, "connect refused", standby(alive=False, beats={"gcp": 4990.0}), None, 5000.0, 30.0,
                      primary_site="gcp", standby_site="azure", remembered={"gcp": 4990.0})
    assert caught_up[:3] == (True, "heartbeat lag 0.0s, primary gcp unreachable: connect refused "
                                   "(lag measured to the last known primary commit)", 0.0)
    assert caught_up[3]["heartbeat_age_s"] == 10.0 and "primary_commit" not in caught_up[3]
    behind = judge(None, "connect refused", standby(beats={"gcp": 4958.0}), None, 5000.0, 30.0,
                   primary_site="gcp", standby_site="azure", remembered={"gcp": 5000.0})
    assert behind[:3] == (False, "heartbeat lag 42.0s > 30s, primary gcp unreachable: connect refused "
                                 "(lag measured to the last known primary commit)", 42.0)


def test_unreachable_primary_without_memory_falls_back_to_now() -> None:
    """With no primary beat ever seen, lag is this engine's now minus the freshest replicated beat."""
    ok, reason, value, _ = run(None, standby(beats={"gcp": 4990.0}), now=5000.0)
    assert (ok, value) == (True, 10.0)
    assert reason == "heartbeat lag 10.0s, primary gcp unreachable: connect refused (lag measured to now: " \
                     "no primary commit known)"


def test_missing_heartbeat_and_missing_objects_are_named() -> None:
    """No heartbeat row, a missing publication or subscription each fail with their own words."""
    assert run(primary(), standby(beats={}))[1] == (
        "slot lag 0 B, heartbeat lag unknown (no heartbeat row on the standby: run `db init`)")
    assert run(primary(pub=False), standby(found=False))[1] == (
        "slot lag 0 B, publication not found on gcp, subscription not found on azure")


@pytest.mark.parametrize(("primary_beats", "standby_beats", "now", "expected"), [
    ({"gcp": 100.0}, {"gcp": 100.0}, 9e9, 0.0),
    ({"gcp": 150.0, "azure": 100.0}, {"gcp": 100.0, "azure": 100.0}, 0.0, 50.0),
    ({"gcp": 100.0}, {"gcp": 120.0}, 0.0, 0.0),
    ({"gcp": 100.0}, {}, 0.0, None),
    ({"gcp": 100.0}, {"azure": 90.0}, 0.0, None),
    (None, {"gcp": 100.0, "azure": 90.0}, 130.0, 30.0),
])
def test_heartbeat_lag_table(primary_beats: dict[str, float] | None, standby_beats: dict[str, float], now: float,
                             expected: float | None) -> None:
    """Lag compares rows written by the same writer; only without the primary does ``now`` enter."""
    assert heartbeat_lag(primary_beats, standby_beats, now) == expected


def test_format_bytes() -> None:
    """Bytes print the way dashboards show them."""
    assert [format_bytes(n) for n in (0, 999, 2_267_368, 3_000_000_000)] == ["0 B", "999 B", "2.3 MB", "3.0 GB"]


def test_conninfo_carries_the_password_but_reasons_never_do() -> None:
    """The password reaches libpq's conninfo; an error text that echoed it is masked."""
    conn = PgConnection(host="db", dbname="app", user="u", password=SecretStr("pa55-w0rd"))
    assert "password=pa55-w0rd" in conninfo(conn)
    assert "connect_timeout=5" in conninfo(conn)
    error = psycopg.OperationalError('connection to server at "db" (10.0.0.1), port 5432 failed: '
                                     "FATAL:  bad thing pa55-w0rd")
    assert describe_pg_error(error, conn) == "FATAL:  bad thing **********"
    refused = psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 1 failed: '
                                       "Connection refused\n\tIs the server running on that host?")
    assert describe_pg_error(refused) == "connect refused"


def test_a_replication_passfile_replaces_the_password_in_a_subscription_conninfo() -> None:
    """With ``replication_passfile`` the string another server stores names the file, never the password."""
    conn = PgConnection(host="db", dbname="app", user="u", password=SecretStr("pa55-w0rd"),
                        replication_passfile="/etc/postgresql/failover.pgpass", replication_host="db.internal")
    text = conninfo(conn, for_replication=True)
    assert "pa55-w0rd" not in text and "passfile=/etc/postgresql/failover.pgpass" in text
    assert "host=db.internal" in text
    assert "password=pa55-w0rd" in conninfo(conn)  # the engine's own sessions still use it


def test_an_old_primary_heartbeat_fails_the_signal_even_with_zero_lag() -> None:
    """No beat on the primary for more than three intervals: the lag (0 s) cannot be trusted."""
    ok, reason, value, details = judge(primary(), None, standby(), None, 1016.0, 30.0, primary_site="gcp",
                                       standby_site="azure", heartbeat_interval=5.0)
    assert (ok, value) == (False, 0.0)
    assert reason == "slot lag 0 B, no heartbeat on gcp for 16s (is the heartbeat writer running?)"
    assert details["primary_heartbeat_age_s"] == 16.0
    fresh = judge(primary(), None, standby(), None, 1015.0, 30.0, primary_site="gcp", standby_site="azure",
                  heartbeat_interval=5.0)
    assert fresh[0] and fresh[1] == "heartbeat lag 0.0s, slot lag 0 B"


def test_a_stalled_slot_fails_only_past_max_lag_and_only_with_wal_waiting() -> None:
    """The slot's position standing still longer than max_lag while WAL waits: apply is stuck."""
    def verdict(slot: int, stalled: float) -> tuple[bool, str]:
        ok, reason, _, _ = judge(primary(slot), None, standby(), None, 1000.0, 30.0, primary_site="gcp",
                                 standby_site="azure", stalled_for=stalled)
        return ok, reason

    assert verdict(5000, 31.0) == (False, "slot lag 5.0 kB, apply stalled for 31s (slot position not moving)")
    assert verdict(5000, 29.0)[0] and verdict(0, 99.0)[0]
