"""A real etcd cluster for tests: three members (by default) on 127.0.0.1 free ports in a fresh directory.

:func:`start_cluster` starts every member (``/usr/bin/etcd`` from Debian's ``etcd-server``), waits until
each answers and the cluster has a leader; :meth:`EtcdCluster.stop` ends them all and removes the
directory. Faults act on real processes: :meth:`EtcdCluster.kill` (SIGKILL), :meth:`EtcdCluster.pause`
/ :meth:`EtcdCluster.resume` (SIGSTOP / SIGCONT: a member that stops answering, as when isolated or
stalled), :meth:`EtcdCluster.restart`. Under ``CI=true`` a missing ``etcd`` is a failure, elsewhere a skip.

Fixtures:

- ``etcd_cluster``: one three-member cluster per test module (tests share it under distinct prefixes).
- ``etcd_cluster_fresh``: a cluster of the test's own, for tests that kill or stop members.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.demo.bind import terminate
from tests.support import free_port, require_binary

_HINT = "install etcd: apt-get install -y etcd-server (scripts/bootstrap does)"


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    host: str = "127.0.0.1"
    netns_site: str | None = None  # started in this namespace of ``EtcdCluster.topology`` (tests.support.netns)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def status(self, timeout: float = 1.0) -> dict[str, object] | None:
        """This member's ``maintenance/status`` (its id and the leader it knows), or None if it does not answer."""
        request = urllib.request.Request(f"{self.endpoint}/v3/maintenance/status", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return answer if isinstance(answer, dict) else None


@dataclass
class EtcdCluster:
    binary: str
    directory: Path
    members: list[EtcdMember] = field(default_factory=list)
    topology: Any = None  # a tests.support.netns.Topology when members run in network namespaces

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def _spawn(self, member: EtcdMember, state: str) -> None:
        command = [
            self.binary, "--name", member.name, "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.endpoint, "--advertise-client-urls", member.endpoint,
            "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", self._initial_cluster(), "--initial-cluster-state", state,
            "--initial-cluster-token", self.directory.name, "--log-level", "warn", "--logger", "zap",
            # a member cut off and back must not depose a healthy leader (the default from etcd 3.5 on)
            "--pre-vote=true",
            # the default raft timing (100 ms heartbeats, 1 s election timeout): what a real cluster on one LAN runs
        ]
        log = member.log.open("ab")
        if member.netns_site is not None:
            member.process = self.topology.popen(member.netns_site, command, stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL)
        else:
            member.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        member.paused = False

    def leader(self, timeout: float = 10.0) -> EtcdMember:
        """The member the answering members agree is the leader (waits for one up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            by_id: dict[str, EtcdMember] = {}
            leaders: set[str] = set()
            for member in self.members:
                if member.paused or member.process is None or member.process.poll() is not None:
                    continue
                status = member.status()
                if status is None:
                    continue
                header = status.get("header")
                if isinstance(header, dict):
                    by_id[str(header.get("member_id"))] = member
                if status.get("leader") not in (None, "0"):
                    leaders.add(str(status["leader"]))
            if len(leaders) == 1 and (leader := by_id.get(next(iter(leaders)))) is not None:
                return leader
            time.sleep(0.05)
        raise TimeoutError(f"no etcd leader within {timeout:g}s: see the logs in {self.directory}")

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Every running member answers, and they agree on one leader."""
        deadline = time.monotonic() + timeout
        for member in self.members:
            while member.process is not None and not member.paused and member.status() is None:
                if member.process.poll() is not None:
                    raise RuntimeError(f"etcd {member.name} exited: {member.log.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"etcd {member.name} did not answer within {timeout:g}s")
                time.sleep(0.05)
        self.leader(max(deadline - time.monotonic(), 1.0))

    def kill(self, member: EtcdMember) -> None:
        """SIGKILL: the member is gone at once, as in a crash."""
        if member.process is not None:
            if member.paused:
                member.process.send_signal(signal.SIGCONT)
            member.process.kill()
            member.process.wait(timeout=10)
            member.process = None
        member.paused = False

    def pause(self, member: EtcdMember) -> None:
        """SIGSTOP: the member holds its sockets and answers nothing, like a host cut off or stalled."""
        assert member.process is not None
        member.process.send_signal(signal.SIGSTOP)
        member.paused = True

    def resume(self, member: EtcdMember) -> None:
        if member.process is not None and member.paused:
            member.process.send_signal(signal.SIGCONT)
        member.paused = False

    def restart(self, member: EtcdMember) -> None:
        """Start a killed member again on its own data directory."""
        if member.process is None:
            self._spawn(member, "existing")

    def stop(self) -> None:
        for member in self.members:
            if member.process is not None:
                self.resume(member)
                terminate(member.process)
                member.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster(size: int = 3) -> EtcdCluster:
    """Start a ``size``-member cluster on loopback and wait until it has a leader."""
    binary = require_binary("etcd", hint=_HINT, extra_dirs=("/usr/bin",))
    directory = Path(tempfile.mkdtemp(prefix="etcd-"))
    cluster = EtcdCluster(binary, directory)
    used: set[int] = set()
    for index in range(size):
        ports: list[int] = []
        while len(ports) < 2:
            port = free_port()
            if port not in used:
                used.add(port)
                ports.append(port)
        cluster.members.append(EtcdMember(f"m{index}", ports[0], ports[1], directory / f"m{index}",
                                          directory / f"m{index}.log"))
    try:
        for member in cluster.members:
            cluster._spawn(member, "new")
        cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_in_namespaces(topology: Any, sites: list[str]) -> EtcdCluster:
    """One member per network namespace ``site`` of ``topology`` (tests.support.netns), on the namespace's own
    address, ports 2379 (clients) and 2380 (peers): a partition between namespaces cuts the members too."""
    binary = require_binary("etcd", hint=_HINT, extra_dirs=("/usr/bin",))
    directory = Path(tempfile.mkdtemp(prefix="etcd-netns-"))
    cluster = EtcdCluster(binary, directory, topology=topology)
    for site in sites:
        cluster.members.append(EtcdMember(f"etcd-{site}", 2379, 2380, directory / site, directory / f"{site}.log",
                                          host=topology.ip(site), netns_site=site))
    try:
        for member in cluster.members:
            cluster._spawn(member, "new")
        cluster.wait_ready(30)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running_cluster(size: int = 3) -> Iterator[EtcdCluster]:
    cluster = start_cluster(size)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A three-member etcd cluster shared by the tests of one module."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def etcd_cluster_fresh() -> Iterator[EtcdCluster]:
    """A three-member etcd cluster of this test's own (it may kill or stop members)."""
    with running_cluster() as cluster:
        yield cluster
