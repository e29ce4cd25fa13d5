"""``failover-engine status|failover|failback|pause|resume|events|operation``: a client of a running
engine's API (owned by the CLI-client work)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this module's subcommands."""
