"""A drill report as one self-contained HTML page: the verdict, a timeline of the phases drawn against
their SLOs (inline SVG: no script, no external asset), the checks and the operations.

Every text from the drill record is escaped; colours come from a fixed set of classes.
"""

from __future__ import annotations

import html
import math
import time
from typing import Any

BAR_W = 560  # px of the longest of (phase, SLO)
ROW_H = 28
LABEL_W = 120
FLOOR_S = 0.1  # the log scale starts here: a phase of 0.3 s next to a 15-minute SLO still shows
MIN_BAR = 4.0  # px: a timed phase is never a hairline
TICKS = (0.1, 1.0, 10.0, 60.0, 600.0, 3600.0)


def _x(seconds: float, scale: float) -> float:
    """Pixels from the bar's start for ``seconds`` on a log scale whose right end is ``scale``."""
    return BAR_W * math.log1p(max(0.0, seconds) / FLOOR_S) / math.log1p(scale / FLOOR_S)


def _tick(seconds: float) -> str:
    return f"{seconds:g}s" if seconds < 60 else f"{seconds / 60:g}min"


def _ts(at: Any) -> str:
    if not isinstance(at, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + " UTC"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def timeline_svg(phases: list[dict[str, Any]]) -> str:
    """One row per phase: its bar (green within the SLO, red over it) and a mark at the SLO, on a log
    scale (a linear one made a 1 s step a 1-pixel bar next to a 15-minute SLO); ticks label the axis."""
    if not phases:
        return "<p class=muted>no phase was timed (the drill did not move traffic)</p>"
    scale = max(max(float(p.get("seconds") or 0), float(p.get("slo_s") or 0)) for p in phases) or 1.0
    width = LABEL_W + BAR_W + 170
    height = ROW_H * len(phases) + 40
    rows = []
    for index, p in enumerate(phases):
        y = 10 + index * ROW_H
        seconds = float(p.get("seconds") or 0)
        slo = float(p.get("slo_s") or 0)
        bar = max(MIN_BAR, _x(seconds, scale))
        mark = LABEL_W + _x(slo, scale)
        cls = "ok" if p.get("met") else "miss"
        rows.append(
            f'<g class="phase {cls}"><text x="0" y="{y + 15}">{_e(p.get("phase"))}</text>'
            f'<rect x="{LABEL_W}" y="{y + 3}" width="{bar:.1f}" height="16" rx="2"/>'
            f'<line x1="{mark:.1f}" x2="{mark:.1f}" y1="{y}" y2="{y + 22}" class="slo"/>'
            f'<text x="{LABEL_W + BAR_W + 10}" y="{y + 15}">{seconds:.2f}s / SLO {slo:g}s'
            f'{"" if p.get("met") else " MISSED"}</text></g>')
    axis_y = 10 + len(phases) * ROW_H + 14
    ticks = "".join(f'<text class="tick" x="{LABEL_W + _x(t, scale):.1f}" y="{axis_y}" text-anchor="middle">'
                    f"{_tick(t)}</text>" for t in TICKS if t <= scale)
    caption = f'<text class="tick" x="0" y="{axis_y}">log scale</text>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="phase timeline" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}">{"".join(rows)}{caption}{ticks}</svg>')


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}.passed{color:#17692b}.failed{color:#a4161a}.running{color:#8a5a00}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;
vertical-align:top}.muted{color:#777}
svg text{font:12px system-ui,sans-serif;fill:#222}.phase.ok rect{fill:#2b9348}.phase.miss rect{fill:#d00000}
line.slo{stroke:#222;stroke-width:2;stroke-dasharray:3 2}svg text.tick{font-size:10px;fill:#777}
"""


def render_report(drill: dict[str, Any]) -> str:
    state = str(drill.get("state", "?"))
    state_cls = state if state in ("passed", "failed", "running") else "muted"
    checks = "".join(
        f"<tr><td>{_e(c.get('check'))}</td><td class={'passed' if c.get('ok') else 'failed'}>"
        f"{'ok' if c.get('ok') else 'FAILED'}</td><td>{_e(c.get('detail'))}</td>"
        f"<td>{'' if c.get('seconds') is None else _e(c.get('seconds')) + 's'}</td></tr>"
        for c in drill.get("checks") or [])
    rto = drill.get("rto_estimate") or {}
    measured = next((p for p in drill.get("phases") or [] if p.get("phase") == "rto"), None)
    rto_line = ""
    if rto:
        rto_line = (f"<p>worst-case RTO from the configuration: {_e(rto.get('total_s'))}s"
                    + (f"; measured in this drill: {_e(measured.get('seconds'))}s" if measured else "") + "</p>")
    ops = ", ".join(_e(o) for o in drill.get("operations") or []) or "none"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(drill.get('kind'))} drill {_e(drill.get('id'))}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(drill.get('kind'))} drill of {_e(drill.get('service'))}: "
        f"<span class={state_cls} id=state>{_e(state)}</span></h1>"
        f"<p id=sentence>{_e(drill.get('sentence'))}</p>"
        f"<table><tr><th>id</th><td>{_e(drill.get('id'))}</td></tr>"
        f"<tr><th>trigger</th><td>{_e(drill.get('trigger'))}{' by ' + _e(drill['actor']) if drill.get('actor') else ''}"
        f"</td></tr><tr><th>reason</th><td>{_e(drill.get('reason'))}</td></tr>"
        f"<tr><th>from / to</th><td>{_e(drill.get('source'))} &rarr; {_e(drill.get('target'))}</td></tr>"
        f"<tr><th>started</th><td>{_ts(drill.get('started_at'))}</td></tr>"
        f"<tr><th>finished</th><td>{_ts(drill.get('finished_at'))}</td></tr>"
        f"<tr><th>operations</th><td>{ops}</td></tr></table>"
        f"<h2>phases against their SLOs</h2>{timeline_svg(list(drill.get('phases') or []))}{rto_line}"
        f"<h2>checks</h2><table id=checks><tr><th>check</th><th>result</th><th>detail</th><th>time</th></tr>"
        f"{checks}</table></body></html>")
