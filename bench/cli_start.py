"""How long ``failover-engine --help`` and ``failover-engine status`` take to start, against Python's own.

Each command is run as a fresh process (``python -m engine ...``) several times and the median wall
time kept; ``status`` talks to a real engine process (two sites with unreachable TCP probes) started
here on a loopback port. The reference is a bare ``python -c pass`` on the same interpreter. The
issue's bound: each command within 0.5 s of Python's own start (before: 2.6 s for ``--help``).

    python bench/cli_start.py

The last line printed is JSON with the keys: bench, help_s, status_s, python_s, help_over_python_s,
status_over_python_s, ratio (the slower command's time over Python's), runs.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import final_line, free_port  # noqa: E402

RUNS = 7
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def timed(argv: list[str]) -> float:
    """Median wall seconds of ``argv`` run RUNS times (its output discarded; exit code 0 required)."""
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def start_engine(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (directory / "engine.yaml").write_text(f"""
instance: {{id: bench-1, site: gcp, listen: "127.0.0.1:{port}", tick: 200ms}}
journal: {{path: "{directory / 'journal.db'}"}}
logging: {{level: error}}
services:
  shop:
    active: gcp
    sites:
      gcp: {{probes: [{{type: tcp, host: 127.0.0.1, port: {free_port()}, interval: 1s, timeout: 200ms}}]}}
      azure: {{probes: [{{type: tcp, host: 127.0.0.1, port: {free_port()}, interval: 1s, timeout: 200ms}}]}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--config", str(directory / "engine.yaml")],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the engine did not answer /healthz within 30 s")


def main() -> None:
    python_s = timed([sys.executable, "-c", "pass"])
    help_s = timed([sys.executable, "-m", "engine", "--help"])
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_engine(Path(tmp))
        try:
            status_s = timed([sys.executable, "-m", "engine", "status", "--url", url])
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    final_line({"bench": "cli_start", "help_s": round(help_s, 3), "status_s": round(status_s, 3),
                "python_s": round(python_s, 3), "help_over_python_s": round(help_s - python_s, 3),
                "status_over_python_s": round(status_s - python_s, 3),
                "ratio": round(max(help_s, status_s) / python_s, 2), "runs": RUNS})


if __name__ == "__main__":
    main()
