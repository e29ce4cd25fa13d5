"""Test support shared by every level: real-part discovery, free ports, fault tools.

A test that needs a real part (PostgreSQL, BIND's ``named``, Chromium) calls :func:`require_part`:
under ``CI=true`` a missing part is a failure, elsewhere a skip with the install hint.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_part(name: str, found: bool, hint: str) -> None:
    """Fail (under CI) or skip (elsewhere) when a real part is missing."""
    if found:
        return
    message = f"{name} is missing: {hint}"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def require_binary(binary: str, *, hint: str, extra_dirs: tuple[str, ...] = ()) -> str:
    """Return the path of ``binary`` (on PATH or in ``extra_dirs``), or fail/skip."""
    path = shutil.which(binary)
    if path is None:
        for directory in extra_dirs:
            candidate = Path(directory) / binary
            if candidate.exists():
                path = str(candidate)
                break
    require_part(binary, path is not None, hint)
    assert path is not None
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
