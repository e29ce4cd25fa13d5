"""BIND (``named``) for the demo: one primary zone with a TSIG key, on a free loopback port.

Adapted from the tests' BIND helper, reduced to what the demo needs: a fresh directory, the zone
file, a ``named.conf`` that listens on 127.0.0.1 only and accepts updates signed with the key, and a
wait until it answers the zone's SOA. :meth:`NamedDns.stop` ends the process and removes the
directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query

from engine.demo.dns_server import Record

SEARCH = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def named_binary() -> str | None:
    """``named`` on PATH or in the usual sbin directories, or None."""
    found = shutil.which("named")
    if found:
        return found
    return next((str(Path(d) / "named") for d in SEARCH if (Path(d) / "named").exists()), None)


def free_udp_tcp_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host`` a moment ago."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, port))
            return port
    raise OSError("no port free for both TCP and UDP")


def zone_text(zone: str, records: Sequence[Record], host: str) -> str:
    lines = ["$TTL 60", f"@ IN SOA ns1.{zone}. hostmaster.{zone}. ( 1 60 60 3600 60 )", f"@ IN NS ns1.{zone}.",
             f"ns1 IN A {host}"]
    lines += [f"{name} {ttl} IN {rdtype} {value}" for name, rdtype, ttl, values in records for value in values]
    return "\n".join(lines) + "\n"


class NamedDns:
    """A running ``named`` and what a client needs to talk to it."""

    def __init__(self, directory: Path, host: str, port: int, zone: str, key_name: str, algorithm: str,
                 secret: str, process: subprocess.Popen[bytes], version: str) -> None:
        self.directory, self.host, self.port, self.zone_name = directory, host, port, zone
        self.key_name, self.algorithm, self.secret = key_name, algorithm, secret
        self.process = process
        self.kind = version

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _stop(self) -> None:
        terminate(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)


def terminate(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; waits for the process either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def start_named(named: str, directory: Path, *, zone: str, records: Sequence[Record], key_name: str,
                algorithm: str, secret: str, host: str = "127.0.0.1") -> NamedDns:
    """Write the configuration into ``directory`` (created) and start ``named``; wait until it answers."""
    directory.mkdir(parents=True)
    port = free_udp_tcp_port(host)
    (directory / "tsig.key").write_text(f'key "{key_name}" {{ algorithm {algorithm}; secret "{secret}"; }};\n')
    (directory / f"{zone}.zone").write_text(zone_text(zone, records, host))
    (directory / "named.conf").write_text(f"""
include "{directory}/tsig.key";
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    listen-on port {port} {{ {host}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
    notify no;
}};
controls {{ }};
zone "{zone}" {{ type primary; file "{zone}.zone"; allow-update {{ key "{key_name}"; }}; }};
""")
    version = subprocess.run([named, "-v"], capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    log_path = directory / "named.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([named, "-g", "-c", str(directory / "named.conf")], stdout=subprocess.DEVNULL,
                                   stderr=log, start_new_session=True)  # Ctrl-C is the demo's to handle
    server = NamedDns(directory, host, port, zone, key_name, algorithm, secret, process,
                      " ".join(version.split()[:2]) or "BIND")
    query = dns.message.make_query(f"{zone}.", "SOA")
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-1500:]
            server._stop()
            raise RuntimeError(f"named exited with {process.returncode}: {tail}")
        with contextlib.suppress(OSError, dns.exception.Timeout, EOFError):
            if dns.query.tcp(query, host, port=port, timeout=0.3).answer:
                return server
        if time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-1500:]
            server._stop()
            raise RuntimeError(f"named did not answer within 15 s: {tail}")
        time.sleep(0.02)
