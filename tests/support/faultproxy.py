"""A small asyncio TCP fault proxy: what toxiproxy would do, on loopback, inside the test process.

Modes (switch at any time with :meth:`FaultProxy.set`; existing connections follow the new mode):

- ``pass``: forward both ways.
- ``latency``: forward, delaying every chunk by ``delay`` seconds.
- ``blackhole``: accept, read and drop; never answer (a dead host behind a live load balancer).
- ``reset``: accept and close with RST at once (a port nobody listens on, or a crashed server).
- ``drip``: forward one byte every ``delay`` seconds (a slow, starved link).
- ``refuse``: stop listening, so connects are refused by the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

MODES = ("pass", "latency", "blackhole", "reset", "drip", "refuse")


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host, self.port = host, port
        self.mode = "pass"
        self.delay = 0.0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def set(self, mode: str, delay: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode, self.delay = mode, delay
        if mode == "refuse":
            await self._close_listener()
            self._kill_all()
        elif self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        if mode in ("reset", "blackhole"):
            self._kill_all(rst=mode == "reset")

    def _kill_all(self, rst: bool = True) -> None:
        for writer in list(self._writers):
            _abort(writer, rst)

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        self._writers.add(writer)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            if self.mode == "reset":
                _abort(writer, True)
                return
            if self.mode == "blackhole":
                while await reader.read(65536):
                    pass
                return
            up_reader, upstream_writer = await asyncio.open_connection(*self.target)
            self._writers.add(upstream_writer)
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    self._writers.discard(w)
                    with contextlib.suppress(Exception):
                        w.close()
            self._conns.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                while self.mode == "blackhole":  # noqa: ASYNC110 - a mode poll, not a wait for an event
                    await asyncio.sleep(0.05)
                if self.mode == "latency":
                    await asyncio.sleep(self.delay)
                if self.mode == "drip":
                    for i in range(len(data)):
                        writer.write(data[i:i + 1])
                        await writer.drain()
                        await asyncio.sleep(self.delay)
                    continue
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.write_eof()

    async def stop(self) -> None:
        await self._close_listener()
        self._kill_all()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)


def _abort(writer: asyncio.StreamWriter, rst: bool) -> None:
    sock = writer.get_extra_info("socket")
    if rst and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class UdpRelay:
    """A UDP forwarder with a ``drop`` switch: DNS queries pass, or vanish (a black-holed resolver path)."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.dropping = False
        self._transport: asyncio.DatagramTransport | None = None
        self._upstreams: dict[tuple[str, int], asyncio.DatagramTransport] = {}
        self._pending: set[asyncio.Future[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> UdpRelay:
        loop = asyncio.get_running_loop()
        relay = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if not relay.dropping:
                    task = asyncio.ensure_future(relay._forward(data, addr))
                    relay._pending.add(task)
                    task.add_done_callback(relay._pending.discard)

        transport, _ = await loop.create_datagram_endpoint(Front, local_addr=(self.host, 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def _forward(self, data: bytes, client: tuple[str, int]) -> None:
        upstream = self._upstreams.get(client)
        if upstream is None:
            relay = self

            class Back(asyncio.DatagramProtocol):
                def datagram_received(self, reply: bytes, _addr: tuple[str, int]) -> None:
                    if not relay.dropping and relay._transport is not None:
                        relay._transport.sendto(reply, client)

            upstream, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                Back, remote_addr=self.target)
            self._upstreams[client] = upstream
        upstream.sendto(data)

    async def stop(self) -> None:
        for upstream in self._upstreams.values():
            upstream.close()
        if self._transport is not None:
            self._transport.close()
