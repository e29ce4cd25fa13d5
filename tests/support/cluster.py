"""Several engine processes on loopback, wired through fault proxies, for scenario tests.

Topology: two sample sites (``gcp``, ``azure``), a real BIND serving the service's records with the epoch TXT
beside them, and voters (``engine-gcp``, ``engine-azure``, optionally ``witness``), each a real ``python -m
engine run`` process with its own journal. Every path a voter uses goes through its own
:class:`~tests.support.faultproxy.FaultProxy`: voter→site probes, voter→peer verdicts and voter→DNS updates
and reads (TCP), and voter→DNS verification queries (UDP, through a
:class:`~tests.support.faultproxy.UdpRelay` that can drop them). So a test can cut exactly the paths a real
partition would: ``isolate("gcp")`` cuts every path between the gcp side (its site and its engine) and
everything else.

With ``etcd=`` (a running :class:`~tests.support.etcd.EtcdCluster`) the voters run ``coordination: {type:
etcd}`` under a prefix of their own; each voter reaches every etcd member through its own proxy, so
``cut(vid, "etcd")`` cuts one voter off from the whole etcd cluster (the members still reach each other).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from engine.demo.sample_site import SampleSite
from tests.support.bind import NamedServer, start_named
from tests.support.etcd import EtcdCluster
from tests.support.faultproxy import FaultProxy, UdpRelay

ROOT = Path(__file__).resolve().parents[2]
PEER_KEY = "scenario-peer-key-0123456789abcdef"


def pair_key(a: str, b: str) -> str:
    """The key voters ``a`` and ``b`` alone share (each link its own key, as in production)."""
    return f"{PEER_KEY}-{'-'.join(sorted((a, b)))}"
TARGETS = {"gcp": "192.0.2.10", "azure": "198.51.100.10"}
RECORDS = (("app", "A", 30, (TARGETS["gcp"],)),
           ("_failover-epoch.app", "TXT", 30, ('"epoch=1 site=gcp op=initial"',)))


@dataclass
class Voter:
    id: str
    site: str
    role: str
    port: int
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    site_proxies: dict[str, FaultProxy] = field(default_factory=dict)
    peer_proxies: dict[str, FaultProxy] = field(default_factory=dict)
    dns_proxy: FaultProxy | None = None
    etcd_proxies: list[FaultProxy] = field(default_factory=list)  # one per etcd member (etcd mode)
    log_offset: int = 0  # where this launch's log lines start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _started_port(log: Path, offset: int) -> int | None:
    if not log.exists():
        return None
    with log.open("rb") as f:
        f.seek(offset)
        for line in f:
            if b'"engine started"' in line:
                api = json.loads(line)["api"]
                return int(api.rsplit(":", 1)[1])
    return None


class Observing:
    """What both clusters (loopback and network namespaces) share: waiting on a voter's status, and reading
    where BIND points. Subclasses provide ``status(vid)``, ``voters`` and ``named``."""

    named: NamedServer | None
    voters: dict[str, Any]

    async def status(self, vid: str) -> dict[str, Any]:
        raise NotImplementedError

    def failure_context(self) -> str:
        """More to print when a wait fails (e.g. the engines' logs)."""
        return ""

    async def wait_for(self, vid: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
                       what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = await self.status(vid)
                if predicate(last):
                    return last
            except (aiohttp.ClientError, OSError, TimeoutError, KeyError):
                pass
            await asyncio.sleep(0.05)
        extra = self.failure_context()
        raise AssertionError(f"{vid}: {what} not met within {timeout}s; last status: "
                             f"{json.dumps(last.get('services', last), default=str)[:3000]}"
                             + (f"\n{extra}" if extra else ""))

    async def wait_sites_up(self, voters: Sequence[str] | None = None, timeout: float = 15.0) -> None:
        """Until every site of ``shop`` is up for each voter (all voters by default)."""
        for vid in voters if voters is not None else list(self.voters):
            await self.wait_for(vid, lambda s: all(x["health"] == "up"
                                                   for x in s["services"]["shop"]["sites"].values()),
                                timeout=timeout, what="every site up")

    def dns_site(self) -> str:
        """Where BIND's ``app`` A record points now."""
        assert self.named is not None
        values = self.named.query("app", "A")
        return {v: k for k, v in TARGETS.items()}.get(values[0] if values else "", "unknown")

    def dns_epoch(self) -> str:
        """The epoch TXT as BIND answers it now, e.g. ``"epoch=2 site=azure op=..."``."""
        assert self.named is not None
        return " ".join(self.named.query("_failover-epoch.app", "TXT"))


class Cluster(Observing):
    def __init__(self, workdir: Path, *, witness: bool = True, interval: float = 0.3, timeout: float = 0.2,
                 threshold: int = 3, rpo: float = 30.0, cooldown: str = "10m",
                 tick: float = 0.2, executors: dict[str, list[str]] | None = None,
                 extra_service: Callable[[str], str] | None = None, webhooks: Sequence[tuple[str, str]] = (),
                 api_tokens: Sequence[tuple[str, str, str]] = (), policy: str = "switchover_ttl: 30s",
                 extra_probes: dict[str, str] | None = None, etcd: EtcdCluster | None = None,
                 etcd_settings: str = "lease_ttl: 8s, keepalive_interval: 1s, request_timeout: 300ms, deadline: 1s, "
                                      "vote_ttl: 4s", start_timeout: float = 20.0) -> None:
        self.workdir = workdir
        self.etcd = etcd
        self.etcd_prefix = f"/scenario/{workdir.name}"
        self.etcd_settings = etcd_settings
        self.start_timeout = start_timeout  # per engine, to its "engine started" line (a loaded machine is slow)
        self.interval, self.timeout, self.tick, self.threshold = interval, timeout, tick, threshold
        self.rpo = rpo
        self.cooldown = cooldown
        self.voter_specs = [("engine-gcp", "gcp", "engine"), ("engine-azure", "azure", "engine")]
        if witness:
            self.voter_specs.append(("witness", "witness", "witness"))
        self.executors = executors or {}
        self.extra_service = extra_service
        self.webhooks = list(webhooks)  # (url, format)
        self.api_tokens = list(api_tokens)  # (name, role, token)
        # more policy keys; by default a switchover finds the records' 30 s TTL low enough (no 30 s wait per move)
        self.policy = policy
        # more probes per site, each a YAML flow mapping (e.g. a tcp probe of the site's database port)
        self.extra_probes = dict(extra_probes or {})
        self.sites: dict[str, SampleSite] = {}
        self.voters: dict[str, Voter] = {}
        self.named: NamedServer | None = None
        self.proxies: list[FaultProxy] = []
        self.verify_relays: dict[str, UdpRelay] = {}  # voter -> the UDP path its verification queries take

    # -- setup -----------------------------------------------------------------------------------
    async def _proxy(self, port: int) -> FaultProxy:
        proxy = await FaultProxy("127.0.0.1", port).start()
        self.proxies.append(proxy)
        return proxy

    async def start(self) -> Cluster:
        self.named = await asyncio.to_thread(start_named, zone="example.test", records=RECORDS)
        for site in ("gcp", "azure"):
            self.sites[site] = await SampleSite(site).start()
        for vid, site, role in self.voter_specs:
            # each engine binds a port of the kernel's choosing and logs it (no free-port race)
            self.voters[vid] = Voter(vid, site, role, 0, self.workdir / f"{vid}.yaml", self.workdir / f"{vid}.log")
        for voter in self.voters.values():
            for site, sample in self.sites.items():
                voter.site_proxies[site] = await self._proxy(sample.port)
            for other in self.voters.values():
                if other.id != voter.id:
                    voter.peer_proxies[other.id] = await self._proxy(0)  # aimed once the peer has started
            voter.dns_proxy = await self._proxy(self.named.port)
            if self.etcd is not None:
                voter.etcd_proxies = [await self._proxy(m.client_port) for m in self.etcd.members]
            self.verify_relays[voter.id] = await UdpRelay("127.0.0.1", self.named.port).start()
            voter.config.write_text(self._config(voter))
        for voter in self.voters.values():
            self.launch(voter.id)
        try:
            for voter in self.voters.values():
                await self.wait_api(voter.id, self.start_timeout)
        except BaseException:
            await self.stop()  # a start that fails must not leave engine processes behind
            raise
        return self

    def _config(self, v: Voter) -> str:
        assert self.named is not None and v.dns_proxy is not None
        peers = "\n".join(
            f"  - {{id: {o.id}, site: {o.site}, role: {o.role}, url: 'http://{v.peer_proxies[o.id].address}', "
            f"key: '{pair_key(v.id, o.id)}'}}" for o in self.voters.values() if o.id != v.id)
        probes = {site: f"[{{type: http, name: health, url: 'http://{v.site_proxies[site].address}/health', "
                        f"interval: {self.interval}, timeout: {self.timeout}}}"
                        + (f", {self.extra_probes[site]}" if site in self.extra_probes else "") + "]"
                  for site in self.sites}
        executors = self.executors.get(v.id, [])
        dns = v.dns_proxy.address
        extra = self.extra_service(v.id) if self.extra_service else ""
        return f"""
instance: {{id: {v.id}, site: {v.site}, role: {v.role}, listen: "127.0.0.1:0", tick: {self.tick}}}
peers:
{peers}
peering: {{replay_window: 10s}}
journal: {{path: "{self.workdir / (v.id + '.db')}"}}
logging: {{format: json, level: info}}
{self._notifications()}
{self._api()}
services:
  shop:
    active: gcp
    policy: {{failure_threshold: {self.threshold}, success_threshold: 2, rpo: {self.rpo}, cooldown: {self.cooldown},
              failback_healthy_for: 1s, {self.policy + ', ' if self.policy else ''}
              executors: {json.dumps(executors)}}}
    sites:
      gcp: {{probes: {probes['gcp']}}}
      azure: {{probes: {probes['azure']}}}
    dns:
      provider: {{type: rfc2136, servers: ["{dns}"], zone: example.test, timeout: 1s, attempts: 2, backoff: 50ms,
                  tsig: {{name: failover-key, algorithm: hmac-sha256, secret: "${{TSIG_SECRET}}"}}}}
      records: [{{name: app, type: A, ttl: 30s, targets: {{gcp: ["{TARGETS['gcp']}"], azure: ["{TARGETS['azure']}"]}}}}]
      epoch_record: _failover-epoch.app
      verify: {{nameservers: ["{self.verify_relays[v.id].address}"], deadline: 3s, interval: 50ms,
               query_timeout: 300ms}}
{extra}
{self._coordination(v)}
"""

    def _coordination(self, v: Voter) -> str:
        if self.etcd is None:
            return ""
        endpoints = ", ".join(f'"http://{p.address}"' for p in v.etcd_proxies)
        return (f"coordination: {{type: etcd, endpoints: [{endpoints}], prefix: {self.etcd_prefix}, "
                f"{self.etcd_settings}}}")

    def _api(self) -> str:
        if not self.api_tokens:
            return ""
        from engine.http.auth import hash_token

        tokens = ", ".join(f"{{name: {n}, role: {r}, sha256: {hash_token(t)}}}" for n, r, t in self.api_tokens)
        return f"api: {{tokens: [{tokens}], mutations_per_minute: 20}}"

    async def call(self, vid: str, method: str, path: str, token: str | None = None,
                   body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        async with aiohttp.ClientSession() as s, s.request(
                method, self.voters[vid].url + path, data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=5)) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text

    def _notifications(self) -> str:
        if not self.webhooks:
            return ""
        hooks = ", ".join(f"{{url: '{url}', format: {fmt}, attempts: 3, backoff: 100ms, timeout: 1s}}"
                          for url, fmt in self.webhooks)
        return f"notifications: {{webhooks: [{hooks}]}}"

    def launch(self, vid: str) -> None:
        voter = self.voters[vid]
        voter.port = 0
        voter.log_offset = voter.log.stat().st_size if voter.log.exists() else 0
        assert self.named is not None
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PEER_KEY": PEER_KEY, "TSIG_SECRET": self.named.secret}
        log = voter.log.open("ab")
        voter.proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(voter.config)],
                                      cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    async def wait_api(self, vid: str, timeout: float = 20.0) -> None:
        """Wait for the engine's "engine started" log line, learn its port, point the peers' proxies at it."""
        voter = self.voters[vid]
        deadline = time.monotonic() + timeout
        offset = voter.log_offset
        while time.monotonic() < deadline:
            port = _started_port(voter.log, offset)
            if port is not None:
                voter.port = port
                for other in self.voters.values():
                    if vid in other.peer_proxies:
                        other.peer_proxies[vid].target = ("127.0.0.1", port)
                await self.status(vid)
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{vid} did not start; log:\n{voter.log.read_text()[-3000:]}")

    # -- observing -------------------------------------------------------------------------------
    async def get(self, vid: str, path: str) -> Any:
        token = next((t for _, role, t in self.api_tokens if role == "viewer"), None)
        _, data = await self.call(vid, "GET", path, token)
        return data

    async def status(self, vid: str) -> dict[str, Any]:
        token = next((t for _, role, t in self.api_tokens if role == "viewer"), None)
        return await self.status_as(vid, token)

    async def status_as(self, vid: str, token: str | None) -> dict[str, Any]:
        status, data = await self.call(vid, "GET", "/v1/status", token)
        if status != 200:
            raise aiohttp.ClientError(f"status {status}: {data}")
        result: dict[str, Any] = data
        return result

    async def operations(self, vid: str) -> list[dict[str, Any]]:
        data: dict[str, Any] = await self.get(vid, "/v1/operations?service=shop")
        ops: list[dict[str, Any]] = data["operations"]
        return ops

    # -- faults ----------------------------------------------------------------------------------
    async def cut(self, viewer: str, target: str, mode: str = "blackhole") -> None:
        """Cut one path: ``target`` is a site name, a voter id, ``dns`` or ``etcd`` (every member)."""
        v = self.voters[viewer]
        if target == "etcd":
            for etcd_proxy in v.etcd_proxies:
                await etcd_proxy.set(mode)
            return
        proxy = v.site_proxies.get(target) or v.peer_proxies.get(target) or (v.dns_proxy if target == "dns" else None)
        assert proxy is not None, f"no path {viewer} -> {target}"
        await proxy.set(mode)

    async def heal(self) -> None:
        for proxy in self.proxies:
            await proxy.set("pass")

    async def isolate(self, site: str, mode: str = "blackhole") -> None:
        """Cut everything between ``site`` (its sample site and its engine) and the rest."""
        inside = {vid for vid, v in self.voters.items() if v.site == site}
        for vid in self.voters:
            if vid in inside:
                for other in self.voters:
                    if other not in inside and other != vid:
                        await self.cut(vid, other, mode)
                for s in self.sites:
                    if s != site:
                        await self.cut(vid, s, mode)
                await self.cut(vid, "dns", mode)
            else:
                await self.cut(vid, site, mode)
                for other in inside:
                    await self.cut(vid, other, mode)

    def signal(self, vid: str, sig: signal.Signals) -> None:
        proc = self.voters[vid].proc
        assert proc is not None
        proc.send_signal(sig)

    async def kill(self, vid: str) -> None:
        self.signal(vid, signal.SIGKILL)
        proc = self.voters[vid].proc
        assert proc is not None
        await asyncio.to_thread(proc.wait, 10)

    async def stop(self) -> None:
        for voter in self.voters.values():
            if voter.proc is not None and voter.proc.poll() is None:
                voter.proc.send_signal(signal.SIGCONT)
                voter.proc.terminate()
        for voter in self.voters.values():
            if voter.proc is not None:
                try:
                    await asyncio.to_thread(voter.proc.wait, 10)
                except subprocess.TimeoutExpired:
                    voter.proc.kill()
        for proxy in self.proxies:
            await proxy.stop()
        for relay in self.verify_relays.values():
            await relay.stop()
        for site in self.sites.values():
            await site.stop()
        if self.named is not None:
            await asyncio.to_thread(self.named.stop)

    def logs(self) -> str:
        return "\n".join(f"--- {v.id}\n{v.log.read_text()[-4000:]}" for v in self.voters.values() if v.log.exists())


@contextlib.asynccontextmanager
async def running(cluster: Cluster) -> AsyncIterator[Cluster]:
    """``cluster`` started with every site up, stopped at the end whatever happens (a scenario's fixture)."""
    await cluster.start()
    try:
        await cluster.wait_sites_up()
        yield cluster
    finally:
        await cluster.stop()
