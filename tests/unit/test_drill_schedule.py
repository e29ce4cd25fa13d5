"""Drills without processes: a year of schedules on a fake clock, config refusals, the HTML report."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest

from engine.config import ConfigError, parse_config
from engine.core.drill_calendar import drill_timing, next_fire, previous_fire
from engine.http.drill_report import BAR_W, render_report, timeline_svg

MINIMAL = """
instance: {id: gcp-1, site: gcp}
services:
  api:
    active: gcp
    sites:
      gcp: {probes: [{type: tcp, host: 127.0.0.1, port: 9}]}
      azure: {probes: [{type: tcp, host: 127.0.0.1, port: 9}]}
""".lstrip()

YEAR_START = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
YEAR_END = datetime(2028, 1, 1, tzinfo=UTC).timestamp()


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def simulate(expr: str, window: float, *, refuse: set[int] | None = None,
             not_before: float | None = None) -> tuple[list[float], list[float]]:
    """Walk a year from one interesting moment to the next (as the engine's loop would see them):
    start every due drill at once unless its month is in ``refuse``. Returns (drill start times,
    fire times reported overdue, once each)."""
    started: list[float] = []
    overdue: list[float] = []
    now = YEAR_START
    while now < YEAR_END:
        timing = drill_timing(expr, window, now, started[-1] if started else None, not_before)
        month = datetime.fromtimestamp(now, UTC).month
        if timing.state == "due" and month not in (refuse or set()):
            started.append(now)
            now += 30.0  # the engine's next look
        elif timing.state == "due":
            now = timing.deadline  # refused all window long
        elif timing.state == "overdue":
            if timing.fire not in overdue:
                overdue.append(timing.fire)
            now = next_fire(expr, now)
        else:
            now = timing.fire + 17.0  # the loop looks every 30 s: some seconds after the fire time
    return started, overdue


def test_monthly_default_runs_twelve_times_a_year_inside_each_window() -> None:
    """The default shadow schedule (03:00 UTC on the 1st): one drill a month, each within its window."""
    config = parse_config(MINIMAL, env={})
    shadow = config.services["api"].drills.shadow
    started, overdue = simulate(shadow.schedule, shadow.window, not_before=YEAR_START - 1)
    assert len(started) == 12 and overdue == []
    for when in started:
        d = datetime.fromtimestamp(when, UTC)
        assert d.day == 1 and 3 <= d.hour < 3 + shadow.window / 3600


def test_quarterly_default_runs_four_times() -> None:
    config = parse_config(MINIMAL, env={})
    full = config.services["api"].drills.full
    assert full.enabled is False  # disruptive: scheduled runs are opt-in
    started, _ = simulate(full.schedule, full.window, not_before=YEAR_START - 1)
    assert [datetime.fromtimestamp(s, UTC).month for s in started] == [1, 4, 7, 10]


def test_a_refused_window_is_overdue_once_then_the_next_month_runs() -> None:
    """March is refused all window long (paused, say): one overdue alert for March, April runs again."""
    started, overdue = simulate("0 3 1 * *", 4 * 3600, refuse={3}, not_before=YEAR_START - 1)
    assert len(started) == 11
    assert overdue == [at("2027-03-01T03:00:00")]


def test_fire_times_before_the_first_start_are_not_overdue() -> None:
    """An engine installed mid-month owes no drill for that month's past fire time."""
    installed = at("2027-05-10T12:00:00")
    timing = drill_timing("0 3 1 * *", 3600, installed + 60, None, not_before=installed)
    assert timing.state == "done" and timing.fire == at("2027-06-01T03:00:00")
    assert drill_timing("0 3 1 * *", 3600, at("2027-06-01T03:30:00"), None, installed).state == "due"
    assert drill_timing("0 3 1 * *", 3600, at("2027-06-01T04:30:00"), None, installed).state == "overdue"


def test_previous_and_next_fire_at_the_exact_minute() -> None:
    assert previous_fire("0 3 * * *", at("2027-02-02T03:00:00")) == at("2027-02-02T03:00:00")
    assert previous_fire("0 3 * * *", at("2027-02-02T02:59:59")) == at("2027-02-01T03:00:00")
    assert next_fire("0 3 * * *", at("2027-02-02T03:00:00")) == at("2027-02-03T03:00:00")


@pytest.mark.parametrize(("drills", "path", "fragment"), [
    ("{shadow: {schedule: 'every monday'}}", "services.api.drills.shadow.schedule", "not a five-field cron"),
    ("{shadow: {schedule: '61 * * * *'}}", "services.api.drills.shadow.schedule", "not a five-field cron"),
    ("{full: {window: 1h, hold: 2h}}", "services.api.drills.full.hold", "not shorter than the window 1h"),
    ("{synthetic: {sites: {gcp: 'http://a'}, requests: [{path: /}]}}", "services.api.drills.synthetic.sites",
     "no base URL for azure"),
    ("{synthetic: {sites: {gcp: 'http://a', azure: 'http://b', aws: 'http://c'}, requests: [{path: /}]}}",
     "services.api.drills.synthetic.sites.aws", "not one of the sites"),
    ("{synthetic: {sites: {gcp: 'ftp://a', azure: 'http://b'}, requests: [{path: /}]}}",
     "services.api.drills.synthetic.sites", "must start with http"),
])
def test_bad_drill_config_names_the_path(drills: str, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + f"    drills: {drills}\n", env={})
    text = "\n".join(str(p) for p in info.value.problems)
    assert path in text and fragment in text, text


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_draws_each_phase_against_its_slo_and_escapes_everything() -> None:
    hostile = "<script>alert(1)</script>"
    drill = {"id": "drill-1", "service": "shop", "kind": "full", "state": "passed", "trigger": "manual",
             "actor": hostile, "reason": hostile, "started_at": 0, "finished_at": 60, "sentence": hostile,
             "source": "gcp", "target": "azure", "operations": ["op-1", "op-2"],
             "phases": [{"phase": "dns_shift", "seconds": 0.4, "slo_s": 15, "met": True},
                        {"phase": "failback", "seconds": 20.0, "slo_s": 10, "met": False}],
             "checks": [{"check": hostile, "ok": False, "detail": hostile, "seconds": 0.1}],
             "rto_estimate": {"total_s": 42.5}}
    page = render_report(drill)
    parser = _Collect()
    parser.feed(page)
    assert "script" not in parser.tags and "<script>" not in page
    assert parser.tags.count("rect") == 2 and parser.tags.count("line") == 2 and "svg" in parser.tags
    text = " ".join(parser.text)
    assert "20.00s / SLO 10s MISSED" in text and "0.40s / SLO 15s" in text
    assert "worst-case RTO from the configuration: 42.5s" in text
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # no external asset


def test_the_timeline_keeps_short_steps_visible_next_to_a_long_slo() -> None:
    """On the log-scale timeline a 1 s phase beside a 15-minute SLO is a bar of at least a tenth of the width."""
    svg = timeline_svg([{"phase": "dns", "seconds": 1.0, "slo_s": 900.0, "met": True},
                        {"phase": "hold", "seconds": 900.0, "slo_s": 900.0, "met": True}])
    widths = [float(w) for w in re.findall(r'<rect [^>]*width="([0-9.]+)"', svg)]
    assert widths[0] >= BAR_W / 10 and widths[1] == pytest.approx(BAR_W)
    assert "log scale" in svg
