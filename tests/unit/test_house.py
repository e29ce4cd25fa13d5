"""The house keeps its shape: no import cycles (imports inside functions counted), no module over 500 lines,
only the CLI and the demo import the daemon, and import-linter's contracts hold (see docs/architecture.md)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "probes", "actions")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def graph() -> dict[str, set[str]]:
    """Every project import of every module, wherever it stands (functions and TYPE_CHECKING blocks too)."""
    mods = modules()
    out: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                hit = next((c for c in (target, target.rpartition(".")[0]) if c in mods), None)
                if hit and hit != name:
                    deps.add(hit)
        out[name] = deps
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for root, deps in g.items():
        if root in index:
            continue
        work = [(root, iter(sorted(deps)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(g[child]))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    """No two modules of engine, probes or actions import each other, even through functions."""
    assert cycles(graph()) == []


def test_no_module_over_500_lines() -> None:
    """Every module stays under 500 lines."""
    big = {str(p.relative_to(ROOT)): n for p in modules().values()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert big == {}


def test_only_the_cli_and_the_demo_import_the_daemon() -> None:
    """The daemon is the only composition root: nothing below it may reach for it."""
    users = sorted(m for m, deps in graph().items() if "engine.runtime.daemon" in deps)
    assert all(m.startswith(("engine.cli", "engine.demo")) for m in users), users


def test_http_and_the_runtime_speak_only_through_the_core_ports() -> None:
    """engine.http imports nothing of engine.runtime; of the runtime only the daemon imports engine.http."""
    crossings = sorted(f"{m} -> {d}" for m, deps in graph().items() for d in deps
                       if (m.startswith("engine.http") and d.startswith("engine.runtime"))
                       or (m.startswith("engine.runtime") and m != "engine.runtime.daemon"
                           and d.startswith("engine.http")))
    assert crossings == []


def test_import_linter_contracts_hold() -> None:
    """import-linter's layers and forbidden contracts (pyproject.toml) are kept."""
    exe = shutil.which("lint-imports")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("lint-imports is not installed (pip install import-linter)")
        pytest.skip("lint-imports is not installed")
    done = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_pure_core_is_importable_without_io_libraries() -> None:
    """Importing every engine.core module pulls in no network, database or event-loop library."""
    names = sorted(m for m in modules() if m.startswith("engine.core."))
    code = ("import sys\n" + "".join(f"import {n}\n" for n in names)
            + "print(sorted({'asyncio', 'aiohttp', 'psycopg', 'dns', 'sqlite3'} & {m.split('.')[0] "
              "for m in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert done.stdout.strip() == "[]"
