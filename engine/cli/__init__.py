"""The ``failover-engine`` command.

Each group of subcommands lives in its own module with a ``register(subparsers)`` function that
adds its parsers and sets ``func`` (returning an exit code). Exit codes: 0 ok, 1 a check or action
failed, 2 bad input (config or arguments).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine import __version__
from engine.cli import client_cmd, core_cmd, db_cmd, dns_cmd, drill_cmd

MODULES = (core_cmd, dns_cmd, db_cmd, client_cmd, drill_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failover-engine",
        description="Decides when a two-cloud service must fail over, does it, and proves it worked.")
    parser.add_argument("--version", action="version", version=f"failover-engine {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `failover-engine schema | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
