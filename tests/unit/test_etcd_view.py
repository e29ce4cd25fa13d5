"""Decoding one read of the engine cluster's etcd keys, and operator records, without etcd."""

from __future__ import annotations

import json

from engine.core.coordination import Holder
from engine.runtime.coordination.etcd_client import KeyValue, RangeResult
from engine.runtime.coordination.etcd_operator import stamped
from engine.runtime.coordination.etcd_view import decode_read

START = b"/fe/services/"


def kv(key: str, value: object, revision: int, lease: int = 0) -> KeyValue:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return KeyValue(START + key.encode(), raw, revision, revision, 1, lease)


def test_a_read_is_sorted_by_service_and_kind() -> None:
    """Votes, the epoch, the lease (with its holder and etcd lease) and operator keys land under their service."""
    read = decode_read(RangeResult((
        kv("shop/epoch", {"epoch": 2, "site": "azure"}, 7),
        kv("shop/lease", {"site": "gcp", "voter": "engine-gcp"}, 8, lease=0x1F),
        kv("shop/votes/engine-azure", {"voter": "engine-azure", "summary": {}}, 9),
        kv("shop/operator/pause", {"key": "pause", "value": {"paused": True}}, 10),
        kv("cart/votes/witness", {"voter": "witness"}, 11),
    ), 11), START, sent_at=5.0)
    shop = read.service("shop")
    assert (read.revision, read.sent_at) == (11, 5.0)
    assert shop.epoch == {"epoch": 2, "site": "azure"} and shop.epoch_revision == 7
    assert shop.lease is not None and shop.lease.holder == Holder("gcp", "engine-gcp") and shop.lease.lease_id == 0x1F
    assert set(shop.votes) == {"engine-azure"} and shop.votes["engine-azure"].revision == 9
    assert shop.operator["pause"][1] == 10
    assert set(read.service("cart").votes) == {"witness"}
    assert read.service("nothing").lease is None


def test_undecodable_records_are_not_guessed_at() -> None:
    """A vote that is not JSON is no vote; a lease record without a holder is a lease held by nobody known."""
    read = decode_read(RangeResult((kv("shop/votes/x", b"not json", 3), kv("shop/lease", {"site": 1}, 4, 9)), 4),
                       START, 0.0)
    assert read.service("shop").votes == {}
    lease = read.service("shop").lease
    assert lease is not None and lease.holder is None and lease.lease_id == 9


def test_an_operator_record_takes_the_etcd_revision_as_its_version() -> None:
    """A stored operator record decodes to an entry versioned by its mod_revision; a broken one to None."""
    entry = stamped({"value": {"paused": True, "until": None}, "voter": "engine-gcp", "at": 12.5, "by": "alice"}, 42)
    assert entry is not None and (entry.version, entry.voter, entry.by) == (42, "engine-gcp", "alice")
    assert stamped({"value": "x", "voter": "v", "at": 1}, 1) is None
