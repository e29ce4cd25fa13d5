"""Every kind of event the engine records is in the one list the API and the CLI check ``--kind`` against."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from engine.core.event_kinds import EVENT_KINDS

ROOT = Path(__file__).resolve().parents[2]


def test_every_recorded_kind_is_listed() -> None:
    """Each literal kind passed to ``record(...)`` (and the runbook's own kinds) is in EVENT_KINDS."""
    found = set()
    for path in [*ROOT.joinpath("engine").rglob("*.py"), *ROOT.joinpath("actions").rglob("*.py")]:
        text = path.read_text()
        found |= set(re.findall(r"\brecord\(\s*\"([a-z_]+)\"", text))
        found |= set(re.findall(r"_event\(op, \"([a-z_]+)\"", text))
        found |= set(re.findall(r"record\(\"alert\" if alert else \"([a-z_]+)\"", text))
    assert found and found <= set(EVENT_KINDS), sorted(found - set(EVENT_KINDS))


def test_events_with_an_unknown_kind_exits_2_naming_the_kinds() -> None:
    """``failover-engine events --kind bogus`` is a usage error (exit 2) that lists the valid kinds."""
    done = subprocess.run([sys.executable, "-m", "engine", "events", "--kind", "bogus"], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=30, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert "bogus" in done.stderr and "runbook" in done.stderr and "operator" in done.stderr
