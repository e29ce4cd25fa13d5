"""Real network partitions for tests and benches: network namespaces on a bridge, cut with nftables.

Topology: :class:`Topology` makes one network namespace per named site (``gcp``, ``azure``,
``witness``, ``dns``, ...), each with ``lo`` up and an ``eth0`` that is one end of a veth pair whose
other end is a port of a Linux bridge in the ROOT namespace. All of them, and the bridge itself, get
an address in one private ``10.a.b.0/24`` chosen per topology among the networks the root namespace
does not use: the bridge has ``.1`` (:attr:`Topology.root_ip`, "the client network": the test process
reaches every namespace through it), the sites ``.11``, ``.12``, ... in the order given
(:meth:`Topology.ip`). IPv4 only: ``eth0`` gets no IPv6 link-local address, so nothing goes around
the cuts. Names are unique per instance (``fe<pid % 10000><n>``: the bridge ``fe012301br``, the
namespaces ``fe012301-gcp``, the root ends of the veths ``fe012301h0``...), so parallel pytest
workers never collide; a claim is taken under a lock file and recorded in
``/run/fe-netns/<name>.json``, and a topology whose owner process died (``kill -9``, a pytest
timeout) is swept by the next one that starts.

Partitions: every cut lives in the tables ``inet fe_partition`` (chains ``input`` and ``output``)
and ``netdev fe_partition`` (chain ``egress`` of ``eth0``) of ONE namespace: the first site named in
:meth:`Topology.cut` (the other one when the first is :data:`ROOT`), the isolated site for
:meth:`Topology.isolate`. The rules match the other side's address and are stateless (no
conntrack), so established TCP connections stall (``drop``: the kernel retransmits into the void)
or fail (``reject``: TCP reset, ICMP administratively prohibited) exactly like new ones. Incoming
packets are dropped in ``input``, outgoing ones at ``egress`` (as a lost packet: a drop in
``output`` would fail ``sendto`` with EPERM, which no real partition does; kernels before 5.16
have no egress hook and get that instead). Each change rewrites the owning namespace's tables in
one nft transaction, so a cut takes effect atomically and a heal restores the previous state. The
root namespace's firewall is never touched: a cut between a site and the clients
(``isolate(site, clients=False)``, ``cut(site, ROOT)``) is made in the site's namespace.

Processes: :meth:`Topology.popen` and :meth:`Topology.exec_in` run commands through
``ip netns exec`` (which keeps the environment and remounts ``/sys``); :meth:`Topology.call_in` runs a
Python callable in a thread switched into a namespace, so :meth:`Topology.socket` can make a socket
that lives there (a client or server "in gcp" inside the test process). PostgreSQL
(:class:`NetnsPgPair`, via :mod:`tests.support.postgres`) and BIND (:meth:`Topology.start_named`,
via :mod:`tests.support.bind`) run in namespaces listening on their namespace's address.

Cleanup (:meth:`Topology.stop`, also on ``with``/``async with`` exit and at interpreter exit):
callbacks registered with :meth:`Topology.on_stop` run last-in first-out (servers stop cleanly),
processes from :meth:`Topology.popen` get SIGTERM then SIGKILL after 3 s, every process still in a
namespace gets SIGKILL, then the veths, namespaces and bridge are deleted. Needs root,
``ip`` (iproute2) and ``nft`` (nftables); under ``CI=true`` a missing one is a failure.

Usage::

    async with Topology(("gcp", "azure", "witness", "dns")) as topo:
        pg = topo.pg_pair("gcp", "azure")            # publisher in gcp, subscriber in azure
        db = pg.replicate()
        engine = topo.popen("gcp", [sys.executable, "-m", "engine", "run", "--config", str(cfg)])
        topo.isolate("gcp")                           # gcp <-> azure/witness/dns cut; the test still reaches gcp
        ...
        topo.heal()
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import fcntl
import ipaddress
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from tests.support import require_binary, require_part
from tests.support.bind import NamedServer, start_named
from tests.support.postgres import (
    PG_USER,
    SAMPLE_SCHEMA,
    SAMPLE_TABLES,
    PgCluster,
    PgPair,
    ReplicatedDb,
    require_postgres,
)

T = TypeVar("T")
Mode = Literal["drop", "reject"]

ROOT = "root"  #: the pseudo-site of the root namespace: the test process, "the client network"
TABLE = "fe_partition"
REGISTRY = Path(os.environ.get("FE_NETNS_REGISTRY", "/run/fe-netns"))
_SITE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,19}$")
_CLONE_NEWNET = 0x40000000
_counter = itertools.count(1)
_live: set[Topology] = set()
_IP_HINT = "apt-get install -y iproute2"
_NFT_HINT = "apt-get install -y nftables"


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
         timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}\n"
                           f"{input or ''}".rstrip())
    return result


def _proc_start(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks since boot), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _kill_namespace_processes(netns: str) -> None:
    pids = _run(["ip", "netns", "pids", netns], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _destroy(netns: Sequence[str], links: Sequence[str]) -> None:
    """Kill what runs in ``netns``, delete ``links`` (veth ends, then the bridge) and the namespaces."""
    existing = set(_run(["ip", "netns", "list"], check=False).stdout.split())
    for name in netns:
        if name in existing:
            _kill_namespace_processes(name)
    for link in links:  # deleting one end of a veth deletes the pair
        _run(["ip", "link", "del", link], check=False)
    for name in netns:
        if name in existing:
            _run(["ip", "netns", "del", name], check=False)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the root namespace has an address or a route in (besides the default)."""
    used: list[ipaddress.IPv4Network] = []
    for link in json.loads(_run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
        for addr in link.get("addr_info", []):
            used.append(ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}").network)
    for route in json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(dst, strict=False))
    return used


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Topology:
    """Namespaces for ``sites`` on one bridge in the root namespace; see the module docstring."""

    def __init__(self, sites: Sequence[str] = ("gcp", "azure", "witness", "dns")) -> None:
        sites = tuple(sites)
        if not sites or len(set(sites)) != len(sites) or len(sites) > 100:
            raise ValueError(f"sites must be 1-100 distinct names, got {sites}")
        for site in sites:
            if not _SITE_NAME.match(site) or site == ROOT:
                raise ValueError(f"bad site name {site!r}: lower-case letters, digits, _; not {ROOT!r}")
        self.sites = sites
        self.name = ""
        self.subnet = ipaddress.IPv4Network("0.0.0.0/32")
        self.bridge = ""
        self._addresses: dict[str, str] = {}
        self._namespaces: dict[str, str] = {}
        self._host_links: list[str] = []
        self._edges: dict[tuple[str, str], tuple[Mode, str]] = {}  # (src, dst) -> (mode, owning namespace)
        self._cleanups: list[Callable[[], object]] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._started = False
        self._nft = "nft"
        self._egress = True  # drop outgoing packets at eth0's egress hook (kernel 5.16+), else in output

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> Topology:
        """Create the bridge, the namespaces and their veths (fails or skips without root, ip, nft)."""
        if self._started:
            return self
        require_part("root (CAP_NET_ADMIN) for network namespaces", os.geteuid() == 0,
                     "run as root: namespaces, veths and bridges need CAP_NET_ADMIN")
        require_binary("ip", hint=_IP_HINT, extra_dirs=("/usr/sbin", "/sbin"))
        self._nft = require_binary("nft", hint=_NFT_HINT, extra_dirs=("/usr/sbin", "/sbin"))
        self._started = True
        _live.add(self)
        try:
            self._claim()
            self._build()
        except BaseException:
            self.stop()
            raise
        return self

    def _claim(self) -> None:
        """Under the registry lock: sweep dead owners' topologies, pick free names and subnet, make the bridge."""
        REGISTRY.mkdir(parents=True, exist_ok=True)
        with (REGISTRY / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _sweep_stale()
            links = set(_run(["ip", "-o", "link", "show"]).stdout.split())
            namespaces = _run(["ip", "netns", "list"]).stdout
            for _ in range(100):
                base = f"fe{os.getpid() % 10000:04d}{next(_counter) % 100:02d}"
                if (REGISTRY / f"{base}.json").exists() or f"{base}br:" in links or f"{base}-" in namespaces:
                    continue
                break
            else:
                raise RuntimeError("no free topology name")
            used = _used_networks()
            for record in REGISTRY.glob("*.json"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    used.append(ipaddress.IPv4Network(json.loads(record.read_text())["subnet"]))
            rng = random.Random()
            for _ in range(1000):
                subnet = ipaddress.IPv4Network(f"10.{rng.randrange(100, 250)}.{rng.randrange(0, 256)}.0/24")
                if not any(subnet.overlaps(net) for net in used):
                    break
            else:
                raise RuntimeError("no free 10.x.y.0/24 for a topology")
            self.name, self.subnet, self.bridge = base, subnet, f"{base}br"
            hosts = list(subnet.hosts())
            self._addresses = {ROOT: str(hosts[0])} | {site: str(hosts[10 + i]) for i, site in enumerate(self.sites)}
            self._namespaces = {site: f"{base}-{site}" for site in self.sites}
            self._host_links = [f"{base}h{i}" for i in range(len(self.sites))]
            (REGISTRY / f"{base}.json").write_text(json.dumps({
                "pid": os.getpid(), "start": _proc_start(os.getpid()), "subnet": str(subnet),
                "netns": list(self._namespaces.values()), "links": [*self._host_links, self.bridge]}))
            _run(["ip", "-batch", "-"], input="\n".join([
                f"link add {self.bridge} type bridge stp_state 0",
                f"addr add {self.root_ip}/{subnet.prefixlen} dev {self.bridge}",
                f"link set {self.bridge} up"]) + "\n")

    def _build(self) -> None:
        root_cmds: list[str] = []
        for i, site in enumerate(self.sites):
            ns, host = self._namespaces[site], self._host_links[i]
            root_cmds += [f"netns add {ns}", f"link add {host} type veth peer name {self.name}p{i} netns {ns}",
                          f"link set {host} master {self.bridge} up"]
        _run(["ip", "-batch", "-"], input="\n".join(root_cmds) + "\n")
        for i, site in enumerate(self.sites):
            _run(["ip", "-n", self._namespaces[site], "-batch", "-"], input="\n".join([
                "link set lo up", f"link set {self.name}p{i} name eth0",
                "link set eth0 addrgenmode none",  # IPv4 only: no IPv6 link-local path around the cuts
                f"addr add {self._addresses[site]}/{self.subnet.prefixlen} dev eth0", "link set eth0 up"]) + "\n")

    def stop(self) -> None:
        """Stop everything, always: cleanups (LIFO), processes, namespaces, links, the registry record."""
        if not self._started:
            return
        self._started = False
        _live.discard(self)
        errors: list[BaseException] = []
        while self._cleanups:
            try:
                self._cleanups.pop()()
            except Exception as exc:  # keep cleaning; report the first failure at the end
                errors.append(exc)
        self._stop_processes()
        if self.name:
            _destroy(list(self._namespaces.values()), [*self._host_links, self.bridge])
            (REGISTRY / f"{self.name}.json").unlink(missing_ok=True)
        self._edges.clear()
        if errors:
            raise errors[0]

    def _stop_processes(self) -> None:
        live = [p for p in self._procs if p.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + 3.0
        for proc in live:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()

    def on_stop(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` when the topology stops (last registered first), before processes are killed."""
        self._cleanups.append(callback)

    def __enter__(self) -> Topology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Topology:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    # names and addresses ----------------------------------------------------------------------------
    @property
    def root_ip(self) -> str:
        """The root namespace's address on the bridge (where the test process's packets come from)."""
        return self._addresses[ROOT]

    def ip(self, site: str) -> str:
        """The address of ``site`` (``ROOT`` for the root namespace's)."""
        try:
            return self._addresses[site]
        except KeyError:
            raise KeyError(f"unknown site {site!r} (sites: {', '.join(self.sites)})") from None

    def netns(self, site: str) -> str:
        """The namespace name of ``site`` (as ``ip netns`` knows it)."""
        try:
            return self._namespaces[site]
        except KeyError:
            raise KeyError(f"unknown site {site!r} (sites: {', '.join(self.sites)})") from None

    def wrap(self, site: str) -> list[str]:
        """The command prefix that runs a command in ``site``'s namespace (none for :data:`ROOT`)."""
        return [] if site == ROOT else ["ip", "netns", "exec", self.netns(site)]

    # partitions -------------------------------------------------------------------------------------
    def cut(self, a: str, b: str, *, both_ways: bool = True, mode: Mode = "drop") -> None:
        """Drop (or reject) packets from ``a`` to ``b`` and, with ``both_ways``, from ``b`` to ``a``.

        Either side may be :data:`ROOT` (the test process's address). One way only (``both_ways=False``)
        loses a's packets to b but delivers b's to a: TCP between them breaks either way (no ACKs),
        UDP and ICMP really are one-way. ``reject`` answers with a TCP reset or ICMP "administratively
        prohibited" (fast failure) instead of silence (a black hole; timeouts). Takes effect at once,
        for established connections too; cutting an already cut path replaces its mode.
        """
        if mode not in ("drop", "reject"):
            raise ValueError(f"mode must be 'drop' or 'reject', not {mode!r}")
        for site in (a, b):
            self.ip(site)
        if a == b:
            raise ValueError(f"cannot cut {a!r} from itself")
        owner = b if a == ROOT else a
        edges = [(a, b), (b, a)] if both_ways else [(a, b)]
        self._set_edges(dict.fromkeys(edges, (mode, owner)))

    def isolate(self, site: str, *, clients: bool = True, mode: Mode = "drop") -> None:
        """Cut ``site`` from every other site (both ways); with ``clients=False`` from the root too."""
        self.netns(site)
        others = [s for s in self.sites if s != site] + ([] if clients else [ROOT])
        edges: dict[tuple[str, str], tuple[Mode, str]] = {}
        for other in others:
            edges[(site, other)] = edges[(other, site)] = (mode, site)
        self._set_edges(edges)

    def heal(self, a: str | None = None, b: str | None = None) -> None:
        """Remove cuts: all of them (no arguments), every one touching ``a``, or both ways between a and b."""
        if a is None and b is not None:
            raise ValueError("heal(b=...) needs a too")
        for name in (a, b):
            if name is not None:
                self.ip(name)
        removed = [edge for edge in self._edges
                   if a is None or (a in edge and (b is None or b in edge))]
        owners = {self._edges.pop(edge)[1] for edge in removed}
        for owner in sorted(owners):
            self._apply(owner)

    @property
    def cuts(self) -> dict[tuple[str, str], Mode]:
        """The paths cut now: (from, to) -> mode."""
        return {edge: mode for edge, (mode, _owner) in self._edges.items()}

    def _set_edges(self, edges: dict[tuple[str, str], tuple[Mode, str]]) -> None:
        touched = {owner for _mode, owner in edges.values()}
        for edge, value in edges.items():
            old = self._edges.get(edge)
            if old is not None:
                touched.add(old[1])
            self._edges[edge] = value
        for owner in sorted(touched):
            self._apply(owner)

    def ruleset(self, site: str) -> str:
        """The nftables ruleset of ``site``'s namespace now (for failure messages)."""
        return _run([*self.wrap(site), self._nft, "list", "ruleset"]).stdout

    def _apply(self, site: str) -> None:
        """Rewrite ``site``'s partition tables from the edges it owns, in one nft transaction.

        Incoming packets are dropped or rejected in the ``input`` chain (packets looped back on
        ``lo``, such as the resets ``reject`` hands to local sockets, always pass). Outgoing packets
        are rejected in the ``output`` chain (the local socket fails at once) but dropped at the
        ``egress`` hook of ``eth0``, after the stack let them go: a drop in ``output`` would make
        ``sendto`` fail with EPERM, which no real partition does (UDP senders see success, TCP
        retransmits). The resets and ICMP errors answering rejected incoming packets are let out.
        """
        rules: dict[str, list[str]] = {"input": [], "output": [], "egress": []}
        answers: list[str] = []  # rejected senders must get their resets and ICMP errors
        for (src, dst), (mode, owner) in sorted(self._edges.items()):
            if owner != site:
                continue
            if dst == site:
                match = f"ip saddr {self.ip(src)}"
                if mode == "drop":
                    rules["input"].append(f"{match} drop")
                else:
                    rules["input"] += [f"{match} meta l4proto tcp reject with tcp reset",
                                       f"{match} reject with icmpx type admin-prohibited"]
                    answers += [f"ip daddr {self.ip(src)} tcp flags rst accept",
                                f"ip daddr {self.ip(src)} icmp type destination-unreachable accept"]
            elif mode == "drop":
                rules["egress" if self._egress else "output"].append(f"ip daddr {self.ip(dst)} drop")
            else:
                rules["output"] += [f"ip daddr {self.ip(dst)} meta l4proto tcp reject with tcp reset",
                                    f"ip daddr {self.ip(dst)} reject with icmpx type admin-prohibited"]
        if rules["input"]:
            rules["input"].insert(0, 'iifname "lo" accept')
        for chain in ("output", "egress"):
            if rules[chain]:
                rules[chain][:0] = answers
        script = [f"table inet {TABLE}", f"delete table inet {TABLE}",
                  f"table netdev {TABLE}", f"delete table netdev {TABLE}"]
        if rules["input"] or rules["output"]:
            script.append(f"table inet {TABLE} {{")
            for chain in ("input", "output"):
                script += [f"  chain {chain} {{", f"    type filter hook {chain} priority filter; policy accept;",
                           *(f"    {rule}" for rule in rules[chain]), "  }"]
            script.append("}")
        if rules["egress"]:
            script += [f"table netdev {TABLE} {{", "  chain egress {",
                       '    type filter hook egress device "eth0" priority filter; policy accept;',
                       *(f"    {rule}" for rule in rules["egress"]), "  }", "}"]
        result = _run([*self.wrap(site), self._nft, "-f", "-"], input="\n".join(script) + "\n",
                      check=not rules["egress"])
        if result.returncode != 0:  # a kernel before 5.16 has no egress hook: drop in output instead
            self._egress = False
            self._apply(site)

    # processes --------------------------------------------------------------------------------------
    def popen(self, site: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``site``'s namespace (:data:`ROOT`: here), environment kept; stopped with the topology.

        ``ip netns exec`` execs the command, so the returned process's pid is the command's own.
        """
        proc: subprocess.Popen[Any] = subprocess.Popen([*self.wrap(site), *argv], **kwargs)
        self._procs.append(proc)
        return proc

    async def exec_in(self, site: str, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True,
                      input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a short command in ``site``'s namespace (:data:`ROOT`: here) and return its output (text)."""
        proc = await asyncio.create_subprocess_exec(
            *self.wrap(site), *argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(input.encode() if input is not None else None),
                                              timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        result = subprocess.CompletedProcess(list(argv), proc.returncode or 0, out.decode(errors="replace"),
                                             err.decode(errors="replace"))
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, list(argv), result.stdout, result.stderr)
        return result

    def call_in(self, site: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a fresh thread switched into ``site``'s namespace; return its result.

        Sockets made there stay in that namespace for their whole life (whichever thread uses them
        later), e.g. a blocking ``psycopg.connect`` gives a connection "from" the site. For
        :data:`ROOT`, ``fn`` simply runs here.
        """
        if site == ROOT:
            return fn()
        path = f"/run/netns/{self.netns(site)}"
        box: list[tuple[bool, Any]] = []

        def run() -> None:  # the thread ends here, so it never has to switch back
            try:
                _setns(path)
                box.append((True, fn()))
            except BaseException as exc:
                box.append((False, exc))

        thread = threading.Thread(target=run, name=f"netns-{site}", daemon=True)
        thread.start()
        thread.join()
        ok, value = box[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def socket(self, site: str, family: socket.AddressFamily = socket.AF_INET,
               kind: socket.SocketKind = socket.SOCK_STREAM) -> socket.socket:
        """A new socket in ``site``'s namespace (bind/connect/listen it as usual, e.g. for asyncio).

        It is closed when the topology stops, if it is still open (sockets it accepts are not).
        """
        sock = self.call_in(site, lambda: socket.socket(family, kind))
        self.on_stop(sock.close)
        return sock

    # servers ----------------------------------------------------------------------------------------
    def start_named(self, site: str = "dns", **kwargs: Any) -> NamedServer:
        """A BIND primary in ``site``'s namespace on its address, port 53 (kwargs: see ``start_named``)."""
        address = self.ip(site)
        kwargs.setdefault("nameservers", (("ns1", address),))
        server = start_named(host=address, wrap=self.wrap(site), **kwargs)
        self.on_stop(server.stop)
        return server

    def pg_pair(self, primary: str = "gcp", standby: str = "azure", **kwargs: Any) -> NetnsPgPair:
        """A started :class:`NetnsPgPair` (publisher in ``primary``, subscriber in ``standby``)."""
        return NetnsPgPair(self, primary, standby, **kwargs).start()


def _sweep_stale() -> None:
    """Delete the topologies whose owner process is gone (caller holds the registry lock)."""
    for record in REGISTRY.glob("*.json"):
        try:
            data = json.loads(record.read_text())
            pid, started = int(data["pid"]), data.get("start")
        except (OSError, ValueError, KeyError):
            continue
        if _proc_start(pid) is not None and _proc_start(pid) == started:
            continue  # alive: its owner cleans up
        _destroy(data.get("netns", []), data.get("links", []))
        record.unlink(missing_ok=True)


@atexit.register
def _stop_all() -> None:
    for topo in list(_live):
        with contextlib.suppress(Exception):
            topo.stop()


class NetnsPgPair:
    """PostgreSQL 15: the publisher in ``primary``'s namespace, the subscriber in ``standby``'s.

    Each server listens on its namespace's address, port 5432 (so the DSNs work from the root
    namespace and from every site), and the subscription connects to the publisher's namespace
    address: replication crosses the bridge, and a cut between the two sites stops it.
    :meth:`replicate` creates the replicated database; :attr:`primary_dsn`, :attr:`standby_dsn` and
    :meth:`database_config` (the engine's ``database:`` section, site names as given) then refer to it.
    Stopped with the topology (or by :meth:`stop`).
    """

    def __init__(self, topo: Topology, primary: str = "gcp", standby: str = "azure", *, port: int = 5432,
                 template: Path | None = None) -> None:
        if primary == standby:
            raise ValueError("primary and standby must be different sites")
        self.topo, self.primary, self.standby = topo, primary, standby
        self.base = Path(tempfile.mkdtemp(prefix=f"pg-{topo.name}-"))
        for directory in (self.base, self.base / primary, self.base / standby):
            directory.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(directory, PG_USER, PG_USER)
        self.pair = PgPair(self.base)
        self.pair.publisher = PgCluster(self.base / primary, "data", template=template, host=topo.ip(primary),
                                        port=port, wrap=topo.wrap(primary))
        self.pair.subscriber = PgCluster(self.base / standby, "data", template=template, host=topo.ip(standby),
                                         port=port, wrap=topo.wrap(standby))
        self.db: ReplicatedDb | None = None
        self._stopped = False
        topo.on_stop(self.stop)

    @property
    def publisher(self) -> PgCluster:
        return self.pair.publisher

    @property
    def subscriber(self) -> PgCluster:
        return self.pair.subscriber

    def start(self) -> NetnsPgPair:
        """initdb both (or copy the template), trust the topology's subnet, start each in its namespace."""
        require_postgres()
        clusters = (self.publisher, self.subscriber)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda c: c.init(), clusters))
        for cluster in clusters:  # initdb trusts loopback only; peers and clients come from the subnet
            with (cluster.datadir / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.topo.subnet} trust\nhost replication all {self.topo.subnet} trust\n")
            cluster.start()
        return self

    def replicate(self, schema: str = SAMPLE_SCHEMA, tables: tuple[str, ...] = SAMPLE_TABLES,
                  **kwargs: Any) -> ReplicatedDb:
        """A database with ``schema`` on both, ``tables`` published and subscribed (see ``PgPair.replicate``)."""
        self.db = self.pair.replicate(schema, tables, **kwargs)
        return self.db

    @property
    def dbname(self) -> str:
        return self.db.dbname if self.db is not None else "postgres"

    @property
    def primary_dsn(self) -> str:
        return self.publisher.dsn(self.dbname)

    @property
    def standby_dsn(self) -> str:
        return self.subscriber.dsn(self.dbname)

    def database_config(self, **overrides: object) -> dict[str, object]:
        """The ``database:`` section (as data): both servers by namespace address, sites as named."""
        if self.db is None:
            raise RuntimeError("call replicate() first: the section names the replicated database")
        section = self.db.database_config()
        sites = section["sites"]
        assert isinstance(sites, dict)
        section["sites"] = {self.primary: sites["gcp"], self.standby: sites["azure"]}
        section.update(overrides)
        return section

    def stop(self) -> None:
        """Stop both servers (immediate) and remove their directories; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self.pair.stop()
        shutil.rmtree(self.base, ignore_errors=True)

