"""The network-namespace topology (tests/support/netns.py) against the real kernel, nftables, PostgreSQL, BIND.

Sites reach each other and the root namespace through the bridge; ``cut`` stalls established TCP
connections and new connects (``drop``) or fails them at once (``reject``); ``heal`` restores them,
pending data included; ``isolate`` keeps the clients' path unless told otherwise; a PostgreSQL pair
replicates across two namespaces and stops replicating while they are cut; BIND answers on the dns
namespace's address; nothing is left behind, even after a failing test or a ``kill -9``'d owner.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import psycopg
import pytest

from engine.config.database import DatabaseConfig
from tests.support.netns import REGISTRY, ROOT, Topology
from tests.support.postgres import wait_until

pytestmark = pytest.mark.real

ROOT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology(("gcp", "azure", "witness")) as topology:
        yield topology


def listener(topo: Topology, site: str) -> socket.socket:
    sock = topo.socket(site)
    sock.bind((topo.ip(site), 0))
    sock.listen(8)
    sock.settimeout(2)
    return sock


def connect(topo: Topology, src: str, server: socket.socket, timeout: float = 2.0) -> socket.socket:
    """A TCP connection from ``src`` to ``server`` (raises OSError/TimeoutError when it cannot)."""
    sock = topo.socket(src)
    sock.settimeout(timeout)
    try:
        sock.connect(server.getsockname())
    except BaseException:
        sock.close()
        raise
    return sock


def can_connect(topo: Topology, src: str, server: socket.socket, timeout: float = 0.3) -> bool:
    try:
        sock = connect(topo, src, server, timeout)
    except OSError:
        return False
    sock.close()
    with contextlib.suppress(OSError):
        server.accept()[0].close()
    return True


def leftovers(name: str) -> list[str]:
    """Namespaces, links and registry records of topology ``name`` that still exist."""
    found = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                       check=True).stdout.split() if n.startswith(name)]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    found += [line.split(":")[1].strip() for line in links.splitlines() if name in line]
    return found + [str(p) for p in REGISTRY.glob(f"{name}*.json")]


async def test_sites_and_root_reach_each_other_through_the_bridge(topo: Topology) -> None:
    assert len({topo.ip(s) for s in (*topo.sites, ROOT)}) == 4
    assert topo.root_ip == str(next(topo.subnet.hosts()))
    servers = {site: listener(topo, site) for site in (*topo.sites, ROOT)}
    for src in (*topo.sites, ROOT):
        for dst, server in servers.items():
            if src != dst:
                client = connect(topo, src, server)
                peer, address = server.accept()
                assert address[0] == topo.ip(src), (src, dst, address)  # no NAT: the site's own address
                client.sendall(b"hello")
                assert peer.recv(5) == b"hello"
                client.close()
                peer.close()
    # commands run in the namespace: it has its own eth0 with the site's address, lo up, and the peers
    shown = (await topo.exec_in("gcp", ["ip", "-o", "-4", "addr", "show"])).stdout
    assert f"inet {topo.ip('gcp')}/24" in shown and "inet 127.0.0.1/8" in shown and f"inet {topo.root_ip}/" not in shown
    probe = (f"import socket; socket.create_connection(({topo.ip('azure')!r}, "
             f"{servers['azure'].getsockname()[1]}), timeout=2).close()")
    await topo.exec_in("gcp", [sys.executable, "-c", probe])
    servers["azure"].accept()[0].close()
    proc = topo.popen("witness", [sys.executable, "-c", "import os; print(os.readlink('/proc/self/ns/net'))"],
                      stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=10)
    assert out.strip() == subprocess.run(
        ["ip", "netns", "exec", topo.netns("witness"), "readlink", "/proc/self/ns/net"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert out.strip() != os.readlink("/proc/self/ns/net")


def test_drop_cut_stalls_established_and_new_connections_and_heal_restores_both(topo: Topology) -> None:
    server = listener(topo, "azure")
    client = connect(topo, "gcp", server)
    peer = server.accept()[0]
    peer.settimeout(0.5)
    client.sendall(b"before")
    assert peer.recv(6) == b"before"

    topo.cut("gcp", "azure")
    assert topo.cuts == {("gcp", "azure"): "drop", ("azure", "gcp"): "drop"}
    client.sendall(b"during")  # accepted by the kernel, retransmitted into the void
    with pytest.raises(TimeoutError):
        peer.recv(6)
    for src, dst in (("gcp", server), ("azure", listener(topo, "gcp"))):
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # a black hole: no refusal, a timeout
            connect(topo, src, dst, timeout=0.4)
        assert time.monotonic() - started >= 0.35
    assert can_connect(topo, "witness", server), "a cut between two sites leaves the third alone"
    assert can_connect(topo, ROOT, server)

    topo.heal()
    assert topo.cuts == {}
    peer.settimeout(6)  # the next retransmission (exponential backoff from 200 ms) delivers it
    assert peer.recv(6) == b"during"
    assert can_connect(topo, "gcp", server)
    assert "fe_partition" not in topo.ruleset("gcp")
    peer.close()


def test_one_way_cut_loses_one_direction_only(topo: Topology) -> None:
    def udp(site: str) -> socket.socket:
        sock = topo.socket(site, kind=socket.SOCK_DGRAM)
        sock.bind((topo.ip(site), 0))
        sock.settimeout(0.3)
        return sock

    gcp, azure = udp("gcp"), udp("azure")
    topo.cut("gcp", "azure", both_ways=False)
    gcp.sendto(b"lost", azure.getsockname())  # the sender sees success, as on a real network
    with pytest.raises(TimeoutError):
        azure.recv(10)
    azure.sendto(b"delivered", gcp.getsockname())
    assert gcp.recv(10) == b"delivered"
    topo.heal("azure", "gcp")
    gcp.sendto(b"again", azure.getsockname())
    assert azure.recv(10) == b"again"


def test_reject_cut_fails_established_and_new_connections_at_once(topo: Topology) -> None:
    azure_server, gcp_server = listener(topo, "azure"), listener(topo, "gcp")
    client = connect(topo, "gcp", azure_server)
    peer = azure_server.accept()[0]
    topo.cut("gcp", "azure", mode="reject")
    started = time.monotonic()
    with pytest.raises(ConnectionResetError):
        client.sendall(b"x")
        client.recv(1)
    for src, server in (("gcp", azure_server), ("azure", gcp_server)):
        with pytest.raises(ConnectionRefusedError):
            connect(topo, src, server)
    assert time.monotonic() - started < 0.5, "reject must fail fast, not time out"
    peer.close()
    topo.cut("gcp", "azure")  # re-cutting replaces the mode
    assert set(topo.cuts.values()) == {"drop"}
    topo.heal("gcp")
    assert can_connect(topo, "gcp", azure_server) and can_connect(topo, "azure", gcp_server)


def test_isolate_keeps_the_clients_unless_told(topo: Topology) -> None:
    servers = {site: listener(topo, site) for site in (*topo.sites, ROOT)}
    topo.isolate("gcp")
    assert not can_connect(topo, "gcp", servers["azure"])
    assert not can_connect(topo, "witness", servers["gcp"])
    assert can_connect(topo, "azure", servers["witness"])
    assert can_connect(topo, ROOT, servers["gcp"]), "the client network still reaches an isolated site"
    assert can_connect(topo, "gcp", servers[ROOT])

    topo.isolate("gcp", clients=False)
    assert not can_connect(topo, ROOT, servers["gcp"])
    assert not can_connect(topo, "gcp", servers[ROOT])
    assert can_connect(topo, ROOT, servers["azure"])

    topo.heal("gcp")
    assert topo.cuts == {}
    assert all(can_connect(topo, src, servers[dst]) for src in ("gcp", ROOT) for dst in ("azure", "witness"))
    assert can_connect(topo, ROOT, servers["gcp"])


def test_pg_pair_replicates_across_namespaces_and_stops_while_cut(topo: Topology) -> None:
    pg = topo.pg_pair("gcp", "azure")
    db = pg.replicate()
    assert f"host={topo.ip('gcp')} port=5432" in pg.primary_dsn
    assert f"host={topo.ip('azure')} port=5432" in pg.standby_dsn
    (conninfo,) = db.on_standby("SELECT subconninfo FROM pg_subscription")[0]
    assert f"host={topo.ip('gcp')}" in str(conninfo)  # replication crosses the namespace network

    db.on_primary("INSERT INTO accounts (owner, balance) VALUES ('alice', 10)")
    db.wait_caught_up()
    assert db.on_standby("SELECT owner FROM accounts") == [("alice",)]

    config = DatabaseConfig.model_validate(pg.database_config())
    assert (config.sites["gcp"].host, config.sites["azure"].host) == (topo.ip("gcp"), topo.ip("azure"))

    def from_gcp(dsn: str) -> object:  # what the engine in gcp sees: both servers, by address
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            return conn.execute("SELECT host(inet_server_addr())").fetchone()

    assert topo.call_in("gcp", lambda: from_gcp(pg.standby_dsn)) == (topo.ip("azure"),)
    assert topo.call_in("gcp", lambda: from_gcp(pg.primary_dsn)) == (topo.ip("gcp"),)

    topo.cut("gcp", "azure")
    db.on_primary("INSERT INTO accounts (owner, balance) VALUES ('bob', 20)")
    time.sleep(0.7)
    assert db.on_standby("SELECT count(*) FROM accounts") == [(1,)], "replicated through a cut"
    with pytest.raises(psycopg.OperationalError):
        topo.call_in("gcp", lambda: from_gcp(pg.standby_dsn))
    topo.heal()
    wait_until(lambda: db.on_standby("SELECT count(*) FROM accounts") == [(2,)], 15, "replication after heal")


def test_bind_answers_on_the_dns_namespace_address() -> None:
    with Topology(("gcp", "dns")) as topo:
        server = topo.start_named()
        assert (server.host, server.port) == (topo.ip("dns"), 53)
        assert server.query("app", "A") == ["192.0.2.10"]
        query = dns.message.make_query("app.example.test.", "A")
        answer = topo.call_in("gcp", lambda: dns.query.udp(query, topo.ip("dns"), port=53, timeout=1))
        assert answer.answer[0][0].to_text() == "192.0.2.10"
        topo.isolate("dns", clients=False)
        with pytest.raises(dns.exception.Timeout):
            dns.query.udp(query, topo.ip("dns"), port=53, timeout=0.3)
        process = server.process
    assert process.poll() is not None


def test_stop_removes_everything_even_after_a_failure_and_kills_what_runs_inside() -> None:
    first, second = Topology(("gcp", "azure")), Topology(("gcp",))
    with pytest.raises(RuntimeError, match="test failed"), first, second:
        assert first.name != second.name and not first.subnet.overlaps(second.subnet)
        tracked = first.popen("gcp", ["sleep", "60"])
        subprocess.run([*first.wrap("azure"), "sh", "-c", "sleep 61 >/dev/null 2>&1 &"], check=True)
        stray = subprocess.run(["ip", "netns", "pids", first.netns("azure")], capture_output=True, text=True,
                               check=True).stdout.split()
        assert stray
        first.cut("gcp", "azure")
        raise RuntimeError("test failed")
    assert tracked.poll() is not None
    assert all(not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
               for pid in stray)
    assert leftovers(first.name) == [] and leftovers(second.name) == []


def test_a_dead_owners_topology_is_swept_by_the_next_one() -> None:
    script = ("import sys, time; sys.path.insert(0, sys.argv[1]); from tests.support.netns import Topology; "
              "t = Topology(('gcp', 'azure')).start(); print(t.name, flush=True); time.sleep(60)")
    owner = subprocess.Popen([sys.executable, "-c", script, str(ROOT_DIR)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        name = owner.stdout.readline().strip()
        assert name and leftovers(name), "the owner's topology exists"
        record = json.loads((REGISTRY / f"{name}.json").read_text())
        assert record["pid"] == owner.pid
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        if owner.stdout is not None:
            owner.stdout.close()
    with Topology(("gcp",)):
        assert leftovers(name) == []


async def test_async_context_manager_and_commands_in_a_namespace() -> None:
    async with Topology(("gcp",)) as topo:
        name = topo.name
        def interfaces(dev: str) -> set[str]:
            return {line.split(":")[0].strip() for line in dev.splitlines()[2:]}

        assert interfaces((await topo.exec_in("gcp", ["cat", "/proc/net/dev"])).stdout) == {"lo", "eth0"}
        assert topo.bridge in interfaces((await topo.exec_in(ROOT, ["cat", "/proc/net/dev"])).stdout)
        failed = await topo.exec_in("gcp", ["sh", "-c", "exit 3"], check=False)
        assert failed.returncode == 3
    assert leftovers(name) == []
