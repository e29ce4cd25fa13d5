"""One read of every key of the engine cluster in etcd, decoded per service (etcd mode).

Each tick the engine reads ``{prefix}/services/`` in ONE linearizable range request (votes, epochs,
write leases and operator keys of every service together) rather than keeping a watch per service:
a range of a few dozen small keys costs one round trip to the leader (``bench/etcd_cas.py``), always
returns the whole current truth (nothing to resynchronise after a compaction or a lost stream), and
the decision loop ticks at that pace anyway. :class:`ClusterRead` is what the etcd peering, the write
lease and the operator state look at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from engine.core.coordination import Holder
from engine.runtime.coordination.etcd_client import KeyValue, RangeResult


@dataclass(frozen=True, slots=True)
class StoredVote:
    voter: str
    record: dict[str, Any]
    revision: int


@dataclass(frozen=True, slots=True)
class StoredLease:
    holder: Holder | None  # None: held, but its record does not decode
    lease_id: int
    revision: int


@dataclass
class ServiceRead:
    votes: dict[str, StoredVote] = field(default_factory=dict)
    epoch: dict[str, Any] | None = None
    epoch_revision: int = 0
    lease: StoredLease | None = None
    operator: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)  # key -> (record, mod_revision)


@dataclass(frozen=True, slots=True)
class ClusterRead:
    """Every service's keys as etcd had them at ``revision``; ``sent_at`` is the local monotonic time the
    read was sent (the state is at least that fresh)."""

    services: dict[str, ServiceRead]
    revision: int
    sent_at: float

    def service(self, name: str) -> ServiceRead:
        return self.services.get(name) or ServiceRead()


def _json(kv: KeyValue) -> dict[str, Any] | None:
    try:
        value = json.loads(kv.value)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def decode_read(result: RangeResult, start: bytes, sent_at: float) -> ClusterRead:
    """Sort the keys under ``start`` (``{prefix}/services/``) by service and kind; unknown keys are ignored."""
    services: dict[str, ServiceRead] = {}
    for kv in result.kvs:
        parts = kv.key[len(start):].decode(errors="replace").split("/")
        if len(parts) < 2:
            continue
        read = services.setdefault(parts[0], ServiceRead())
        record = _json(kv)
        kind, name = parts[1], "/".join(parts[2:])
        if kind == "votes" and name and record is not None:
            read.votes[name] = StoredVote(name, record, kv.mod_revision)
        elif kind == "epoch" and not name:
            read.epoch, read.epoch_revision = record, kv.mod_revision
        elif kind == "lease" and not name:
            site, voter = (record or {}).get("site"), (record or {}).get("voter")
            holder = Holder(site, voter) if isinstance(site, str) and isinstance(voter, str) else None
            read.lease = StoredLease(holder, kv.lease, kv.mod_revision)
        elif kind == "operator" and name and record is not None:
            read.operator[name] = (record, kv.mod_revision)
    return ClusterRead(services, result.revision, sent_at)
