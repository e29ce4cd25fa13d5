"""``failover-engine demo``: the engine's story on one machine.

On 127.0.0.1 only, it starts two sample sites (gcp, azure), an authoritative DNS for example.test
(BIND when installed, else the small built-in server of :mod:`engine.demo.dns_server`), a PostgreSQL 15
pair with logical replication when PostgreSQL is installed, and three voters as processes
(engine-gcp, engine-azure and a witness). It then breaks gcp and narrates live what the voters see,
decide and do (signals failing with their counts, the decision with its votes, every runbook step
with its duration, the data-loss check, DNS verified), shows the DNS answer move, fails back through
the API, and prints a summary of the timings. ``--keep-running`` leaves everything up for exploring.

Modules: :mod:`~engine.demo.story` (the sequence), :mod:`~engine.demo.narrate` (the live
narration), :mod:`~engine.demo.config` (the voters' configs; ``config/demo.yaml`` is one of them),
:mod:`~engine.demo.voters` (processes and API client), :mod:`~engine.demo.bind`,
:mod:`~engine.demo.postgres` and :mod:`~engine.demo.dns_server` (the parts). Nothing here imports
from ``tests/``: the installed package has none.
"""

from __future__ import annotations

from engine.demo.story import run


def run_demo(seconds: float | None = None, *, keep_running: bool = False, dns: str = "auto",
             database: bool = True) -> int:
    """Run the demo and return its exit code (0: the story completed; 1: something did not happen in time;
    130: interrupted). ``keep_running``: stay up after the story until Ctrl-C; ``seconds``: stay up that long.
    ``dns``: ``auto`` (BIND when installed), ``bind`` or ``builtin``; ``database``: False skips PostgreSQL."""
    return run(seconds, keep_running=keep_running, dns_choice=dns, database=database)


__all__ = ["run_demo"]
