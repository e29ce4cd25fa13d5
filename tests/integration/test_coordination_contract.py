"""The coordination contract, written against the seam: every backend must pass it (etcd now; peer next).

The ``store`` fixture yields a factory of :class:`~engine.core.coordination.Coordination` instances
that share one store, one per simulated voter. Add a backend by adding a parameter.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import pytest

from engine.core.coordination import (
    NO_EPOCH,
    Change,
    Coordination,
    Epoch,
    EpochMove,
    Holder,
    LeaseGrant,
    LeaseLost,
    LeaseRenewed,
    LeaseTaken,
    OperatorView,
    OperatorWrite,
    Vote,
)
from engine.core.coordination_values import Arm, Breaker, Pause
from engine.runtime.coordination.etcd import EtcdCoordination
from engine.runtime.coordination.etcd_client import EtcdClient

pytestmark = [pytest.mark.real]

Store = Callable[[], Coordination]
GCP, AZURE = Holder("gcp", "gcp-1"), Holder("azure", "azure-1")


@pytest.fixture(params=["etcd"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A factory of coordination instances sharing one fresh store (a new key prefix on the etcd cluster)."""
    made: list[Coordination] = []
    cluster = request.getfixturevalue("etcd_cluster")
    prefix = f"/contract/{uuid.uuid4().hex}"

    def make() -> Coordination:
        backend = EtcdCoordination(EtcdClient(cluster.endpoints, request_timeout=1.0, deadline=5.0), prefix,
                                   vote_ttl=10)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


async def epoch_of(backend: Coordination, service: str = "shop") -> Epoch:
    epoch = await backend.read_epoch(service)
    assert isinstance(epoch, Epoch), epoch
    return epoch


async def test_a_service_starts_at_epoch_zero(store: Store) -> None:
    """A service never moved has epoch 0 at revision 0, no site, no mover."""
    assert await epoch_of(store()) == NO_EPOCH


async def test_the_second_mover_from_the_same_epoch_loses_and_sees_the_winner(store: Store) -> None:
    """Two voters moving from the same epoch: the first wins, the second is told who won and to where."""
    first, second = store(), store()
    start = await epoch_of(first)
    won = await first.move_epoch("shop", start, "azure", AZURE, "t-azure")
    lost = await second.move_epoch("shop", start, "gcp", GCP, "t-gcp")
    assert isinstance(won, EpochMove) and won.won and won.current.number == 1
    assert isinstance(lost, EpochMove) and not lost.won
    assert (lost.current.number, lost.current.site, lost.current.moved_by) == (1, "azure", AZURE)
    assert lost.message == "lost the race: epoch 1 already moved to azure by azure-1@azure"
    assert await epoch_of(second) == won.current


async def test_concurrent_movers_get_exactly_one_winner_per_epoch(store: Store) -> None:
    """Eight voters racing for twenty rounds: every epoch number is won exactly once, with no gap."""
    voters = [store() for _ in range(8)]
    wins: list[tuple[int, str]] = []

    async def mover(index: int, backend: Coordination) -> None:
        holder = Holder("gcp" if index % 2 else "azure", f"v{index}")
        for round_ in range(20):
            epoch = await epoch_of(backend)
            move = await backend.move_epoch("shop", epoch, holder.site, holder, f"{index}-{round_}")
            assert isinstance(move, EpochMove), move
            if move.won:
                wins.append((move.current.number, move.current.token))

    await asyncio.gather(*(mover(i, b) for i, b in enumerate(voters)))
    numbers = sorted(number for number, _ in wins)
    assert numbers == list(range(1, len(numbers) + 1))
    assert (await epoch_of(voters[0])).number == len(numbers)


async def test_a_move_retried_with_its_token_is_recognised_as_applied(store: Store) -> None:
    """A mover whose answer was lost retries with the same token and learns that its move was applied."""
    backend = store()
    start = await epoch_of(backend)
    first = await backend.move_epoch("shop", start, "azure", AZURE, "t-1")
    again = await backend.move_epoch("shop", start, "azure", AZURE, "t-1")
    assert isinstance(first, EpochMove) and isinstance(again, EpochMove)
    assert again.won and again.current == first.current


async def test_the_write_lease_has_one_holder_until_released(store: Store) -> None:
    """A second site is refused the lease and told who holds it; after a release it gets it."""
    azure, gcp = store(), store()
    grant = await azure.acquire_lease("shop", AZURE, 20)
    assert isinstance(grant, LeaseGrant) and grant.holder == AZURE and grant.ttl >= 20
    assert await gcp.acquire_lease("shop", GCP, 20) == LeaseTaken("shop", AZURE)
    assert await gcp.read_lease("shop") == AZURE
    assert await azure.release_lease(grant) is None
    assert await gcp.read_lease("shop") is None
    taken = await gcp.acquire_lease("shop", GCP, 20)
    assert isinstance(taken, LeaseGrant) and taken.holder == GCP


async def test_a_renewal_moves_the_lease_forward_and_a_released_one_is_lost(store: Store) -> None:
    """Renewing a held lease moves its renewal time; renewing a released one says it is lost."""
    backend = store()
    grant = await backend.acquire_lease("shop", AZURE, 20)
    assert isinstance(grant, LeaseGrant)
    renewed = await backend.renew_lease(grant)
    assert isinstance(renewed, LeaseRenewed) and renewed.grant.renewed_at >= grant.renewed_at
    assert 0 < renewed.remaining <= grant.ttl
    await backend.release_lease(grant)
    assert isinstance(await backend.renew_lease(grant), LeaseLost)


async def test_a_voter_that_restarts_takes_back_its_own_lease(store: Store) -> None:
    """The same voter asking again for the lease it holds gets it back (same lease), not a refusal."""
    before, after = store(), store()
    grant = await before.acquire_lease("shop", AZURE, 20)
    again = await after.acquire_lease("shop", AZURE, 20)
    assert isinstance(grant, LeaseGrant) and isinstance(again, LeaseGrant)
    assert again.lease_id == grant.lease_id


async def test_an_epoch_move_guarded_by_a_released_lease_is_refused(store: Store) -> None:
    """Moving the epoch with a lease no longer held is refused and the epoch stays."""
    backend = store()
    grant = await backend.acquire_lease("shop", AZURE, 20)
    assert isinstance(grant, LeaseGrant)
    start = await epoch_of(backend)
    held = await backend.move_epoch("shop", start, "azure", AZURE, "t-held", lease=grant)
    assert isinstance(held, EpochMove) and held.won
    await backend.release_lease(grant)
    stale = await backend.move_epoch("shop", held.current, "gcp", AZURE, "t-stale", lease=grant)
    assert isinstance(stale, EpochMove) and not stale.won
    assert stale.message == "refused: azure-1@azure no longer holds the write lease of shop"
    assert (await epoch_of(backend)).number == 1


async def test_each_voter_has_one_current_vote(store: Store) -> None:
    """Votes of two voters are both read back; a voter's new vote replaces its old one."""
    gcp, azure = store(), store()
    await gcp.publish_vote(Vote("shop", "gcp-1", "gcp", 0, {"gcp": "up", "azure": "up"}, 1.0))
    await azure.publish_vote(Vote("shop", "azure-1", "azure", 0, {"gcp": "up", "azure": "up"}, 1.0))
    await azure.publish_vote(Vote("shop", "azure-1", "azure", 0, {"gcp": "down", "azure": "up"}, 2.0))
    votes = await gcp.read_votes("shop")
    assert isinstance(votes, tuple)
    assert {(v.voter, v.summary["gcp"], v.at) for v in votes} == {("gcp-1", "up", 1.0), ("azure-1", "down", 2.0)}


async def test_operator_state_is_written_by_version(store: Store) -> None:
    """A write from a stale version is refused and shows the winner; from the current version it lands."""
    alice, bob = store(), store()
    first = await alice.write_operator("shop", Pause(True, 2e9, "maintenance"), "alice", 10.0, expect_version=0)
    assert isinstance(first, OperatorWrite) and first.written and first.current is not None
    stale = await bob.write_operator("shop", Pause(False, None, ""), "bob", 11.0, expect_version=0)
    assert isinstance(stale, OperatorWrite) and not stale.written
    assert stale.current == first.current
    version = first.current.version
    assert stale.message == f"pause not written: expected version 0, the store has version {version} by alice"
    await bob.write_operator("shop", Breaker(2, True), "engine", 12.0, expect_version=0)
    await bob.write_operator("shop", Arm(False), "engine", 12.0, expect_version=0)
    view = await bob.read_operator("shop")
    assert isinstance(view, OperatorView) and not view.problems
    assert {k: e.value for k, e in view.entries.items()} == {
        "pause": Pause(True, 2e9, "maintenance"), "breaker": Breaker(2, True), "arm": Arm(False)}
    resume = await bob.write_operator("shop", Pause(False, None, ""), "bob", 13.0, expect_version=view.version("pause"))
    assert isinstance(resume, OperatorWrite) and resume.written


async def test_a_watch_sees_every_change_in_order(store: Store) -> None:
    """A watch from the start sees the epoch move, the lease taken and released, a vote and an operator write."""
    backend, watcher = store(), store()
    seen: list[Change] = []

    async def watch() -> None:
        async with aclosing(watcher.watch("shop", 0)) as stream:  # type: ignore[type-var]
            async for change in stream:
                if isinstance(change, Change):
                    seen.append(change)
                    if change.kind == "operator":
                        return

    task = asyncio.create_task(watch())
    grant = await backend.acquire_lease("shop", AZURE, 20)
    assert isinstance(grant, LeaseGrant)
    await backend.move_epoch("shop", await epoch_of(backend), "azure", AZURE, "t-w", lease=grant)
    await backend.release_lease(grant)
    await backend.publish_vote(Vote("shop", "azure-1", "azure", 1, {"azure": "up"}, 3.0))
    await backend.write_operator("shop", Arm(True), "alice", 4.0, expect_version=0)
    await asyncio.wait_for(task, 10)
    assert [(c.kind, c.name, c.record is None) for c in seen] == [
        ("lease", "", False), ("epoch", "", False), ("lease", "", True), ("vote", "azure-1", False),
        ("operator", "arm", False)]
    assert [c.revision for c in seen] == sorted(c.revision for c in seen)
