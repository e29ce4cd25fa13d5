"""TCP probe: a connect (and close) within the timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time

from engine.config.probes import TcpProbeConfig
from engine.core.clock import Clock
from probes.base import BaseProbe


class TcpProbe(BaseProbe):
    def __init__(self, config: TcpProbeConfig, *, clock: Clock | None = None) -> None:
        super().__init__(timeout=config.timeout, clock=clock)
        self.config = config

    async def _check(self) -> tuple[bool, str, float | None, dict[str, object]]:
        started = time.perf_counter()
        _reader, writer = await asyncio.open_connection(self.config.host, self.config.port)
        latency = time.perf_counter() - started
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, f"connected in {latency * 1000:.0f} ms", None, {}
