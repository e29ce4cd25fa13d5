"""A separate process that races to move one service's epoch: ``python -m tests.support.etcd_mover``.

Arguments: ``PREFIX VOTER ROUNDS ENDPOINT...``. Each round reads the epoch and tries to move it by
compare-and-set; a lost answer is retried with the same token. Prints one JSON line: the epoch
numbers this process won, with their tokens, and how many attempts the store refused or missed.
"""

from __future__ import annotations

import asyncio
import json
import sys

from engine.core.coordination import Epoch, EpochMove, Holder
from engine.runtime.coordination.etcd import EtcdCoordination
from engine.runtime.coordination.etcd_client import EtcdClient


async def race(prefix: str, voter: str, rounds: int, endpoints: list[str]) -> dict[str, object]:
    backend = EtcdCoordination(EtcdClient(endpoints, request_timeout=1.0, deadline=5.0), prefix)
    holder = Holder(voter, voter)
    won: list[tuple[int, str]] = []
    lost = unavailable = 0
    try:
        for round_ in range(rounds):
            token = f"{voter}-{round_}"
            epoch = await backend.read_epoch("shop")
            while not isinstance(epoch, Epoch):
                unavailable += 1
                epoch = await backend.read_epoch("shop")
            move = await backend.move_epoch("shop", epoch, voter, holder, token)
            while not isinstance(move, EpochMove):  # outcome unknown: the same move again, same token
                unavailable += 1
                move = await backend.move_epoch("shop", epoch, voter, holder, token)
            if move.won:
                won.append((move.current.number, move.current.token))
            else:
                lost += 1
    finally:
        await backend.close()
    return {"voter": voter, "won": won, "lost": lost, "unavailable": unavailable}


if __name__ == "__main__":
    prefix, voter, rounds, *endpoints = sys.argv[1:]
    print(json.dumps(asyncio.run(race(prefix, voter, int(rounds), endpoints))))
