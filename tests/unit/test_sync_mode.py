"""Synchronous replication's degrade/restore machine (engine.core.sync_mode): the whole table, on a fake clock."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actions.database.synchronous import names_in, names_standby, quoted
from engine.core.sync_mode import (
    TABLES,
    Condition,
    IllegalTransition,
    StateKind,
    SyncObservation,
    SyncSettings,
    SyncState,
    classify,
    initial,
    step,
)

T = 1_000.0
ON = SyncSettings("on", degrade_after=10.0, commit_wait_limit=1.0, restore_lag=100, check_interval=1.0)
STRICT = SyncSettings("strict", degrade_after=10.0, commit_wait_limit=1.0, restore_lag=100, check_interval=1.0)
OFF = SyncSettings("off")

CONFIRMED = SyncObservation(True, named=True, streaming=True, sync_state="sync", oldest_wait_s=0.0, lag_bytes=0)
GONE = SyncObservation(True, named=True, streaming=False)
WAITING = SyncObservation(True, named=True, streaming=True, sync_state="sync", oldest_wait_s=5.0, lag_bytes=9000)
CAUGHT_UP = SyncObservation(True, named=False, streaming=True, sync_state="async", lag_bytes=50)
BEHIND = SyncObservation(True, named=False, streaming=True, sync_state="async", lag_bytes=5000)
UNREACHABLE = SyncObservation(False, reason="gcp unreachable: connection refused")

# what each mode must do: (state, condition) -> (next state, action); written out, not derived from TABLES
EXPECTED: dict[str, dict[tuple[str, str], tuple[str, str]]] = {
    "off": {("off", c): ("off", "clear" if c in ("confirmed", "trouble") else "none")
            for c in ("unobserved", "confirmed", "trouble", "caught_up", "behind")},
    "on": {
        **{(s, "unobserved"): (s, "none") for s in ("engaging", "sync", "at_risk", "degraded")},
        **{(s, "confirmed"): ("sync", "none") for s in ("engaging", "sync", "at_risk", "degraded")},
        ("engaging", "trouble"): ("at_risk", "none"), ("sync", "trouble"): ("at_risk", "none"),
        ("at_risk", "trouble"): ("at_risk", "none"), ("degraded", "trouble"): ("degraded", "clear"),
        ("at_risk", "trouble_expired"): ("degraded", "clear"),
        **{(s, "caught_up"): ("engaging", "name") for s in ("engaging", "sync", "at_risk", "degraded")},
        **{(s, "behind"): ("degraded", "none") for s in ("engaging", "sync", "at_risk", "degraded")},
    },
    "strict": {
        **{(s, "unobserved"): (s, "none") for s in ("engaging", "sync", "waiting")},
        **{(s, "confirmed"): ("sync", "none") for s in ("engaging", "sync", "waiting")},
        **{(s, "trouble"): ("waiting", "none") for s in ("engaging", "sync", "waiting")},
        **{(s, c): ("engaging", "name") for s in ("engaging", "sync", "waiting") for c in ("caught_up", "behind")},
    },
}


@pytest.mark.parametrize("mode", ["off", "on", "strict"])
def test_every_pair_of_the_table(mode: str) -> None:
    """Every (state, condition) pair of every mode either has the expected transition or is illegal and raises."""
    assert TABLES[mode] == EXPECTED[mode]  # type: ignore[index]
    for kind, cond in itertools.product(get_args(StateKind), get_args(Condition)):
        if (kind, cond) not in EXPECTED[mode]:
            with pytest.raises(LookupError):
                TABLES[mode][(kind, cond)]  # type: ignore[index]


def test_a_pair_outside_the_table_raises_illegal_transition() -> None:
    """A state that the mode never reaches is an error, never a silent no-op."""
    with pytest.raises(IllegalTransition, match="synchronous strict: no transition from degraded on confirmed"):
        step(SyncState("degraded", T), CONFIRMED, STRICT, T)


@pytest.mark.parametrize(("obs", "state", "settings", "now", "cond"), [
    (UNREACHABLE, SyncState("sync", T), ON, T, "unobserved"),
    (CONFIRMED, SyncState("engaging", T), ON, T, "confirmed"),
    (GONE, SyncState("sync", T), ON, T, "trouble"),
    (WAITING, SyncState("sync", T), ON, T, "trouble"),
    (GONE, SyncState("at_risk", T), ON, T + 9.9, "trouble"),
    (GONE, SyncState("at_risk", T), ON, T + 10, "trouble_expired"),
    (GONE, SyncState("waiting", T), STRICT, T + 1000, "trouble"),
    (CAUGHT_UP, SyncState("degraded", T), ON, T, "caught_up"),
    (BEHIND, SyncState("degraded", T), ON, T, "behind"),
    (SyncObservation(True, named=False, streaming=False), SyncState("degraded", T), ON, T, "behind"),
])
def test_classify(obs: SyncObservation, state: SyncState, settings: SyncSettings, now: float, cond: str) -> None:
    """One observation becomes one condition; only ``on`` in trouble for ``after`` seconds expires."""
    assert classify(state, obs, settings, now) == cond


def test_on_degrades_after_the_delay_and_restores_after_catch_up() -> None:
    """The standby lost: at risk, degraded exactly after ``after`` (clear), named again once caught up."""
    state = initial("on", T)
    t = step(state, CONFIRMED, ON, T)
    assert (t.state.kind, t.action, t.state.confirmed_at) == ("sync", "none", T)
    t = step(t.state, GONE, ON, T + 1)
    assert (t.state.kind, t.action, t.state.since) == ("at_risk", "none", T + 1)
    assert t.sentence.startswith("synchronous on: at risk since") and "degrading after 10s" in t.sentence
    t = step(t.state, GONE, ON, T + 10.5)
    assert (t.state.kind, t.action) == ("at_risk", "none")
    t = step(t.state, GONE, ON, T + 11)
    assert (t.state.kind, t.action, t.state.since) == ("degraded", "clear", T + 11)
    assert t.sentence == ("synchronous on: degraded to asynchronous (the standby is not streaming for 10.0s >= 10s); "
                          "data loss no longer zero by proof")
    assert t.state.evidence(ON).degraded_since == T + 11 and t.state.evidence(ON).confirmed_at == T
    t = step(t.state, BEHIND, ON, T + 20)
    assert (t.state.kind, t.action, t.changed) == ("degraded", "none", False)
    t = step(t.state, CAUGHT_UP, ON, T + 21)
    assert (t.state.kind, t.action) == ("engaging", "name")
    assert t.sentence == "synchronous on: restoring synchronous commit (the standby streams (50 B behind))"
    t = step(t.state, CONFIRMED, ON, T + 22)
    assert (t.state.kind, t.state.confirmed_at) == ("sync", T + 22)


def test_strict_never_degrades() -> None:
    """Strict waits for a lost standby as long as it takes: no clear, whatever the clock says."""
    t = step(initial("strict", T), CONFIRMED, STRICT, T)
    for minutes in range(1, 200, 7):
        t = step(t.state, GONE, STRICT, T + minutes * 60)
        assert (t.state.kind, t.action) == ("waiting", "none")
    assert t.sentence == ("synchronous strict: commits wait for the standby (the standby is not streaming); "
                          "never degraded")


def test_unobserved_keeps_the_state_and_the_timer() -> None:
    """An unreachable primary changes nothing: no action, the at-risk timer keeps its start."""
    at_risk = SyncState("at_risk", T, confirmed_at=T - 1)
    t = step(at_risk, UNREACHABLE, ON, T + 50)
    assert t.state == at_risk and t.action == "none" and not t.changed
    assert t.sentence == ("synchronous on: primary not observed (gcp unreachable: connection refused); "
                          "state at_risk kept")


observations = st.builds(SyncObservation, reachable=st.booleans(), named=st.booleans(), streaming=st.booleans(),
                         sync_state=st.sampled_from([None, "sync", "async", "potential", "quorum"]),
                         oldest_wait_s=st.one_of(st.none(), st.floats(0, 100)),
                         lag_bytes=st.one_of(st.none(), st.integers(0, 10_000)))


@given(st.lists(st.tuples(observations, st.floats(0.0, 30.0)), max_size=40), st.sampled_from(["on", "strict"]))
def test_any_sequence_stays_in_the_table(seq: list[tuple[SyncObservation, float]], mode: str) -> None:
    """Any run of observations stays inside the table; strict never clears; ``on`` clears only from at_risk
    after ``after`` seconds in trouble, or again when it finds the name back while degraded."""
    settings = ON if mode == "on" else STRICT
    now = T
    state = initial(settings.mode, now)
    for obs, dt in seq:
        now += dt
        t = step(state, obs, settings, now)
        if t.action == "clear":
            assert mode == "on"
            assert (state.kind == "at_risk" and now - state.since >= settings.degrade_after) or state.kind == "degraded"
        if t.condition == "confirmed":
            assert (t.state.kind, t.state.confirmed_at) == ("sync", now)
        else:
            assert t.state.confirmed_at == state.confirmed_at
        state = t.state


@pytest.mark.parametrize(("setting", "names", "star"), [
    ("", set(), False),
    ("failover_sub", {"failover_sub"}, False),
    ('"Failover_Sub", other', {"Failover_Sub", "other"}, False),
    ("FIRST 1 (a, b)", {"a", "b"}, False),
    ('ANY 2 (A, "b""q", c)', {"a", 'b"q', "c"}, False),
    ("2 (a, *)", {"a"}, True),
    ("*", set(), True),
])
def test_names_in_parses_synchronous_standby_names(setting: str, names: set[str], star: bool) -> None:
    """The standby names listed in a synchronous_standby_names value; unquoted names fold to lower case."""
    assert names_in(setting) == (names, star)


def test_quoted_name_round_trips() -> None:
    """The value the engine writes names exactly its standby, case and quotes kept."""
    for name in ("failover_sub", "Mixed", 'we"ird'):
        assert names_standby(quoted(name), name)
        assert names_in(quoted(name)) == ({name}, False)
