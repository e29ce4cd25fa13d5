"""Mutation fuzz of the example configs: check-config either accepts a mutant or lists problems each with its
path, within 2 s and never with a traceback; a few accepted mutants of the demo config start as real engines
and stop on SIGTERM within 5 s."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import main
from tests.support import free_port
from tests.unit.test_example_configs import CONFIGS, DUMMY_ENV

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TEXTS = {path.name: path.read_text() for path in CONFIGS}
HOSTILE: list[Any] = [float("nan"), float("inf"), -1, 0, "0s", "nan", ".nan", "1e400", 10**30, "9" * 5000, "", None,
                      "${UNSET_VARIABLE}", "${UNTERMINATED", "file:/dev/zero", "file:/nonexistent", [], {}, True,
                      "\udcff", "-5s", "99999d", "1h30m", "50ms", 2**63, 1.5, "127.0.0.1:0", "x" * 300]
TEXT_HOSTILE = ["*undefined", "&a", "<<: *a", "key: value", "\t", "{", "]", "'", '"', "\\xff", ": :", "- -",
                "!!python/object:os.system", "!!binary AAAA", "? [a]: b", "2001-13-45", "0x" + "f" * 100]
PROBLEM = re.compile(r"^  (line \d+: )?\S.*: .+$")


def leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value in parsed YAML (containers too: replacing a whole section is a mutation)."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))


def replaced(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        return {k: (replaced(v, rest, value) if k == head else v) for k, v in data.items()}
    return [replaced(v, rest, value) if i == head else v for i, v in enumerate(data)]


@st.composite
def tree_mutant(draw: st.DrawFn, names: list[str], pool: list[Any]) -> str:
    """An example config with one to three values (or sections) replaced by hostile ones, dumped as YAML."""
    data = yaml.safe_load(TEXTS[draw(st.sampled_from(names))])
    for _ in range(draw(st.integers(1, 3))):
        paths = list(leaves(data))[1:]
        data = replaced(data, draw(st.sampled_from(paths)), draw(st.sampled_from(pool)))
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@st.composite
def text_mutant(draw: st.DrawFn) -> str:
    """An example config with lines deleted, duplicated or spliced with YAML debris."""
    lines = TEXTS[draw(st.sampled_from(sorted(TEXTS)))].splitlines()
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "splice", "truncate"]))
        if action == "delete":
            del lines[at]
        elif action == "duplicate":
            lines.insert(at, lines[at])
        elif action == "splice":
            cut = draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:cut] + draw(st.sampled_from(TEXT_HOSTILE)) + lines[at][cut:]
        else:
            lines = lines[:at + 1]
        if not lines:
            lines = [""]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@pytest.fixture(scope="module", autouse=True)
def dummy_secrets() -> Iterator[None]:
    """The example configs' variables, set for the in-process check-config (and restored after)."""
    saved = {k: os.environ.get(k) for k in DUMMY_ENV}
    os.environ.update(DUMMY_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def check(text: str, workdir: Path) -> tuple[int, str, str]:
    """check-config on ``text``: (exit code, stdout, stderr), in 2 s or less, never raising."""
    path = workdir / "mutant.yaml"
    path.write_text(text, errors="surrogateescape")
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check-config", str(path)])
    assert time.monotonic() - started < 2.0, text
    return code, out.getvalue(), err.getvalue()


def assert_answer(code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err
    if code == 0:
        assert ": ok (" in out.splitlines()[0]
    else:
        assert code == 2
        head, *problems = err.splitlines()
        assert re.match(r"^.+: \d+ problems?$", head), err
        assert problems and all(PROBLEM.match(p) for p in problems), err


SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(text=tree_mutant(sorted(TEXTS), HOSTILE))
def test_hostile_values_are_accepted_or_refused_with_paths(workdir: Path, text: str) -> None:
    """Any value anywhere: either a config that passes, or one line per problem with its path, exit 2."""
    assert_answer(*check(text, workdir))


@SETTINGS
@given(text=text_mutant())
def test_broken_yaml_is_refused_with_paths(workdir: Path, text: str) -> None:
    """Deleted, duplicated and spliced lines: either a config that passes, or problems with paths, exit 2."""
    assert_answer(*check(text, workdir))


NUMBERS = [0, 1, 2, 3, 5, 100, 0.5, "0s", "50ms", "100ms", "1s", "2s", "30s", "1m", "1h", "1d", float("nan"), -1]
ACCEPTED: list[str] = []


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(text=tree_mutant(["demo.yaml"], NUMBERS))
def test_collect_accepted_demo_mutants(workdir: Path, text: str) -> None:
    """Numbers of the (all-loopback) demo config mutated: accepted or refused with paths; accepted ones kept."""
    code, out, err = check(text, workdir)
    assert_answer(code, out, err)
    if code == 0 and text not in ACCEPTED:
        ACCEPTED.append(text)


def test_accepted_mutants_start_and_stop_on_sigterm(workdir: Path, tmp_path: Path) -> None:
    """Three accepted mutants run as engines (loopback only) and each stops within 5 s of SIGTERM."""
    if not ACCEPTED:  # run on its own: search for them first
        test_collect_accepted_demo_mutants(workdir=workdir)
    assert len(ACCEPTED) >= 3, "the mutation run above accepted fewer than three demo mutants"
    for index, text in enumerate(ACCEPTED[:3]):
        data = yaml.safe_load(text)
        data["instance"]["listen"] = f"127.0.0.1:{free_port()}"
        data["journal"] = {"path": str(tmp_path / f"j{index}.db")}
        path = tmp_path / f"mutant{index}.yaml"
        path.write_text(yaml.safe_dump(data))
        log = tmp_path / f"mutant{index}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(path)], cwd=ROOT,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, **DUMMY_ENV, "PYTHONPATH": str(ROOT)})
            try:
                deadline = time.monotonic() + 30
                while b"engine started" not in log.read_bytes():
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=5) == 0, log.read_text()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert "Traceback" not in log.read_text()
