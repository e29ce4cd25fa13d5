"""The pure core imports no I/O library: decisions stay testable without a network or a clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# every module of the pure core, the config it reads, and the pure parts of the actions
PURE = [*sorted(str(p.relative_to(ROOT)) for p in (ROOT / "engine" / "core").glob("*.py")),
        "engine/config/base.py", "engine/config/model.py", "engine/config/probes.py", "engine/config/lease.py",
        "engine/config/probe_common.py", "engine/config/cloud.py", "engine/config/dns.py", "actions/dns/state.py",
        "engine/config/database.py", "actions/reconcile/plan.py", "actions/reconcile/result.py"]
FORBIDDEN = {"asyncio", "aiohttp", "psycopg", "dns", "socket", "sqlite3", "requests", "httpx", "subprocess"}


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module: str) -> None:
    """A pure module imports none of asyncio, aiohttp, psycopg, dns, socket, sqlite3 or subprocess."""
    tree = ast.parse((ROOT / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{module} imports {sorted(imported & FORBIDDEN)}"
