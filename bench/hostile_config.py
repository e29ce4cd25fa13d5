"""Hostile configs: how long and how much memory ``check-config`` takes to refuse them.

Each input is checked twice: in process (``parse_config``, wall time and the peak of Python allocations
from tracemalloc) and as the real command (``python -m engine check-config``, wall time and peak RSS of
the child from ``wait4``). The reference is the same command on the valid ``config/demo.yaml``: the
ratios say what a hostile file costs over an ordinary one. The issue's bound: a YAML alias bomb fails in
under 1 s and under 50 MB (before the fix: over 60 s and 563 MB).

    python bench/hostile_config.py

The last line printed is JSON with the keys: bench, inputs (per input: parse_ms, parse_peak_mb, cli_s,
cli_rss_mb, exit), reference_cli_s, reference_rss_mb, worst_cli_ratio, worst_rss_ratio, bomb_bytes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import final_line  # noqa: E402
from engine.config import ConfigError, parse_config  # noqa: E402

BOMB = "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9) if p.strip() else ', '.join(['lol'] * 9)}]\n"
               for p, n in zip(" abcdefgh", "abcdefghi", strict=True))
DEMO_ENV = {"FAILOVER_PEER_KEY_GCP_AZURE": "bench-peer-key-gcp-azure", "FAILOVER_PEER_KEY_GCP_WITNESS":
            "bench-peer-key-gcp-witness", "TSIG_SECRET": "ZHVtbXktdHNpZy1zZWNyZXQ="}
INPUTS = {
    "alias_bomb": BOMB,
    "circular_alias": "a: &a [*a]\n",
    "deep_nesting": "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "huge_integer": "instance: {id: x, site: gcp, tick: 1" + "0" * 5000 + "}\n",
    "dev_zero_secret": "instance: {id: x, site: gcp}\npeers: [{id: y, site: azure, url: 'http://127.0.0.1:9', "
                       "key: 'file:/dev/zero'}]\n",
    "nan_everywhere": (ROOT / "config" / "demo.yaml").read_text().replace("interval: 1s", "interval: .nan"),
}


def in_process(text: str) -> tuple[float, float]:
    tracemalloc.start()
    started = time.perf_counter()
    with contextlib.suppress(ConfigError):
        parse_config(text, env=DEMO_ENV)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed * 1000, peak / 2**20


def command(path: Path) -> tuple[float, float, int]:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "engine", "check-config", str(path)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **DEMO_ENV, "PYTHONPATH": str(ROOT)})
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss / 1024, proc.returncode


def main() -> None:
    reference_s, reference_rss, code = command(ROOT / "config" / "demo.yaml")
    assert code == 0, "config/demo.yaml should pass check-config"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in INPUTS.items():
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(text)
            parse_ms, parse_peak = in_process(text)
            cli_s, cli_rss, exit_code = command(path)
            results[name] = {"parse_ms": round(parse_ms, 2), "parse_peak_mb": round(parse_peak, 3),
                             "cli_s": round(cli_s, 3), "cli_rss_mb": round(cli_rss, 1), "exit": exit_code}
    final_line({"bench": "hostile_config", "inputs": results, "reference_cli_s": round(reference_s, 3),
                "reference_rss_mb": round(reference_rss, 1),
                "worst_cli_ratio": round(max(r["cli_s"] for r in results.values()) / reference_s, 2),
                "worst_rss_ratio": round(max(r["cli_rss_mb"] for r in results.values()) / reference_rss, 2),
                "bomb_bytes": len(BOMB.encode())})


if __name__ == "__main__":
    main()
