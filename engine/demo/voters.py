"""The demo's voters as real processes (``python -m engine run --config FILE``) and a small client of their API.

Each voter runs in its own session (``start_new_session``), so a Ctrl-C in the terminal reaches only
the demo, which then stops them in order: SIGTERM, then SIGKILL after 10 s. Its output goes to a log
file in the demo's directory. Secrets reach them through the environment only.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

import engine


class DemoFailed(Exception):
    """Something did not happen in time: one clear sentence for the user, never a traceback."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (each voter must know its peers' ports before they start)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Voter:
    id: str
    site: str
    role: str
    port: int
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self, env: dict[str, str]) -> None:
        root = str(Path(engine.__file__).resolve().parents[1])  # works installed or from a checkout
        path = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(self.config)],
                                         cwd=self.config.parent, stdout=log, stderr=subprocess.STDOUT,
                                         env={**env, "PYTHONPATH": path}, start_new_session=True)

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def stop_voters(voters: list[Voter]) -> None:
    """SIGTERM to each (a paused one is continued first), then wait; SIGKILL what is left after 10 s."""
    running = [v.proc for v in voters if v.proc is not None and v.proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
    for proc in running:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Api:
    """GETs with the viewer token, POSTs with the operator token; every call bounded in time."""

    def __init__(self, viewer: str, operator: str) -> None:
        self.viewer, self.operator = viewer, operator
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self._session

    async def get(self, voter: Voter, path: str) -> Any:
        """The JSON at ``path``, or None when the voter does not answer (yet)."""
        try:
            async with self._client().get(voter.url + path,
                                          headers={"Authorization": f"Bearer {self.viewer}"}) as response:
                if response.status != 200:
                    return None
                return await response.json()
        except (aiohttp.ClientError, OSError, TimeoutError, json.JSONDecodeError):
            return None

    async def post(self, voter: Voter, path: str, body: dict[str, Any], timeout: float = 60.0) -> tuple[int, Any]:
        try:
            async with self._client().post(voter.url + path, json=body,
                                           headers={"Authorization": f"Bearer {self.operator}"},
                                           timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                text = await response.text()
                try:
                    return response.status, json.loads(text)
                except ValueError:
                    return response.status, {"detail": text}
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DemoFailed(f"POST {voter.url}{path} got no answer: {type(exc).__name__} {exc}") from None

    async def healthy(self, voter: Voter) -> bool:
        try:
            async with self._client().get(voter.url + "/healthz") as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def wait_started(api: Api, voters: list[Voter], timeout: float = 30.0) -> None:
    """Every voter answers /healthz (its decision loop ticks), or DemoFailed with the log of the one that did not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = list(voters)
    while pending:
        for voter in list(pending):
            if voter.proc is not None and voter.proc.poll() is not None:
                raise DemoFailed(f"{voter.id} exited with {voter.proc.returncode} at start; its log ends with:\n"
                                 f"{voter.log_tail()}")
            if await api.healthy(voter):
                pending.remove(voter)
        if pending and loop.time() > deadline:
            raise DemoFailed(f"{', '.join(v.id for v in pending)} did not start within {timeout:g}s; the log of "
                             f"{pending[0].id} ends with:\n{pending[0].log_tail()}")
        await asyncio.sleep(0.1)
