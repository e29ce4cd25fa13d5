"""`failover-engine demo` end to end: the story is told (break, signals down, decision, runbook steps, the DNS
answer moving, failback, summary), it exits 0, and nothing it started is left running; Ctrl-C with
--keep-running stops everything too. Plus the wiring (`run` without a config is the demo), the clear message
and exit 1 when something does not happen in time, and config/demo.yaml being exactly the demo's gcp config."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.config import load_config
from engine.demo import config as demo_config
from engine.demo.bind import named_binary
from engine.demo.postgres import unavailable as postgres_unavailable

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ENV = {"FAILOVER_PEER_KEY_GCP_AZURE": "dummy-peer-key-gcp-azure", "FAILOVER_PEER_KEY_GCP_WITNESS":
       "dummy-peer-key-gcp-witness", "FAILOVER_PEER_KEY_AZURE_WITNESS": "dummy-peer-key-azure-witness",
       "TSIG_SECRET": "ZHVtbXktdHNpZy1zZWNyZXQ="}
ADDRESS = re.compile(r"127\.0\.0\.1:(\d+)")


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", "demo", *args]


def demo_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def ports_in(output: str) -> set[int]:
    return {int(p) for p in ADDRESS.findall(output)} | {int(p) for p in re.findall(r" -p (\d+) ", output)}


def assert_nothing_left(output: str) -> None:
    """Every port the demo printed refuses connections, and no process runs from its work directory."""
    ports = ports_in(output)
    assert len(ports) >= 6, output  # two sites, DNS, three voters (and PostgreSQL when installed)
    deadline = time.monotonic() + 5
    open_ports = ports
    while open_ports and time.monotonic() < deadline:
        open_ports = set()
        for port in ports:
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    open_ports.add(port)
        time.sleep(0.1)
    assert not open_ports, f"still listening after the demo ended: {sorted(open_ports)}"
    workdir = re.search(r"work directory: (\S+)", output)
    assert workdir is not None, output
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if workdir.group(1) in text:
            left.append(text)
    assert not left, f"processes left from {workdir.group(1)}: {left}"


def test_the_demo_tells_the_whole_story_and_leaves_nothing_behind() -> None:
    started = time.monotonic()
    result = subprocess.run(demo_command(), cwd=ROOT, env=demo_env(), capture_output=True, text=True, timeout=150,
                            check=False)
    took = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, f"exit {result.returncode}\n{out}\n{result.stderr[-3000:]}"
    assert "Traceback" not in out + result.stderr
    assert took < 90, f"the demo took {took:.0f}s\n{out}"
    # the parts
    assert ("BIND" in out) == (named_binary() is not None), out
    with_database = postgres_unavailable() is None
    if not with_database:
        assert postgres_unavailable() in out
    # steady state, then the break and what the voters see
    assert re.search(r"dig @127\.0\.0\.1 -p \d+ app\.example\.test A \+short +-> +192\.0\.2\.10 +\(gcp\)", out), out
    lines = out.splitlines()
    broke = next(i for i, line in enumerate(lines) if "BREAKING GCP" in line)
    story = "\n".join(lines[broke:])
    assert re.search(r"t\+ +0\.\ds +BREAKING GCP", story), story
    assert re.search(r"gcp/health failed 1/3: connect refused", story), story
    assert re.search(r"gcp/health failed 2/3: connect refused", story), story
    assert len(re.findall(r"shop/gcp/health: up -> down \(3/3 failures", story)) == 3, story
    assert re.search(r"engine-azure +decides: failover shop gcp -> azure: \d of 3 voters see gcp down \(need 2\), "
                     r"3 see azure up; this instance acts", story), story
    # the runbook, step by step with durations, DNS verified, the data-loss check
    assert re.search(r"engine-azure +runbook failover gcp -> azure started \(epoch 1 -> 2, auto\)", story), story
    for step in ("precheck", "shift_dns", "verify_dns", "report"):
        assert re.search(rf"^t\+ *[\d.]+s +{step} +done +\d+\.\d\ds ", story, re.M), f"{step}\n{story}"
    assert re.search(r"verify_dns +done .*all 1 servers answer azure", story), story
    if with_database:
        for step in ("fence", "promote", "consistency", "reconcile"):
            assert re.search(rf"^t\+ *[\d.]+s +{step} +done ", story, re.M), f"{step}\n{story}"
        # asynchronous replication: the verdict is an honest upper bound, never "ok" without proof
        assert re.search(r"consistency +done .*possible loss <= [\d.]+ s", story), story
        assert re.search(r"data-loss check: possible loss <= [\d.]+ s: azure has every acknowledged write up to",
                         story), story
        assert "prepare-failback -> 200" in story
        assert "the 3 orders written in azure during the outage are in gcp's database: nothing lost" in story
    else:
        assert re.search(r"consistency +skipped .*no database", story), story
    # the DNS answer moved, the status page, then failback through the API as a switchover
    assert re.search(r"DNS now: dig @127\.0\.0\.1 -p \d+ app\.example\.test A \+short +-> +198\.51\.100\.10 +"
                     r"\(azure\)", story), story
    assert re.search(r"status page: http://127\.0\.0\.1:\d+/ .*viewer token \S+", story), story
    assert "BRINGING GCP BACK" in story
    assert re.search(r"shop/gcp/health: down -> up", story), story
    assert re.search(r"/v1/services/shop/failback -> 202: operation shop-e3-\w+", story), story
    assert re.search(r"runbook failback azure -> gcp started \(epoch 2 -> 3, manual\)", story), story
    assert re.search(r"lower_ttl +skipped", story), story
    assert re.search(r"engine-azure +runbook failback done in [\d.]+s", story), story
    back = story[story.index("BRINGING GCP BACK"):]
    assert re.search(r"DNS now: .* +-> +192\.0\.2\.10 +\(gcp\)", back), back
    # the summary
    summary = out[out.index("\nsummary\n"):]
    for label in ("detection: gcp down for 2 of 3 voters", "decision: failover, engine-azure acts",
                  "DNS verified: every server answers azure", "TIME TO RECOVERY", "failback total", "data-loss check:",
                  "demo total"):
        assert label in summary, summary
    recovery = float(re.search(r"TIME TO RECOVERY.* ([\d.]+)s", summary).group(1))  # type: ignore[union-attr]
    assert 1.5 < recovery < 15, summary
    assert_nothing_left(out)
    workdir = re.search(r"work directory: (\S+)", out)
    assert workdir is not None and not Path(workdir.group(1)).exists(), "the work directory is removed after success"


def test_keep_running_then_ctrl_c_stops_everything() -> None:
    """--keep-running stays up (the printed `status` command works against it); Ctrl-C stops every part, exit 0."""
    proc = subprocess.Popen(demo_command("--keep-running", "--dns", "builtin", "--no-database"), cwd=ROOT,
                            env=demo_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "everything stays up until Ctrl-C" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(120), "".join(lines)
        time.sleep(0.5)  # the "try" block is printed whole
        out = "".join(lines)
        assert "built-in DNS server" in out and "skipped (--no-database)" in out, out
        command = re.search(r"status +failover-engine status --url (\S+) --token (\S+)", out)
        assert command is not None, out
        status = subprocess.run([sys.executable, "-m", "engine", "status", "--url", command.group(1), "--token",
                                 command.group(2)], cwd=ROOT, env=demo_env(), capture_output=True, text=True,
                                timeout=30, check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "shop" in status.stdout and "gcp" in status.stdout, status.stdout
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=5)
    out = "".join(lines)
    assert proc.stderr is not None and proc.stdout is not None
    errors = proc.stderr.read()
    proc.stderr.close()
    proc.stdout.close()
    assert code == 0, f"exit {code}\n{out}\n{errors[-3000:]}"
    assert "interrupted: stopping everything" in out and "demo stopped" in out, out
    assert "Traceback" not in out + errors
    assert_nothing_left(out)


# -- without processes ---------------------------------------------------------------------------------
def test_config_demo_yaml_is_the_demos_gcp_config() -> None:
    """config/demo.yaml is exactly what the demo writes for engine-gcp (with fixed ports): it cannot drift."""
    assert (ROOT / "config" / "demo.yaml").read_text() == demo_config.render(demo_config.EXAMPLE, "engine-gcp")


@pytest.mark.parametrize("voter", [vid for vid, _site, _role in demo_config.VOTERS])
@pytest.mark.parametrize("database", [True, False])
def test_every_voter_config_the_demo_writes_is_valid(tmp_path: Path, voter: str, database: bool) -> None:
    layout = demo_config.Layout(
        sites=demo_config.EXAMPLE.sites, voters=demo_config.EXAMPLE.voters, dns=demo_config.EXAMPLE.dns,
        database=demo_config.EXAMPLE.database if database else None, journal_dir=str(tmp_path),
        tokens=(("demo-operator", "operator", "a" * 64), ("demo-viewer", "viewer", "b" * 64)))
    path = tmp_path / f"{voter}.yaml"
    path.write_text(demo_config.render(layout, voter))
    config = load_config(path, env=ENV)
    assert config.instance.id == voter and len(config.peers) == 2
    shop = config.services["shop"]
    assert shop.policy.failback_healthy_for == demo_config.FAILBACK_HEALTHY_FOR
    assert (shop.dns is not None) == (voter != "witness")
    assert (shop.database is not None) == (database and voter != "witness")
    assert [t.role for t in config.api.tokens] == ["operator", "viewer"]


def test_run_needs_a_config_and_demo_calls_the_demo(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`run` without --config exits 2 pointing at `demo` (it never starts the demo); `demo` runs it."""
    import engine.demo
    from engine.cli import main

    calls: list[tuple[object, ...]] = []

    def fake(seconds: float | None = None, **kw: object) -> int:
        calls.append((seconds, kw))
        return 0

    monkeypatch.setattr(engine.demo, "run_demo", fake)
    assert main(["run"]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["demo"]) == 0
    assert main(["demo", "--keep-running", "--dns", "builtin", "--no-database"]) == 0
    assert calls == [(None, {"keep_running": False, "dns": "auto", "database": True}),
                     (None, {"keep_running": True, "dns": "builtin", "database": False})]


@pytest.mark.parametrize(("error", "message"), [
    ("late", "demo failed: the failover runbook finishing did not happen within 40s"),
    ("bug", "demo failed: unexpected RuntimeError: boom"),
])
def test_a_failure_is_one_clear_message_and_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                   error: str, message: str) -> None:
    """Something that does not happen in time (or a bug) ends the demo with one sentence, exit 1, no traceback,
    and the work directory kept for its logs."""
    from engine.demo import story
    from engine.demo.voters import DemoFailed

    async def setup(self: story.Demo) -> None:
        if error == "late":
            raise DemoFailed("the failover runbook finishing did not happen within 40s")
        raise RuntimeError("boom")

    monkeypatch.setattr(story.Demo, "setup", setup)
    assert story.run() == 1
    out = capsys.readouterr().out
    assert message in out and "Traceback" not in out
    kept = re.search(r"logs are kept in (\S+)", out)
    assert kept is not None and Path(kept.group(1)).is_dir()
    Path(kept.group(1)).rmdir()
