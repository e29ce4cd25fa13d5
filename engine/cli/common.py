"""Helpers shared by subcommands: loading a config with errors printed the same way everywhere."""

from __future__ import annotations

import sys

from engine.config import ConfigError, EngineConfig, load_config


def load_or_report(path: str) -> EngineConfig | None:
    """Load a config; on failure print every problem to stderr and return None (caller exits 2)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return None
