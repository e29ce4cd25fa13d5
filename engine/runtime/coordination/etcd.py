"""The etcd coordination backend: :class:`~engine.core.coordination.Coordination` on etcd keys.

Key layout under ``prefix`` (values are JSON)::

    {prefix}/services/{service}/epoch           {"epoch", "site", "moved_by", "token"}  (txn on mod_revision)
    {prefix}/services/{service}/lease           {"site", "voter"}  (attached to the holder's etcd lease)
    {prefix}/services/{service}/votes/{voter}   {"voter", "site", "epoch", "summary", "at"}  (on a vote lease)
    {prefix}/services/{service}/operator/{key}  {"key", "value", "by", "at"}  (versioned by mod_revision)

- The epoch moves only by a transaction comparing its ``mod_revision`` (a linearizable CAS); with a
  lease given, the transaction also compares that the service's lease key is attached to that lease,
  so a holder whose lease expired cannot move it. A move whose answer was lost is retried with the
  same token: the loser's branch returns the epoch, and the token says whether it was ours.
- The write lease is an etcd lease; the key exists only while the lease lives, so a holder that stops
  renewing loses it after the TTL and another can take it (etcd counts the TTL, not our clocks).
- Votes sit on one lease per backend (``vote_ttl``), so the vote of a voter that went silent vanishes.
- Operator keys are written by compare-and-set on their ``mod_revision`` (their version).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from engine.core.coordination import (
    NO_EPOCH,
    Change,
    Epoch,
    EpochMove,
    Holder,
    LeaseGrant,
    LeaseLost,
    LeaseRenewed,
    LeaseTaken,
    OperatorEntry,
    OperatorValue,
    OperatorView,
    OperatorWrite,
    Resync,
    Unavailable,
    Vote,
)
from engine.core.coordination_values import OPERATOR_KEYS, JsonObject, OperatorKey, decode, encode
from engine.runtime.coordination.etcd_client import (
    EtcdClient,
    EtcdError,
    KeyValue,
    compare_absent,
    compare_lease,
    compare_mod,
    prefix_end,
    put_op,
    range_op,
)


def _unavailable(error: EtcdError) -> Unavailable:
    where = f" ({error.endpoint})" if error.endpoint else ""
    match error.kind:
        case "unreachable" | "malformed":
            return Unavailable(error.kind, f"etcd: {error.message}{where}")
        case _:
            return Unavailable("rejected", f"etcd: {error.message}{where}")


def _record(kv: KeyValue) -> JsonObject | None:
    try:
        value = json.loads(kv.value)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _dump(record: JsonObject) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


class EtcdCoordination:
    """Coordination for every service of one engine, on one etcd cluster."""

    def __init__(self, client: EtcdClient, prefix: str = "/failover-engine", *, vote_ttl: float = 10.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.vote_ttl = vote_ttl
        self._monotonic = monotonic
        self._vote_lease: int | None = None
        self._vote_lease_renewed = 0.0

    # --- keys --------------------------------------------------------------------------------------

    def service_prefix(self, service: str) -> bytes:
        return f"{self.prefix}/services/{service}/".encode()

    def key(self, service: str, *parts: str) -> bytes:
        return self.service_prefix(service) + "/".join(parts).encode()

    # --- epoch -------------------------------------------------------------------------------------

    async def read_epoch(self, service: str) -> Epoch | Unavailable:
        result = await self.client.range(self.key(service, "epoch"))
        if isinstance(result, EtcdError):
            return _unavailable(result)
        return self._epoch(result.kvs[0] if result.kvs else None)

    def _epoch(self, kv: KeyValue | None) -> Epoch | Unavailable:
        if kv is None:
            return NO_EPOCH
        record = _record(kv)
        if record is None:
            return Unavailable("malformed", f"epoch key at revision {kv.mod_revision} is not a JSON object")
        return Epoch.from_record(record, kv.mod_revision)

    async def move_epoch(self, service: str, expected: Epoch, site: str, by: Holder, token: str, *,
                         lease: LeaseGrant | None = None) -> EpochMove | Unavailable:
        key = self.key(service, "epoch")
        new = expected.successor(site, by, token)
        compare = [compare_mod(key, expected.revision)]
        if lease is not None:
            compare.append(compare_lease(self.key(service, "lease"), lease.lease_id))
        result = await self.client.txn(compare, [put_op(key, _dump(new.record())), range_op(key)], [range_op(key)])
        if isinstance(result, EtcdError):
            return _unavailable(result)
        kvs = result.ranges[0].kvs if result.ranges else ()
        current = self._epoch(kvs[0] if kvs else None)
        if isinstance(current, Unavailable):
            return current
        if result.succeeded:
            return EpochMove(True, current, f"epoch {current.number}: {site} is active (moved by {by})")
        if current.token == token and token:
            return EpochMove(True, current, f"epoch {current.number}: {site} is active (an earlier attempt of "
                                            "this move was applied)")
        if lease is not None and current.revision == expected.revision:
            return EpochMove(False, current, f"refused: {by} no longer holds the write lease of {service}")
        return EpochMove(False, current, f"lost the race: epoch {current.number} already moved to {current.site} "
                                         f"by {current.moved_by}")

    # --- write lease -------------------------------------------------------------------------------

    async def acquire_lease(self, service: str, holder: Holder, ttl: float) -> LeaseGrant | LeaseTaken | Unavailable:
        key = self.key(service, "lease")
        sent = self._monotonic()
        granted = await self.client.lease_grant(max(1, math.ceil(ttl)))
        if isinstance(granted, EtcdError):
            return _unavailable(granted)
        lease_id, granted_ttl = granted
        value = _dump({"site": holder.site, "voter": holder.voter})
        result = await self.client.txn([compare_absent(key)], [put_op(key, value, lease_id)], [range_op(key)])
        if isinstance(result, EtcdError):
            await self.client.lease_revoke(lease_id)
            return _unavailable(result)
        if result.succeeded:
            return LeaseGrant(service, holder, lease_id, float(granted_ttl), sent)
        await self.client.lease_revoke(lease_id)
        kvs = result.ranges[0].kvs if result.ranges else ()
        current = self._holder(kvs[0]) if kvs else None
        if current == holder and kvs:  # ours already (an earlier answer lost, or this voter restarted)
            adopted = LeaseGrant(service, holder, kvs[0].lease, float(granted_ttl), sent)
            renewed = await self.renew_lease(adopted)
            return renewed.grant if isinstance(renewed, LeaseRenewed) else LeaseTaken(service, holder)
        return LeaseTaken(service, current)

    @staticmethod
    def _holder(kv: KeyValue) -> Holder | None:
        record = _record(kv)
        if record is None:
            return None
        site, voter = record.get("site"), record.get("voter")
        return Holder(site, voter) if isinstance(site, str) and isinstance(voter, str) else None

    async def renew_lease(self, grant: LeaseGrant) -> LeaseRenewed | LeaseLost | Unavailable:
        sent = self._monotonic()
        ttl = await self.client.lease_keepalive(grant.lease_id)
        if isinstance(ttl, EtcdError):
            return _unavailable(ttl)
        if ttl <= 0:
            return LeaseLost(f"etcd lease {grant.lease_id:x} of {grant.service} expired or was revoked")
        renewed = LeaseGrant(grant.service, grant.holder, grant.lease_id, grant.ttl, sent)
        return LeaseRenewed(renewed, float(ttl))

    async def release_lease(self, grant: LeaseGrant) -> Unavailable | None:
        error = await self.client.lease_revoke(grant.lease_id)
        return None if error is None else _unavailable(error)

    async def read_lease(self, service: str) -> Holder | Unavailable | None:
        result = await self.client.range(self.key(service, "lease"))
        if isinstance(result, EtcdError):
            return _unavailable(result)
        if not result.kvs:
            return None
        holder = self._holder(result.kvs[0])
        return holder if holder is not None else Unavailable("malformed", f"lease key of {service} does not decode")

    # --- votes -------------------------------------------------------------------------------------

    async def publish_vote(self, vote: Vote) -> int | Unavailable:
        key = self.key(vote.service, "votes", vote.voter)
        for _ in range(2):
            lease = await self._vote_lease_id()
            if isinstance(lease, Unavailable):
                return lease
            revision = await self.client.put(key, _dump(vote.record()), lease)
            if not isinstance(revision, EtcdError):
                return revision
            if revision.kind != "not_found":
                return _unavailable(revision)
            self._vote_lease = None  # the vote lease expired while we were away: take a new one
        return Unavailable("rejected", "etcd: the vote lease vanished twice in a row")

    async def _vote_lease_id(self) -> int | Unavailable:
        now = self._monotonic()
        if self._vote_lease is not None and now - self._vote_lease_renewed < self.vote_ttl / 3:
            return self._vote_lease
        if self._vote_lease is not None:
            ttl = await self.client.lease_keepalive(self._vote_lease)
            if isinstance(ttl, EtcdError):
                return _unavailable(ttl)
            if ttl > 0:
                self._vote_lease_renewed = now
                return self._vote_lease
        granted = await self.client.lease_grant(max(1, math.ceil(self.vote_ttl)))
        if isinstance(granted, EtcdError):
            return _unavailable(granted)
        self._vote_lease, self._vote_lease_renewed = granted[0], now
        return granted[0]

    async def read_votes(self, service: str) -> tuple[Vote, ...] | Unavailable:
        """Every voter's current vote (a record that does not decode is no vote)."""
        start = self.key(service, "votes", "")
        result = await self.client.range(start, prefix_end(start))
        if isinstance(result, EtcdError):
            return _unavailable(result)
        votes = []
        for kv in result.kvs:
            record = _record(kv)
            vote = None if record is None else Vote.from_record(service, record, kv.mod_revision)
            if isinstance(vote, Vote):
                votes.append(vote)
        return tuple(votes)

    # --- operator state ----------------------------------------------------------------------------

    def _entry(self, key: OperatorKey, kv: KeyValue) -> OperatorEntry | str:
        record = _record(kv)
        decoded = decode(key, record) if record is not None else f"operator key {key}: not a JSON object"
        if isinstance(decoded, str):
            return decoded
        value, by, at = decoded
        return OperatorEntry(value, by, at, kv.mod_revision)

    async def read_operator(self, service: str) -> OperatorView | Unavailable:
        start = self.key(service, "operator", "")
        result = await self.client.range(start, prefix_end(start))
        if isinstance(result, EtcdError):
            return _unavailable(result)
        entries: dict[OperatorKey, OperatorEntry] = {}
        problems: list[str] = []
        for kv in result.kvs:
            name = kv.key[len(start):].decode(errors="replace")
            key = next((k for k in OPERATOR_KEYS if k == name), None)
            entry = self._entry(key, kv) if key is not None else f"unknown operator key {name!r}"
            if isinstance(entry, str):
                problems.append(entry)
            elif key is not None:
                entries[key] = entry
        return OperatorView(entries, result.revision, tuple(problems))

    async def write_operator(self, service: str, value: OperatorValue, by: str, at: float, *,
                             expect_version: int) -> OperatorWrite | Unavailable:
        key = self.key(service, "operator", value.key)
        result = await self.client.txn([compare_mod(key, expect_version)],
                                       [put_op(key, _dump(encode(value, by, at))), range_op(key)], [range_op(key)])
        if isinstance(result, EtcdError):
            return _unavailable(result)
        kvs = result.ranges[0].kvs if result.ranges else ()
        current = self._entry(value.key, kvs[0]) if kvs else None
        if isinstance(current, str):
            return Unavailable("malformed", current)
        if result.succeeded:
            version = current.version if current else 0
            return OperatorWrite(True, current, f"{value.key} set by {by} (version {version})")
        holder = f"version {current.version} by {current.by}" if current else "it was removed"
        return OperatorWrite(False, current, f"{value.key} not written: expected version {expect_version}, "
                                             f"the store has {holder}")

    # --- watch -------------------------------------------------------------------------------------

    async def watch(self, service: str, since_revision: int) -> AsyncGenerator[Change | Resync | Unavailable, None]:
        start = self.service_prefix(service)
        end = prefix_end(start)
        revision = since_revision
        while True:
            async with aclosing(self.client.watch(start, end, revision + 1)) as stream:
                async for item in stream:
                    if isinstance(item, EtcdError):
                        if item.kind == "compacted":
                            break  # the stream has ended; re-read below and start over
                        yield _unavailable(item)
                        continue
                    for event in item.events:
                        change = self._change(service, start, event.kv, event.kind == "delete")
                        if change is not None:
                            yield change
                    revision = max(revision, item.revision)
            now = await self.client.range(start, end)
            if isinstance(now, EtcdError):
                yield _unavailable(now)
                continue
            revision = now.revision
            yield Resync("etcd: watch history compacted; re-read the state", revision)

    @staticmethod
    def _change(service: str, start: bytes, kv: KeyValue, deleted: bool) -> Change | None:
        parts = kv.key[len(start):].decode(errors="replace").split("/")
        kinds: dict[str, Any] = {"epoch": "epoch", "lease": "lease", "votes": "vote", "operator": "operator"}
        kind = kinds.get(parts[0])
        if kind is None:
            return None
        return Change(service, kind, parts[1] if len(parts) > 1 else "", kv.mod_revision,
                      None if deleted else _record(kv))

    async def close(self) -> None:
        if self._vote_lease is not None:
            await self.client.lease_revoke(self._vote_lease)
            self._vote_lease = None
        await self.client.close()
