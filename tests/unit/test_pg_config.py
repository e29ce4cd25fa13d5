"""The ``database:`` section: defaults, rules with exact paths, secrets that never show."""

from __future__ import annotations

import pytest

from engine.config import ConfigError, parse_config

BASE = """
instance: {id: gcp-1, site: gcp}
services:
  api:
    active: gcp
    sites: {gcp: {probes: [{type: tcp, host: a, port: 9}]}, azure: {probes: [{type: tcp, host: a, port: 9}]}}
    database:
      sites:
        gcp: {host: 10.0.0.5, dbname: app, user: failover, password: "${PG_PASSWORD}"}
        azure: {host: db.azure.example, dbname: app, user: failover, sslmode: require}
""".lstrip()


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env if env is not None else {"PG_PASSWORD": "pw"})
    return [str(p) for p in info.value.problems]


def test_defaults_are_the_documented_ones() -> None:
    """A minimal database section gets 30 s probes, 5 s heartbeats, fencing on, a 5 m reconcile schedule."""
    db = parse_config(BASE, env={"PG_PASSWORD": "pw"}).services["api"].database
    assert db is not None
    assert (db.lag_probe.interval, db.lag_probe.max_lag, db.heartbeat.interval) == (30.0, 30.0, 5.0)
    assert db.fencing.enabled and db.fencing.timeout == 10.0
    assert db.reconcile.schedule == 300.0 and db.reconcile.hash == "auto"
    assert db.sites["gcp"].port == 5432 and db.sites["azure"].sslmode == "require"
    assert db.slot_name == "failover_sub" and db.other_site("gcp") == "azure"


def test_password_never_shows_in_repr_or_dump() -> None:
    """The password is a secret: not in the repr, and masked in a JSON dump."""
    config = parse_config(BASE, env={"PG_PASSWORD": "hunter2-very-secret"})
    db = config.services["api"].database
    assert db is not None
    assert "hunter2" not in repr(db) and "hunter2" not in db.model_dump_json()
    assert db.sites["gcp"].password is not None
    assert db.sites["gcp"].password.get_secret_value() == "hunter2-very-secret"


def test_rules_name_the_offending_field() -> None:
    """Cross-field rules report the exact dotted path and line."""
    text = BASE + """      lag_probe: {interval: 10s, timeout: 10s}
      heartbeat: {interval: 1m}
      reconcile:
        schedule: 1m
        statement_timeout: 2m
        tables: [{name: orders}, {name: orders}]
"""
    got = problems(text)
    assert "line 10: services.api.database.lag_probe.timeout: must be < interval (10s)" in got
    assert "line 14: services.api.database.reconcile.statement_timeout: must be > 0 and < schedule (1m)" in got


def test_heartbeat_must_beat_faster_than_the_lag_limit() -> None:
    """A heartbeat interval at or above max_lag could never read as caught up."""
    text = BASE + "      heartbeat: {interval: 30s}\n"
    assert problems(text) == ["line 10: services.api.database.heartbeat.interval: must be < lag_probe.max_lag (30s)"]


def test_duplicate_tables_and_bad_identifiers_are_refused() -> None:
    """A table listed twice, or a name that is not an identifier, is reported at its index."""
    text = BASE + """      publication: "pub; DROP TABLE x"
      reconcile:
        tables: [{name: orders}, {name: orders}]
"""
    got = problems(text)
    assert any(p.startswith("line 10: services.api.database.publication: String should match pattern") for p in got)
    assert "line 12: services.api.database.reconcile.tables[1].name: 'orders' is listed twice" in got


def test_exactly_two_sites() -> None:
    """A database pair has exactly two sites."""
    text = BASE.replace("        azure: {host: db.azure.example, dbname: app, user: failover, sslmode: require}\n",
                        "")
    assert problems(text) == ["line 7: services.api.database.sites: needs exactly two sites "
                              "(primary and standby), got 1"]


def test_missing_password_variable_is_a_problem_at_its_path() -> None:
    """An unset ${PG_PASSWORD} is reported where it is used."""
    got = problems(BASE, env={})
    assert got[0] == "line 8: services.api.database.sites.gcp.password: environment variable PG_PASSWORD is not set"


def test_last_writer_wins_without_its_timestamp_column_is_one_problem_at_its_path() -> None:
    """check-config names the table's updated_at, once, with the line; with the column the policy is accepted."""
    text = BASE + """      reconcile:
        tables:
          - {name: docs, conflict: last_writer_wins}
          - {name: lines, key: [region, name], updated_at: changed_at, conflict: last_writer_wins}
"""
    got = problems(text)
    assert got == ["line 12: services.api.database.reconcile.tables[0].updated_at: conflict last_writer_wins needs "
                   "the timestamp column that every write sets (which version of a row is the last write)"]
    fixed = parse_config(text.replace("conflict: last_writer_wins}\n          - {name: lines",
                                      "updated_at: at, conflict: last_writer_wins}\n          - {name: lines"),
                         env={"PG_PASSWORD": "pw"}).services["api"].database
    assert fixed is not None and [t.conflict for t in fixed.reconcile.tables] == ["last_writer_wins"] * 2
