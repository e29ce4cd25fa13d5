"""The etcd client against a real cluster: built from the config, with etcd's own authentication."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest

from engine.config import parse_config
from engine.core.coordination import Epoch, EpochMove, Holder, Unavailable
from engine.runtime.coordination.build import etcd_from_config
from engine.runtime.coordination.etcd import EtcdCoordination
from engine.runtime.coordination.etcd_client import Credentials, EtcdClient, EtcdError
from tests.support.etcd import EtcdCluster

pytestmark = [pytest.mark.real]

PASSWORD = "root-password-for-tests"


def gateway(endpoint: str, path: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(f"{endpoint}/v3/{path}", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = json.loads(response.read())
    assert isinstance(answer, dict)
    return answer


async def test_a_backend_built_from_the_config_moves_the_epoch(etcd_cluster: EtcdCluster) -> None:
    """coordination: {type: etcd, endpoints: [...]} gives a backend that reads and moves the epoch on the cluster."""
    endpoints = ", ".join(f'"{e}"' for e in etcd_cluster.endpoints)
    config = parse_config(f"""
instance: {{id: gcp-1, site: gcp}}
coordination: {{type: etcd, endpoints: [{endpoints}], prefix: /built/{uuid.uuid4().hex}}}
""", env={})
    backend = etcd_from_config(config.coordination)
    try:
        epoch = await backend.read_epoch("shop")
        assert isinstance(epoch, Epoch) and epoch.number == 0
        move = await backend.move_epoch("shop", epoch, "gcp", Holder("gcp", "gcp-1"), "t")
        assert isinstance(move, EpochMove) and move.won
    finally:
        await backend.close()


async def test_with_etcd_auth_the_right_password_works_and_a_wrong_one_is_refused(
        etcd_cluster_fresh: EtcdCluster) -> None:
    """After `auth enable`: the client with the root password moves the epoch; without or with a wrong one it is
    told 'rejected', and the password appears in no result."""
    endpoint = etcd_cluster_fresh.endpoints[0]
    gateway(endpoint, "auth/role/add", {"name": "root"})
    gateway(endpoint, "auth/user/add", {"name": "root", "password": PASSWORD})
    gateway(endpoint, "auth/user/grant", {"user": "root", "role": "root"})
    gateway(endpoint, "auth/enable", {})
    good = EtcdCoordination(EtcdClient(etcd_cluster_fresh.endpoints, credentials=Credentials("root", PASSWORD)),
                            "/auth")
    anonymous = EtcdCoordination(EtcdClient(etcd_cluster_fresh.endpoints), "/auth")
    wrong = EtcdClient(etcd_cluster_fresh.endpoints, credentials=Credentials("root", "not-the-password"))
    try:
        epoch = await good.read_epoch("shop")
        assert isinstance(epoch, Epoch)
        move = await good.move_epoch("shop", epoch, "gcp", Holder("gcp", "gcp-1"), "t")
        assert isinstance(move, EpochMove) and move.won
        refused = await anonymous.read_epoch("shop")
        assert isinstance(refused, Unavailable) and refused.kind == "rejected"
        denied = await wrong.range(b"/auth/services/shop/epoch")
        assert isinstance(denied, EtcdError) and denied.kind == "rejected"
        assert "not-the-password" not in repr(denied) and PASSWORD not in repr(good.client.__dict__)
    finally:
        await good.close()
        await anonymous.close()
        await wrong.close()
