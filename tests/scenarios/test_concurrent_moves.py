"""Two engines asked to move the same service at the same moment: one runbook across the cluster, the others
refused with 409 naming the operation that won, before any step ran (engine processes over loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster, running

pytestmark = pytest.mark.slow
RACERS = [(f"racer{i}", "operator", f"race-token-{i:02d}-0123456789") for i in range(6)]
TOKENS = [*RACERS, ("watcher", "viewer", "race-viewer-0123456789")]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with running(Cluster(tmp_path, api_tokens=TOKENS)) as c:
        yield c


async def race(cluster: Cluster, path: str, body: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """Every racer posts the same move to one of the two engines, all at once."""
    engines = ["engine-gcp", "engine-azure"]
    calls = [cluster.call(engines[i % 2], "POST", path, token, {**body, "reason": f"race {i}"})
             for i, (_, _, token) in enumerate(RACERS)]
    return list(await asyncio.gather(*calls))


async def all_operations(cluster: Cluster) -> dict[str, dict[str, Any]]:
    ops = [op for vid in ("engine-gcp", "engine-azure") for op in await cluster.operations(vid)]
    return {op["id"]: op for op in ops}


async def test_simultaneous_moves_on_two_engines_start_one_runbook(cluster: Cluster) -> None:
    """Six operators at once on both engines: one 202, the rest 409; one operation ran steps, the others none."""
    answers = await race(cluster, "/v1/services/shop/failover", {"fence_first": True})
    started = [body for status, body in answers if status == 202]
    assert len(started) == 1, answers
    winner = started[0]["operation"]
    for status, body in answers:
        if status != 202:
            assert status == 409, body
            assert body["error"] in ("operation_in_progress", "already_active", "refused"), body
    await cluster.wait_for("engine-azure", lambda s: s["services"]["shop"]["active"] == "azure", what="the move")
    ops = await all_operations(cluster)
    ran = [op for op in ops.values() if op["steps"]]
    assert [op["id"] for op in ran] == [winner]
    assert all(op["state"] == "stood_down" for op in ops.values() if op["id"] != winner)
    for op in ops.values():
        if op["id"] != winner:  # a loser names the winner
            assert winner in op["message"], op
    assert cluster.dns_site() == "azure"
