"""The etcd backend under real faults on a real three-member cluster: racing processes, a killed leader,
a stopped minority member, a holder cut off from etcd, a whole site lost, and every member down."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from engine.core.coordination import (
    EpochMove,
    Holder,
    HolderView,
    LeaseGrant,
    LeaseLost,
    LeaseRenewed,
    LeaseTaken,
    Unavailable,
    judge_holder,
    keepalive_due,
)
from engine.runtime.coordination.etcd import EtcdCoordination
from engine.runtime.coordination.etcd_client import EtcdClient
from tests.support.etcd import EtcdCluster

pytestmark = [pytest.mark.real, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
GCP, AZURE = Holder("gcp", "gcp-1"), Holder("azure", "azure-1")
Factory = Callable[[list[str]], EtcdCoordination]


@pytest.fixture
async def backend_for() -> AsyncIterator[Factory]:
    """Make backends on chosen endpoints (first = preferred), all under one fresh prefix; closed after the test."""
    made: list[EtcdCoordination] = []
    prefix = f"/faults/{uuid.uuid4().hex}"

    def make(endpoints: list[str]) -> EtcdCoordination:
        backend = EtcdCoordination(EtcdClient(endpoints, request_timeout=0.5, deadline=2.0), prefix)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


async def move_once(backend: EtcdCoordination, holder: Holder, token: str) -> EpochMove | Unavailable:
    epoch = await backend.read_epoch("shop")
    if isinstance(epoch, Unavailable):
        return epoch
    move = await backend.move_epoch("shop", epoch, holder.site, holder, token)
    if isinstance(move, Unavailable):  # the answer may be lost after the write: the same move, same token
        move = await backend.move_epoch("shop", epoch, holder.site, holder, token)
    return move


async def test_racing_processes_get_exactly_one_winner_per_epoch(etcd_cluster_fresh: EtcdCluster) -> None:
    """Three engine processes racing on the epoch over different members: each number is won by exactly one."""
    prefix = f"/race/{uuid.uuid4().hex}"
    endpoints = etcd_cluster_fresh.endpoints
    processes = [
        subprocess.Popen([sys.executable, "-m", "tests.support.etcd_mover", prefix, f"v{i}", "15",
                          *endpoints[i:], *endpoints[:i]], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for i in range(3)]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in processes]
    wins = [number for result in results for number, _token in result["won"]]
    assert sorted(wins) == list(range(1, len(wins) + 1)), results
    assert sum(len(r["won"]) + r["lost"] for r in results) == 45
    checker = EtcdCoordination(EtcdClient(endpoints), prefix)
    try:
        final = await checker.read_epoch("shop")
        assert not isinstance(final, Unavailable) and final.number == len(wins)
    finally:
        await checker.close()


async def test_moves_continue_after_the_leader_is_killed(etcd_cluster_fresh: EtcdCluster,
                                                         backend_for: Factory) -> None:
    """SIGKILL of the leader (the client's preferred endpoint): the epoch moves again within 15 s, one winner each."""
    cluster = etcd_cluster_fresh
    leader = cluster.leader()
    others = [m.endpoint for m in cluster.members if m is not leader]
    backend = backend_for([leader.endpoint, *others])
    first = await move_once(backend, AZURE, "before")
    assert isinstance(first, EpochMove) and first.won
    cluster.kill(leader)
    killed_at = time.monotonic()
    outcomes: list[EpochMove | Unavailable] = []
    while time.monotonic() - killed_at < 15:  # the same move (same expected epoch, same token) until it is answered
        outcome = await backend.move_epoch("shop", first.current, AZURE.site, AZURE, "after")
        outcomes.append(outcome)
        if isinstance(outcome, EpochMove):
            break
    assert isinstance(outcomes[-1], EpochMove) and outcomes[-1].won, outcomes
    assert outcomes[-1].current.number == 2
    assert all(isinstance(o, Unavailable) and o.kind == "unreachable" for o in outcomes[:-1])
    assert cluster.leader() is not leader


async def test_a_stopped_minority_member_leaves_the_quorum_serving(etcd_cluster_fresh: EtcdCluster,
                                                                   backend_for: Factory) -> None:
    """SIGSTOP of one follower, the client's preferred endpoint: every move still succeeds by failing over."""
    cluster = etcd_cluster_fresh
    leader = cluster.leader()
    follower = next(m for m in cluster.members if m is not leader)
    rest = [m.endpoint for m in cluster.members if m is not follower]
    backend = backend_for([follower.endpoint, *rest])
    cluster.pause(follower)
    try:
        for round_ in range(10):
            move = await move_once(backend, GCP, f"minority-{round_}")
            assert isinstance(move, EpochMove) and move.won, move
            assert move.current.number == round_ + 1
        assert cluster.leader() is leader
    finally:
        cluster.resume(follower)


async def test_a_holder_cut_off_from_etcd_fences_before_another_site_can_take_the_lease(
        etcd_cluster_fresh: EtcdCluster, backend_for: Factory) -> None:
    """The whole cluster stopped: the holder's rule says fence before its lease can expire; another site gets
    the lease only after that moment, once etcd runs again."""
    cluster = etcd_cluster_fresh
    ttl, fence_timeout, margin, interval = 6.0, 2.0, 1.0, 1.5
    holder_backend = backend_for(cluster.endpoints)
    grant = await holder_backend.acquire_lease("shop", AZURE, ttl)
    assert isinstance(grant, LeaseGrant) and grant.ttl == ttl
    view = HolderView(grant.ttl, grant.renewed_at)
    for member in cluster.members:
        cluster.pause(member)
    fenced_at = None
    try:
        deadline = time.monotonic() + ttl + 10
        while fenced_at is None and time.monotonic() < deadline:
            if keepalive_due(view, time.monotonic(), interval):
                renewed = await holder_backend.renew_lease(grant)
                assert isinstance(renewed, Unavailable), renewed  # nobody answers a stopped cluster
            judgement = judge_holder(view, time.monotonic(), fence_timeout, margin, interval)
            if judgement.action == "fence":
                fenced_at = time.monotonic()
                assert fenced_at < judgement.expires_at - fence_timeout, judgement  # the fence has its time left
            await asyncio.sleep(0.1)
    finally:
        for member in cluster.members:
            cluster.resume(member)
    assert fenced_at is not None, "the holder never fenced"
    taker = backend_for(cluster.endpoints)
    while True:
        taken = await taker.acquire_lease("shop", GCP, ttl)
        if isinstance(taken, LeaseGrant):
            break
        assert isinstance(taken, LeaseTaken | Unavailable), taken
        assert time.monotonic() < fenced_at + 30, "the lease never expired"
        await asyncio.sleep(0.2)
    assert time.monotonic() >= view.renewed_at + ttl > fenced_at + fence_timeout
    assert isinstance(await holder_backend.renew_lease(grant), LeaseLost)


async def test_after_a_whole_site_is_lost_another_site_takes_the_lease_after_its_ttl(
        etcd_cluster_fresh: EtcdCluster, backend_for: Factory) -> None:
    """Azure's engine and its etcd member die: GCP is refused the lease until the TTL ran out, then gets it."""
    cluster = etcd_cluster_fresh
    ttl = 4.0
    azure_member, *gcp_members = cluster.members
    azure = backend_for([m.endpoint for m in cluster.members])
    grant = await azure.acquire_lease("shop", AZURE, ttl)
    assert isinstance(grant, LeaseGrant)
    renewed = await azure.renew_lease(grant)
    assert isinstance(renewed, LeaseRenewed)
    last_renewal = renewed.grant.renewed_at
    cluster.kill(azure_member)  # the site is gone: its etcd member, and its engine stops renewing
    gcp = backend_for([m.endpoint for m in gcp_members])
    refusals = 0
    while True:
        taken = await gcp.acquire_lease("shop", GCP, ttl)
        if isinstance(taken, LeaseGrant):
            break
        if isinstance(taken, LeaseTaken):
            assert taken.holder == AZURE
            refusals += 1
        assert time.monotonic() < last_renewal + ttl + 15, "the lease of the lost site never expired"
        await asyncio.sleep(0.2)
    assert refusals > 0
    assert time.monotonic() >= last_renewal + ttl  # never before the lost holder's lease could have run out
    assert await gcp.read_lease("shop") == GCP


async def test_with_every_member_down_each_call_is_unavailable_not_an_exception(
        etcd_cluster_fresh: EtcdCluster, backend_for: Factory) -> None:
    """All three members killed: reads, moves, leases, votes and operator writes return 'unreachable' in time."""
    backend = backend_for(etcd_cluster_fresh.endpoints)
    for member in etcd_cluster_fresh.members:
        etcd_cluster_fresh.kill(member)
    started = time.monotonic()
    results = [
        await backend.read_epoch("shop"),
        await backend.acquire_lease("shop", AZURE, 5),
        await backend.read_votes("shop"),
        await backend.read_operator("shop"),
        await backend.read_lease("shop"),
    ]
    assert all(isinstance(r, Unavailable) and r.kind == "unreachable" for r in results), results
    assert time.monotonic() - started < 5 * (2.0 + 1.0)  # each within its 2 s deadline (and a little scheduling)
    stream = backend.watch("shop", 0)
    first = await asyncio.wait_for(anext(stream), 10)
    await stream.aclose()
    assert isinstance(first, Unavailable) and first.kind == "unreachable"
