"""Operator state in etcd keys (``coordination.type: etcd``): one truth for every engine.

Pause (with its expiry), the breaker's trip, arm, the drift acknowledgement (and any other key of
:mod:`engine.core.operator_state`) live at ``services/{service}/operator/{key}`` as
``{"key", "value", "by", "at", "voter"}``. The key's etcd ``mod_revision`` is its version: etcd's
revision is one counter for the whole cluster, so versions are totally ordered without a Lamport clock.

- **Writing** (:meth:`EtcdOperatorState.publish`): the change is applied and journaled here at once
  (the caller did), then written by a transaction comparing the key's ``mod_revision`` with the version
  this engine last saw. A writer from a stale version is refused: the winner stays, an ``alert`` names
  both values, and the next tick adopts the winner. A write etcd did not answer is retried each tick.
- **Adopting** (:meth:`EtcdOperatorState.adopt`): each tick the values of the latest read of etcd (made
  by the etcd peering) whose version differs from ours are applied here, as in peer mode.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from engine.core.operator_state import KEYS, Conflict, Stamped
from engine.runtime.context import RuntimeContext
from engine.runtime.coordination.etcd import EtcdCoordination
from engine.runtime.coordination.etcd_client import EtcdError, compare_mod, put_op, range_op
from engine.runtime.coordination.etcd_peering import EtcdPeering
from engine.runtime.service import ServiceRuntime
from engine.runtime.shared_operator import SharedOperatorState


def stamped(record: Mapping[str, Any], revision: int) -> Stamped | None:
    """The entry a stored record holds (None when it does not decode)."""
    value, voter, at, by = record.get("value"), record.get("voter"), record.get("at"), record.get("by")
    if not isinstance(value, Mapping) or not isinstance(voter, str) or not isinstance(at, int | float):
        return None
    return Stamped(dict(value), revision, voter, float(at), by if isinstance(by, str) else None)


class EtcdOperatorState(SharedOperatorState):
    def __init__(self, ctx: RuntimeContext, peering: EtcdPeering, backend: EtcdCoordination) -> None:
        super().__init__(ctx, peering)
        self.etcd_peering = peering
        self.backend = backend
        self.pending: dict[tuple[str, str], Stamped] = {}  # (service, key) -> a write etcd has not confirmed yet
        self._retry: asyncio.Task[None] | None = None

    async def publish(self, rt: ServiceRuntime, key: str, value: Mapping[str, Any], by: str | None) -> Stamped:
        if key not in KEYS:
            raise ValueError(f"unknown operator key {key!r}; known: {list(KEYS)}")
        now = self.ctx.clock.now()
        previous = self.state(rt.name).get(key)
        entry = Stamped(dict(value), previous.version if previous is not None else 0, self.ctx.instance_id, now, by)
        self.states[rt.name] = {**self.state(rt.name), key: entry}
        await self._save(rt.name, now)
        self.pending[(rt.name, key)] = entry
        await self._write(rt.name, key, entry, now)
        return self.state(rt.name)[key]

    async def _write(self, service: str, key: str, entry: Stamped, now: float) -> None:
        """Compare-and-set ``key`` on the version ``entry`` was written from; on success the entry takes etcd's
        revision as its version. A refusal keeps the winner (adopted next tick) and raises an alert."""
        path = self.backend.key(service, "operator", key)
        record = {"key": key, "value": dict(entry.value), "by": entry.by, "at": entry.at, "voter": entry.voter}
        body = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
        result = await self.backend.client.txn([compare_mod(path, entry.version)], [put_op(path, body)],
                                               [range_op(path)])
        if isinstance(result, EtcdError) or self.pending.get((service, key)) is not entry:
            return  # unanswered: retried at the next tick (the same compare: applied at most once); or superseded
        del self.pending[(service, key)]
        if result.succeeded:
            written = Stamped(entry.value, result.revision, entry.voter, entry.at, entry.by)
            self.states[service] = {**self.state(service), key: written}
            await self._save(service, now)
            return
        kvs = result.ranges[0].kvs if result.ranges else ()
        winner = None
        if kvs:
            try:
                raw = json.loads(kvs[0].value)
            except ValueError:
                raw = None
            winner = stamped(raw, kvs[0].mod_revision) if isinstance(raw, dict) else None
        if winner is not None and winner.voter == entry.voter and winner.at < entry.at:
            # our own earlier write landed after this one was made from the version before it: write again on it
            again = Stamped(entry.value, winner.version, entry.voter, entry.at, entry.by)
            self.pending[(service, key)] = again
            await self._write(service, key, again, now)
            return
        if winner is not None and dict(winner.value) != dict(entry.value):
            conflict = Conflict(key, winner, entry)
            self.conflicts.setdefault(service, []).append(conflict)
            del self.conflicts[service][:-16]
            await self.ctx.record("alert", f"{service}: {key} {dict(entry.value)} refused by etcd: written from "
                                  f"version {entry.version}, but {winner.voter} wrote {dict(winner.value)} at version "
                                  f"{winner.version} first; theirs stands", service=service, at=now,
                                  data={"conflict": conflict.to_dict()})

    async def _retry_pending(self, service: str, now: float) -> None:
        for (name, key), entry in list(self.pending.items()):
            if name == service:
                await self._write(name, key, entry, now)

    async def adopt(self, rt: ServiceRuntime, now: float) -> list[str]:
        """Retry unconfirmed writes (in the background: etcd down must not hold the tick), then apply every key
        whose version in the latest read of etcd differs."""
        if any(service == rt.name for service, _ in self.pending) and \
                (self._retry is None or self._retry.done()):
            self._retry = asyncio.create_task(self._retry_pending(rt.name, now), name=f"operator keys {rt.name}")
        read = self.etcd_peering.read
        if read is None:
            return []
        mine = self.state(rt.name)
        merged = dict(mine)
        for key, (record, revision) in read.service(rt.name).operator.items():
            if key not in KEYS or (rt.name, key) in self.pending:
                continue
            stored = stamped(record, revision)
            held = mine.get(key)
            if stored is not None and (held is None or stored.version > held.version):
                merged[key] = stored
        return await self.keep_merged(rt, mine, merged, now, versions="etcd version", skip_own=True)
