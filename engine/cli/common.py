"""Helpers shared by subcommands: loading a config with errors printed the same way everywhere."""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from engine.config import EngineConfig

T = TypeVar("T")


def load_or_report(path: str, *, unset_ok: bool = False) -> EngineConfig | None:
    """Load a config; on failure print every problem to stderr and return None (caller exits 2).
    ``unset_ok``: a read-only command does not need the secrets (an unset ${VAR} is no error)."""
    # imported here, not at the top: the config model (pydantic) costs ~0.3 s, and `--help`, `status`
    # and the other client commands never load a config (bench/cli_start.py keeps them quick)
    from engine.config import ConfigError, load_config

    try:
        return load_config(path, unset_ok=unset_ok)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return None


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` for the commands that talk to a database or DNS; asyncio is imported on use so
    the client commands (status, events, ...) do not pay for it at start."""
    import asyncio

    return asyncio.run(coro)
