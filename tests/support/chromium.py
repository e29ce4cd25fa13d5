"""Headless Chromium (Debian's ``chromium`` package) for tests that check what a browser really shows.

No browser download: the system binary, found through :func:`tests.support.require_binary` (a missing
Chromium fails under ``CI=true``). Each run gets a fresh profile directory and no background
networking, sync or component updates, so it talks to nothing but the URL it is given. The calls are
async: a scenario's fault proxies run in the test's own event loop and must keep forwarding while the
browser loads a page. A run that outlives its timeout is killed with its whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from pathlib import Path

from tests.support import require_binary

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def chromium_binary() -> str:
    """The Chromium executable, or fail (CI) / skip (elsewhere) with the install hint."""
    return require_binary("chromium", hint="apt-get install -y chromium", extra_dirs=("/usr/bin",))


async def run_chromium(url: str, *extra: str, timeout: float = 30.0) -> str:
    """Run headless Chromium on ``url`` with ``extra`` flags; return its stdout (raise on failure or timeout)."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = await asyncio.create_subprocess_exec(
            binary, *FLAGS, f"--user-data-dir={profile}", *extra, url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True)  # its own process group: a timeout kills the renderers too
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise AssertionError(f"chromium did not finish {url} within {timeout:g}s") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    if proc.returncode != 0:
        tail = err.decode(errors="replace")[-2000:]
        raise AssertionError(f"chromium exited {proc.returncode} on {url}; stderr tail:\n{tail}")
    return out.decode(errors="replace")


async def dump_dom(url: str, *, timeout: float = 30.0) -> str:
    """The DOM of ``url`` after Chromium loaded it (``--dump-dom``), serialized as HTML."""
    return await run_chromium(url, "--dump-dom", timeout=timeout)


async def screenshot(url: str, path: Path, *, width: int = 1280, height: int = 2000, timeout: float = 30.0) -> Path:
    """A PNG of ``url`` rendered at ``width`` x ``height``; returns ``path``."""
    await run_chromium(url, f"--screenshot={path}", f"--window-size={width},{height}", timeout=timeout)
    if not await asyncio.to_thread(lambda: path.exists() and path.stat().st_size > 0):
        raise AssertionError(f"chromium wrote no screenshot of {url} to {path}")
    return path


def dom_text(dom: str) -> str:
    """The visible text of a dumped DOM, tags removed and whitespace collapsed (for ``in`` checks)."""
    from html.parser import HTMLParser

    class _Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            if tag in ("style", "script", "head"):
                self.skip += 1

        def handle_endtag(self, tag: str) -> None:
            if tag in ("style", "script", "head"):
                self.skip = max(0, self.skip - 1)

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = _Text()
    parser.feed(dom)
    return " ".join(" ".join(parser.parts).split())
