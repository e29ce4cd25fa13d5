"""Thirty simulated days of probing with noise and message loss: no false failover, every outage caught."""

from __future__ import annotations

import random

from tests.support.simulate import Outage, Simulation, random_outages

INTERVAL, TIMEOUT, THRESHOLD, TICK = 10.0, 5.0, 3, 1.0
BOUND = THRESHOLD * INTERVAL + TIMEOUT  # failure_threshold x interval + timeout


def test_thirty_days_of_noise_never_fail_over() -> None:
    """5 % failures in bursts of one or two, latency spikes and 10 % message loss: zero failovers."""
    result = Simulation(days=30, interval=INTERVAL, timeout=TIMEOUT, blip_rate=0.05, loss=0.10, seed=7).run()
    assert result.probes > 30 * 86400 / INTERVAL * 6 * 0.99
    assert result.blips > 20_000
    assert result.false_failovers == []


def test_every_outage_longer_than_the_window_is_detected_within_the_bound() -> None:
    """Real outages among the noise: each one longer than the window is acted on in time, nothing else."""
    outages = random_outages(random.Random(3), 30, 120)
    sim = Simulation(days=30, interval=INTERVAL, timeout=TIMEOUT, blip_rate=0.05, loss=0.10, seed=11,
                     outages=outages)
    result = sim.run()
    assert result.false_failovers == []
    long_ones = [i for i, o in enumerate(outages) if o.end - o.start > BOUND]
    assert len(long_ones) > 100
    missed = [i for i in long_ones if i not in result.detections]
    assert missed == []
    # a majority of voters' own machines reach DOWN within the bound
    assert max(result.majority_down[i] for i in long_ones) <= BOUND
    # the executor acts once the verdicts saying so have reached it: at most two ticks later
    assert max(result.detections[i] for i in long_ones) <= BOUND + 2 * TICK + TICK


def test_blips_alone_never_take_a_site_down() -> None:
    """With bursts of at most two, no voter's machine ever goes DOWN in a day without outages."""
    sim = Simulation(days=1, blip_rate=0.2, loss=0.0, seed=5)
    sim.run()
    assert all(m.state.value == "up" for m in sim.machines.values())


def test_short_outage_is_not_required_but_long_one_is() -> None:
    """A 12 s RST outage may pass unnoticed; a 60 s black hole is always acted on."""
    outages = [Outage("gcp", 1000.0, 1012.0, "rst"), Outage("gcp", 5000.0, 5060.0, "blackhole")]
    result = Simulation(days=0.1, blip_rate=0.0, loss=0.0, seed=2, outages=outages).run()
    assert 1 in result.detections and result.detections[1] <= BOUND + 3 * TICK
    assert result.false_failovers == []


def test_one_voter_seeing_the_primary_down_is_never_enough() -> None:
    """A witness whose own link keeps failing (its view of gcp goes DOWN often) never causes a failover."""
    sim = Simulation(days=30, interval=INTERVAL, timeout=TIMEOUT, blip_rate=0.05, loss=0.10, seed=13,
                     flaky_voter="witness", flaky_rate=0.01)
    downs = 0
    original = sim.machines[("witness", "gcp")].observe

    def counting(ok: bool, at: float, reason: str = "") -> object:
        nonlocal downs
        change = original(ok, at, reason)
        if change is not None and change.current.value == "down":
            downs += 1
        return change

    sim.machines[("witness", "gcp")].observe = counting  # type: ignore[method-assign]
    result = sim.run()
    assert downs > 500  # the witness alone saw gcp down hundreds of times...
    assert result.false_failovers == []  # ...and nobody acted
