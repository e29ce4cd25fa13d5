"""The status page at ``/``: what a real headless Chromium shows while a cluster fails over, escaping, speed.

The scenario runs two engines and a witness as processes (``tests/support/cluster.py``), loads
engine-azure's page in Debian's ``chromium`` before, during and after gcp goes dark, and reads the DOM.
Set ``STATUS_PAGE_SCREENSHOT=/some/file.png`` to keep the screenshot taken after the failover.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from engine.core.steps import FAILOVER_STEPS
from engine.http.status_page import render, streak
from tests.support.chromium import dom_text, dump_dom, screenshot
from tests.support.cluster import Cluster

HOSTILE = "<script>alert(1)</script>"


def _signal(name: str, state: str = "up", reason: str = "status 200") -> dict[str, Any]:
    return {"name": name, "state": state, "since": 990.0, "consecutive_failures": 0, "consecutive_successes": 7,
            "failure_threshold": 3, "success_threshold": 2, "interval_s": 10.0,
            "last": {"ok": state == "up", "reason": reason, "at": 999.5, "latency_ms": 12.3, "value": None}}


def _status(signals_per_site: int = 1, hostile: str = "ok") -> dict[str, Any]:
    site = {"health": "up", "role": "active", "signals": [_signal(f"health-{i}", reason=hostile)
                                                           for i in range(signals_per_site)]}
    service = {"active": "gcp", "epoch": 1, "paused": False, "last_move_at": None, "lag_s": 0.4, "dns": hostile,
               "decision": {"verdict": "hold", "message": f"holding: {hostile}", "target": None, "executor": None,
                            "since": 995.0},
               "operation": None, "sites": {"gcp": site, hostile: {**site, "role": "standby"}},
               "shared_dependencies": [_signal(f"dep:{hostile}", "down", hostile)],
               "replication": _signal("replication"), "last_reconciliation": {"sentence": hostile, "at": 900.0}}
    return {"instance": {"id": "engine-azure", "site": "azure", "role": "engine", "version": "0.1.0",
                         "started_at": 900.0},
            "time": 1000.0, "healthy": True, "quorum": True,
            "peers": [{"id": "engine-gcp", "url": "http://127.0.0.1:1", "heard_age_s": 0.2, "sent_age_s": 0.1,
                       "last_error": hostile}],
            "services": {"shop": service, hostile: service}}


def _operation(hostile: str = "ok") -> dict[str, Any]:
    steps: dict[str, dict[str, Any]] = {
        name: {"state": "done", "started_at": 950.0 + i, "finished_at": 950.5 + i, "attempts": 1,
               "duration_s": 0.5, "summary": hostile, "error": None, "data": {}}
        for i, name in enumerate(FAILOVER_STEPS)}
    steps["verify_dns"]["error"] = hostile
    return {"id": "op-1", "service": "shop", "kind": "failover", "source": "gcp", "target": "azure",
            "epoch_from": 1, "epoch_to": 2, "trigger": "automatic", "state": "done", "created_at": 950.0,
            "finished_at": 958.0, "message": hostile, "actor": hostile, "reason": hostile, "evidence": {},
            "steps": steps}


def _events(n: int, hostile: str = "ok") -> list[dict[str, Any]]:
    return [{"id": i, "at": 999.0 - i, "service": "shop", "kind": hostile, "message": hostile, "actor": None,
             "data": {}} for i in range(n)]


def test_hostile_text_is_escaped() -> None:
    """Reasons, event messages, peer errors, names: all come out as text, never as markup."""
    page = render(_status(3, HOSTILE), _events(20, HOSTILE), {"shop": _operation(HOSTILE), HOSTILE: None})
    assert "<script" not in page.lower()
    assert "alert(1)</" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") > 20
    assert re.search(r'class="b (?!(up|down|unknown|hold|page|failover|running|done|halted|stood_down|aborted|'
                     r'pending|started|skipped|failed|active|standby|yes|no)")', page) is None


@pytest.mark.real
async def test_hostile_page_in_chromium(tmp_path: Path) -> None:
    """A browser shows the hostile strings literally and runs no script from them."""
    page = render(_status(1, HOSTILE), _events(5, HOSTILE), {"shop": _operation(HOSTILE)})
    file = tmp_path / "hostile.html"
    file.write_text(page, encoding="utf-8")
    dom = await dump_dom(file.as_uri())
    assert "<script" not in dom.lower()
    text = dom_text(dom)
    assert f"holding: {HOSTILE}" in text
    assert text.count(HOSTILE) > 10


def test_running_operation_timeline() -> None:
    """A runbook in flight: the started step runs until now, the steps not reached yet are pending."""
    op = _operation()
    op.update(state="running", finished_at=None)
    for name in FAILOVER_STEPS[4:]:
        del op["steps"][name]
    op["steps"]["shift_dns"].update(state="started", finished_at=None, duration_s=None, attempts=2)
    page = render(_status(), [], {"shop": op})
    text = dom_text(page)
    assert "operation op-1 running" in text and "running for 50.00 s" in text
    assert "shift_dns started 2 —" in text
    assert all(f"{name} pending 0 —" in text for name in FAILOVER_STEPS[4:]), text
    assert page.count('<div class="bar started"') == 1 and page.count('<div class="bar done"') == 3


def test_render_is_fast_for_1000_signals() -> None:
    """1,000 signals (2 services x 2 sites x 250), 20 events, a full runbook: well under 50 ms."""
    status = _status(250)
    ops = {name: _operation() for name in status["services"]}
    events = _events(20)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        page = render(status, events, ops)
        best = min(best, time.perf_counter() - started)
    assert page.count("<tr><td>health-") == 1000
    print(f"status page render, 1,000 signals: {best * 1000:.2f} ms ({len(page) // 1024} KiB)")
    assert best < 0.050


def _site(status: dict[str, Any], site: str) -> str:
    return str(status["services"]["shop"]["sites"][site]["health"])


@pytest.mark.slow
@pytest.mark.real
async def test_page_follows_a_failover_in_chromium(tmp_path: Path) -> None:
    """engine-azure's page in Chromium: gcp active and holding, then gcp cut, then azure at epoch 2, steps done."""
    c = await Cluster(tmp_path).start()
    try:
        for vid in c.voters:
            await c.wait_for(vid, lambda s: _site(s, "gcp") == "up" and _site(s, "azure") == "up",
                             what="both sites up")
        url = c.voters["engine-azure"].url + "/"
        before = await dump_dom(url)
        text = dom_text(before)
        assert "failover-engine · engine-azure" in text
        assert '<meta http-equiv="refresh" content="2">' in before  # it refreshes itself
        assert "active gcp" in text and 'class="epoch">1<' in before
        assert re.search(r"site gcp active up .*site azure standby up", text), text[:2000]
        assert re.search(r"hold holding: gcp is up for [23] of 3 voters", text), text[:2000]
        assert 'class="decision v-hold"' in before
        assert re.search(r"engine-gcp http://\S+ [\d.]+s ago", text) and re.search(r"witness http://\S+ [\d.]+s ago",
                                                                                    text)
        assert "quorum yes" in text and "no operation recorded" in text

        for vid in c.voters:
            await c.cut(vid, "gcp", "reset")
        seen: list[str] = []  # what each page loaded during the failover showed
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            dom = await dump_dom(url)
            text = dom_text(dom)
            verdict = re.search(r'class="decision v-(\w+)"', dom)
            seen.append(("azure" if "active azure" in text else "gcp") + " " + (verdict.group(1) if verdict else "?"))
            if "active azure" in text and re.search(r"operation \S+ done", text):
                break
        else:
            raise AssertionError(f"the page never showed the finished failover; pages seen: {seen}\n{c.logs()}")
        # pages never go back: once one shows azure active, every later one does
        assert seen == sorted(seen, key=lambda page: page.startswith("azure")), seen

        after = await dump_dom(url)
        text = dom_text(after)
        assert "active azure" in text and 'class="epoch">2<' in after
        assert re.search(r"site gcp standby down", text) and re.search(r"site azure active up", text), text[:3000]
        assert re.search(r"failover gcp → azure epoch 1 → 2 trigger \S+", text), text
        for step in ("precheck", "shift_dns", "verify_dns"):
            assert re.search(rf"{step} done \d+ [\d.]+ s", text), (step, text)
        assert re.search(r"fence (done|skipped) ", text)
        assert after.count('<div class="bar done"') + after.count('<div class="bar skipped"') == len(FAILOVER_STEPS)
        events = text.split("recent events", 1)[1]
        assert "failover of shop: shift_dns done" in events and "failover of shop to azure done" in events, events
        png = await screenshot(url, tmp_path / "status.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if keep := os.environ.get("STATUS_PAGE_SCREENSHOT"):
            shutil.copy(png, keep)
        print("pages seen during the failover:", seen)
    finally:
        await c.stop()


def test_the_active_site_is_prominent_and_counts_are_words() -> None:
    """The service says where it is served from in large type; a signal's counts read as a sentence."""
    page = render(_status(), [], {})
    assert re.search(r"<p class=serving>served from <strong class=active-site>gcp</strong>", page)
    text = dom_text(page)
    assert "passed 7 checks in a row" in text and "7/2" not in text


def test_streak_says_what_it_takes_to_change_state() -> None:
    """Failures below the threshold say when the signal goes down; an up signal's run needs no threshold."""
    assert streak({"state": "up", "consecutive_failures": 2, "failure_threshold": 3}) == (
        "failed 2 checks in a row (down after 3)")
    assert streak({"state": "down", "consecutive_failures": 0, "consecutive_successes": 1,
                   "success_threshold": 2}) == "passed 1 check in a row (up after 2)"
    assert streak({"state": "up", "consecutive_failures": 0, "consecutive_successes": 3185}) == (
        "passed 3185 checks in a row")
    assert streak({"state": "unknown"}) == "not checked yet"
