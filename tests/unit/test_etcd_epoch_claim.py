"""The etcd claim of a move's epoch before the DNS shift, against an in-memory compare-and-set store."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.coordination import Epoch, EpochMove, Holder, Unavailable
from engine.core.operations import Operation, StepFailed
from engine.runtime.coordination.etcd_epoch import claim

AZURE = Holder("azure", "engine-azure")


class Store:
    """An epoch key with a revision; ``move_epoch`` compares the revision like etcd's transaction."""

    def __init__(self, epoch: Epoch, *, down: bool = False) -> None:
        self.epoch, self.down, self.moves = epoch, down, 0

    async def read_epoch(self, service: str) -> Epoch | Unavailable:
        return Unavailable("unreachable", "no endpoint answered") if self.down else self.epoch

    async def move_epoch(self, service: str, expected: Epoch, site: str, by: Holder, token: str,
                         **_: Any) -> EpochMove | Unavailable:
        if expected.revision != self.epoch.revision:
            return EpochMove(False, self.epoch, "lost the race")
        self.moves += 1
        self.epoch = Epoch(expected.number + 1, site, by, token, self.epoch.revision + 1)
        return EpochMove(True, self.epoch, "moved")


def op(epoch_from: int = 1) -> Operation:
    return Operation("shop-e2-abc", "shop", "failover", "gcp", "azure", epoch_from, epoch_from + 1, "auto")


async def test_a_free_epoch_is_claimed_with_the_operation_as_token() -> None:
    """etcd at the operation's starting epoch: the claim moves it to epoch_to, naming the operation."""
    store = Store(Epoch(1, "gcp", None, "initial", 5))
    assert await claim(store, op(), AZURE) is None  # type: ignore[arg-type]
    assert (store.epoch.number, store.epoch.site, store.epoch.token, store.moves) == (2, "azure", "shop-e2-abc", 1)


async def test_etcd_behind_the_engines_is_claimed_at_the_operations_number() -> None:
    """A first move after switching to etcd (no epoch key yet): the key takes the operation's epoch number."""
    store = Store(Epoch(0, None, None, "", 0))
    assert await claim(store, op(epoch_from=6), AZURE) is None  # type: ignore[arg-type]
    assert store.epoch.number == 7


async def test_a_claim_already_made_by_this_operation_goes_on_without_a_second_write() -> None:
    """A retried step whose first claim was applied recognises its own token and writes nothing."""
    store = Store(Epoch(2, "azure", AZURE, "shop-e2-abc", 9))
    assert await claim(store, op(), AZURE) is None  # type: ignore[arg-type]
    assert store.moves == 0


async def test_an_epoch_claimed_by_another_operation_stands_this_one_down() -> None:
    """Another operation holds epoch 2 in etcd: stand down, DNS untouched."""
    store = Store(Epoch(2, "azure", Holder("gcp", "engine-gcp"), "shop-e2-other", 9))
    outcome = await claim(store, op(), AZURE)  # type: ignore[arg-type]
    assert outcome is not None and outcome.stand_down and "already claimed" in outcome.summary


async def test_etcd_unreachable_fails_the_attempt_to_be_retried() -> None:
    """No answer from etcd: the step attempt fails (retried with the same token), never a guess."""
    with pytest.raises(StepFailed, match="etcd epoch not read"):
        await claim(Store(Epoch(1, "gcp", None, "", 1), down=True), op(), AZURE)  # type: ignore[arg-type]
