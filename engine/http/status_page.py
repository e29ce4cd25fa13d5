"""The status page at ``/``: one server-rendered HTML page of what an on-call engineer needs at 3 AM.

Owns the HTML of ``GET /`` and nothing else (routing and auth are :mod:`engine.http.app`'s).
:func:`render_page` reads the engine's state: the dict of ``GET /v1/status``, the last 20 journal
events and each service's latest operation; :func:`render` turns those plain dicts into HTML and is
pure (the time it shows ages against is ``status["time"]``). No front-end build, no JavaScript, no
external assets: inline CSS, the step timeline drawn as CSS bars, ``<meta http-equiv="refresh">``
every 2 s. Every piece of dynamic text is escaped (event messages, probe reasons and peer errors come
from remote systems) and CSS classes come only from a fixed set. Cost for 1,000 signals on the project's
2-core machine: :func:`render` about 3 ms (``tests/scenarios/test_status_page.py`` holds it under 50 ms);
:func:`render_page` on a live engine, ``status()`` and journal reads included, 4-8 ms.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from engine.core.ports import JournalReader, StatusView
from engine.core.steps import FAILOVER_STEPS

EVENTS = 20
CLASSES = frozenset({"up", "down", "unknown", "hold", "page", "failover", "running", "done", "halted",
                     "stood_down", "aborted", "pending", "started", "skipped", "failed", "active", "standby",
                     "yes", "no"})
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1240px;padding:12px 20px;color:#1d2733;
background:#f5f7fa}
h1{font-size:20px;margin:4px 0}h2{font-size:18px;margin:0 0 6px}h3{font-size:15px;margin:8px 0 4px}
section{background:#fff;border:1px solid #d8dee6;border-radius:6px;padding:10px 14px;margin:12px 0}
table{border-collapse:collapse;width:100%;margin:4px 0}th,td{text-align:left;padding:3px 6px;vertical-align:top;
border-bottom:1px solid #edf0f3}th{font-size:12px;color:#5a6776;font-weight:600}td.n{white-space:nowrap}
.muted{color:#6b7785}.b{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:600;
background:#e3e7ec;color:#3b4654}.up,.done,.yes,.active{background:#d5f2dc;color:#17642d}
.down,.failed,.halted,.no,.page{background:#fbd9d6;color:#9b1c12}.running,.started,.hold{background:#dbe7fb;color:#1b4a9b}
.skipped,.failover{background:#fdebc8;color:#8a5300}.facts span{margin-right:14px}
.decision{font-size:15px;padding:8px 10px;border-radius:5px;border-left:6px solid #7a8694;background:#f0f3f6}
.decision.v-hold{border-color:#3a6fd8}.decision.v-page{border-color:#d93025;background:#fdeeee}
.decision.v-failover{border-color:#e08a00;background:#fff6e6}.sites{display:flex;gap:12px;flex-wrap:wrap}
.site{flex:1 1 380px;border:1px solid #e1e6ec;border-radius:5px;padding:4px 10px}
.track{position:relative;height:14px;min-width:220px;background:#eef1f4;border-radius:3px}
.bar{position:absolute;top:2px;height:10px;min-width:3px;border-radius:2px;background:#7a8694}
.serving{font-size:22px;margin:2px 0 8px}.active-site{font-size:30px;color:#17642d;letter-spacing:.5px}
.bar.done{background:#2f9e4f}.bar.started{background:#3a6fd8}.bar.failed{background:#d93025}.bar.skipped{background:#e0a000}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _badge(text: Any, state: Any = None) -> str:
    cls = str(text if state is None else state)
    return f'<span class="b {cls if cls in CLASSES else "unknown"}">{_e(text)}</span>'


def _num(value: Any, fmt: str = "{:.1f}", unit: str = "") -> str:
    return "—" if not isinstance(value, int | float) else _e(fmt.format(value) + unit)


def _age(now: float, at: Any) -> str:
    if not isinstance(at, int | float):
        return "never"
    seconds = max(0.0, now - at)
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    return f"{seconds / 60:.0f}m ago" if seconds < 7200 else f"{seconds / 3600:.1f}h ago"


def _clock(at: Any) -> str:
    if not isinstance(at, int | float):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def _table(head: Iterable[str], rows: Iterable[str], cls: str = "") -> str:
    cells = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(rows)
    return f'<table class="{cls}"><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>'


def _signal_rows(signals: Iterable[Mapping[str, Any]], now: float) -> Iterable[str]:
    for s in signals:
        last = s.get("last") or {}
        yield (f"<tr><td>{_e(s.get('name'))}</td><td>{_badge(s.get('state'))}</td>"
               f"<td>{_e(streak(s))}</td>"
               f"<td>{_e(last.get('reason'))}</td><td class=n>{_num(last.get('latency_ms'), unit=' ms')}</td>"
               f"<td class=n>{_age(now, last.get('at'))}</td></tr>")


def _times(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def streak(s: Mapping[str, Any]) -> str:
    """The signal's run of results in words, and what it takes to change state: "failed 2 checks in a row
    (down after 3)", "passed 3185 checks in a row" (instead of the bare counts "2/3", "3185/2")."""
    fails, oks = s.get("consecutive_failures"), s.get("consecutive_successes")
    state = str(s.get("state"))
    if isinstance(fails, int) and fails > 0:
        need = s.get("failure_threshold")
        tail = f" (down after {need})" if state != "down" and isinstance(need, int) else ""
        return f"failed {_times(fails, 'check')} in a row{tail}"
    if isinstance(oks, int) and oks > 0:
        need = s.get("success_threshold")
        tail = f" (up after {need})" if state != "up" and isinstance(need, int) else ""
        return f"passed {_times(oks, 'check')} in a row{tail}"
    return "not checked yet"


def _signals(signals: Iterable[Mapping[str, Any]], now: float) -> str:
    head = ("signal", "state", "recent checks", "last reason", "latency", "observed")
    return _table(head, _signal_rows(signals, now), "signals")


def _step_rows(op: Mapping[str, Any], now: float) -> Iterable[str]:
    steps: Mapping[str, Mapping[str, Any]] = op.get("steps") or {}
    names = sorted(steps, key=lambda n: (steps[n].get("started_at") or float("inf"), n))
    if op.get("kind") == "failover":
        names += [n for n in FAILOVER_STEPS if n not in steps]
    t0 = op.get("created_at") or min((s.get("started_at") or now for s in steps.values()), default=now)
    ends = [s.get("finished_at") or 0.0 for s in steps.values()]
    end = max([op.get("finished_at") or (now if op.get("state") == "running" else 0.0), *ends, t0 + 0.001])
    span = end - t0
    for name in names:
        rec = steps.get(name) or {"state": "pending"}
        state = str(rec.get("state"))
        start, finish = rec.get("started_at"), rec.get("finished_at") or (now if state == "started" else None)
        bar = ""
        if isinstance(start, int | float):
            left = min(100.0, max(0.0, (start - t0) / span * 100))
            width = min(100.0 - left, max(0.0, ((finish or start) - start) / span * 100))
            bar = f'<div class="bar {state if state in CLASSES else "unknown"}" ' \
                  f'style="left:{left:.2f}%;width:{width:.2f}%"></div>'
        text = _e(rec.get("summary")) + (f' <b class="b failed">{_e(rec["error"])}</b>' if rec.get("error") else "")
        yield (f"<tr><td>{_e(name)}</td><td>{_badge(state)}</td><td class=n>{_e(rec.get('attempts', 0))}</td>"
               f"<td class=n>{_num(rec.get('duration_s'), '{:.3f}', ' s')}</td>"
               f'<td><div class="track">{bar}</div></td><td>{text}</td></tr>')


def _operation(op: Mapping[str, Any] | None, now: float) -> str:
    if not op:
        return "<h3>operation</h3><p class=muted>no operation recorded</p>"
    took = (op.get("finished_at") or now) - (op.get("created_at") or now)
    who = "".join(f" · {label} {_e(op.get(key))}" for key, label in (("actor", "by"), ("reason", "because"))
                  if op.get(key))
    return (f"<h3>operation {_e(op.get('id'))} {_badge(op.get('state'))}</h3>"
            f"<p class=facts><span>{_e(op.get('kind'))} {_e(op.get('source'))} → {_e(op.get('target'))}</span>"
            f"<span>epoch {_e(op.get('epoch_from'))} → {_e(op.get('epoch_to'))}</span>"
            f"<span>trigger {_e(op.get('trigger'))}{who}</span><span>started {_clock(op.get('created_at'))}</span>"
            f"<span>{'took' if op.get('finished_at') else 'running for'} {_num(took, '{:.2f}', ' s')}</span></p>"
            f"<p>{_e(op.get('message'))}</p>"
            + _table(("step", "state", "attempts", "duration", "timeline", "summary"), _step_rows(op, now), "steps"))


def _service(name: str, svc: Mapping[str, Any], op: Mapping[str, Any] | None, now: float) -> str:
    decision = svc.get("decision") or {}
    verdict = str(decision.get("verdict") or "unknown")
    extra = "".join(f" · {label} {_e(decision.get(key))}" for key, label in (("target", "target"),
                                                                                ("executor", "executor"))
                    if decision.get(key))
    parts = [f'<section class="service" id="service-{_e(name)}"><h2>service {_e(name)}</h2>',
             f'<p class=serving>served from <strong class=active-site>{_e(svc.get("active"))}</strong>'
             f'<span class=muted> · epoch {_e(svc.get("epoch"))}</span></p>',
             f"<p class=facts><span>active {_badge(svc.get('active'), 'active')}</span>"
             f"<span>epoch <b class=epoch>{_e(svc.get('epoch'))}</b></span>"
             f"<span>paused {_badge('yes' if svc.get('paused') else 'no', 'failover' if svc.get('paused') else '')}"
             f"</span><span>DNS {_e(svc.get('dns') or '—')}</span>"
             f"<span>replication lag {_num(svc.get('lag_s'), unit=' s')}</span>"
             f"<span>last move {_clock(svc.get('last_move_at'))}</span>{_brakes(svc)}</p>",
             f'<p class="decision v-{verdict if verdict in CLASSES else "unknown"}">{_badge(verdict)} '
             f"{_e(decision.get('message') or 'no decision yet')}"
             f" <span class=muted>(since {_age(now, decision.get('since'))}{extra})</span></p><div class=sites>"]
    for site, info in (svc.get("sites") or {}).items():
        parts.append(f"<div class=site><h3>site {_e(site)} {_badge(info.get('role'))} {_badge(info.get('health'))}"
                     f"</h3>{_signals(info.get('signals') or (), now)}</div>")
    parts.append("</div>")
    if svc.get("replication"):
        parts.append("<h3>replication</h3>" + _signals([svc["replication"]], now))
    shared = svc.get("shared_dependencies") or ()
    parts.append("<h3>shared dependencies</h3>" + (_signals(shared, now) if shared else "<p class=muted>none</p>"))
    parts.append(_vantage(svc.get("provider_vantage") or ()))
    if recon := svc.get("last_reconciliation"):
        parts.append(f"<h3>last reconciliation</h3><p>{_e(recon.get('sentence'))} "
                     f"<span class=muted>({_clock(recon.get('at'))})</span></p>")
    parts.append(_rto_and_drills(svc))
    parts.append(_operation(op, now) + "</section>")
    return "".join(parts)


def _vantage(rows: Iterable[Mapping[str, Any]]) -> str:
    """The provider's own health checks beside the engine's view of each site, and where they disagree."""
    body = [f"<tr><td>{_e(v.get('site'))}</td><td>{_e(v.get('provider'))} ({_e(v.get('counts_as'))})</td>"
            f"<td>{_badge(v.get('provider_health'))}</td><td>{_badge(v.get('engine_health'))}</td>"
            f"<td>{_e(v.get('disagreement') or 'agree')}</td></tr>" for v in rows]
    if not body:
        return ""
    return "<h3>provider's own health checks</h3>" + _table(("site", "provider", "provider sees", "engine sees",
                                                             "disagreement"), body, "vantage")


def _brakes(svc: Mapping[str, Any]) -> str:
    """Breaker, pause expiry, cool-down expiry, a self-fence, a DNS drift and a full slot, when they apply."""
    out = []
    breaker = svc.get("breaker") or {}
    if breaker.get("open"):
        out.append(f"<span class=breaker>breaker {_badge('OPEN', 'down')} since {_clock(breaker.get('since'))}: "
                   f"{_e(breaker.get('reason'))}</span>")
    elif breaker:
        out.append(f"<span class=breaker>breaker armed ({_e(breaker.get('auto_failovers_in_window'))}/"
                   f"{_e(breaker.get('limit'))} automatic moves in the window)</span>")
    if svc.get("paused_until"):
        out.append(f"<span>paused until {_clock(svc.get('paused_until'))}</span>")
    if svc.get("cooldown_until"):
        out.append(f"<span>cool-down until {_clock(svc.get('cooldown_until'))}</span>")
    fenced = svc.get("self_fenced")
    if fenced:
        out.append(f"<span class=fenced>{_badge('SELF-FENCED', 'down')} {_clock(fenced.get('at'))}: "
                   f"{_e(fenced.get('reason'))}</span>")
    drift = svc.get("dns_drift")
    if drift:
        badge = _badge("DNS DRIFT", "unknown" if drift.get("acknowledged") else "down")
        out.append(f"<span class=drift>{badge} since {_clock(drift.get('since'))}"
                   f"{' (acknowledged)' if drift.get('acknowledged') else ' (moves refused until acknowledged)'}: "
                   f"{_e(drift.get('summary'))}</span>")
    for slot in svc.get("replication_slots") or ():
        if slot.get("over"):
            out.append(f"<span class=slot>{_badge('SLOT', 'down')} {_e(slot.get('slot'))} on {_e(slot.get('site'))} "
                       f"retains {_e(slot.get('retained_bytes'))} bytes of WAL</span>")
    return "".join(out)


def _rto_and_drills(svc: Mapping[str, Any]) -> str:
    rto = svc.get("rto") or {}
    measured = rto.get("measured") or {}
    text = (f"worst case from the configuration {_num(rto.get('worst_case_s'), unit=' s')} "
            f"(SLO {_num(rto.get('rto_slo_s'), unit=' s')})")
    if measured:
        text += f"; measured {_num(measured.get('seconds'), unit=' s')} in {_e(measured.get('in'))}"
    drills = svc.get("drills") or {}
    rows = []
    for kind in ("shadow", "full"):
        entry = drills.get(kind) or {}
        last = entry.get("last") or {}
        state = str(last.get("state") or "none")
        look = {"passed": "up", "failed": "down"}.get(state, "")
        rows.append(f"<tr><td>{kind}</td><td>{_badge(state, look)}"
                    f" {_e(last.get('id') or '')}</td><td>{_clock(last.get('started_at'))}</td>"
                    f"<td>{_e(entry.get('timing') or 'not scheduled')} {_clock(entry.get('next_at'))}</td></tr>")
    running = f"<p>drill running: {_e(drills['running'])}</p>" if drills.get("running") else ""
    return (f"<h3>RTO</h3><p class=rto>{text}</p><h3>drills</h3>{running}<table class=drills><tr><th>kind</th>"
            f"<th>last</th><th>started</th><th>schedule</th></tr>{''.join(rows)}</table>")


def _peer_rows(peers: Iterable[Mapping[str, Any]]) -> Iterable[str]:
    for p in peers:
        heard = p.get("heard_age_s")
        seen = _badge(f"{heard:.1f}s ago", "up") if isinstance(heard, int | float) else _badge("never", "down")
        yield (f"<tr><td>{_e(p.get('id'))}</td><td>{_e(p.get('url'))}</td><td class=n>{seen}</td>"
               f"<td class=n>{_num(p.get('sent_age_s'), unit='s ago')}</td><td>{_e(p.get('last_error'))}</td></tr>")


def _event_rows(events: Iterable[Mapping[str, Any]], now: float) -> Iterable[str]:
    for ev in events:
        yield (f"<tr><td class=n>{_clock(ev.get('at'))}</td><td class=n>{_age(now, ev.get('at'))}</td>"
               f"<td>{_e(ev.get('service') or '')}</td><td>{_e(ev.get('kind'))}</td>"
               f"<td>{_e(ev.get('message'))}</td></tr>")


def render(status: Mapping[str, Any], events: Iterable[Mapping[str, Any]],
           operations: Mapping[str, Mapping[str, Any] | None]) -> str:
    """The page for a ``/v1/status`` dict, recent events (newest first) and each service's latest operation."""
    now = float(status.get("time") or 0.0)
    inst = status.get("instance") or {}
    quorum = status.get("quorum")
    quorum_text = "unknown" if quorum is None else "yes" if quorum else "no"
    services = status.get("services") or {}
    peers = status.get("peers") or ()
    head = (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content=2>"
            f"<meta name=viewport content='width=device-width'><title>{_e(inst.get('id'))} · failover-engine"
            f"</title><style>{CSS}</style></head><body>")
    loop = _badge("healthy", "up") if status.get("healthy") else _badge("stalled", "down")
    top = (f"<h1>failover-engine · {_e(inst.get('id'))}</h1><p class=facts><span>site {_e(inst.get('site'))}</span>"
           f"<span>role {_e(inst.get('role'))}</span><span>version {_e(inst.get('version'))}</span>"
           f"<span>loop {loop}</span><span>quorum <b class=quorum>{_badge(quorum_text)}</b></span>"
           f"<span class=muted>as of {_clock(now)}, refreshes every 2 s</span></p>")
    peer_html = (_table(("peer", "url", "heard", "sent", "last error"), _peer_rows(peers), "peers") if peers
                 else "<p class=muted>no peers: this instance is the only voter</p>")
    body = "".join(_service(name, svc, operations.get(name), now) for name, svc in services.items())
    recent = _table(("time (UTC)", "age", "service", "kind", "message"), _event_rows(events, now), "events")
    return (f"{head}{top}<section class=quorum><h2>quorum and peers</h2>{peer_html}</section>{body}"
            f"<section class=events><h2>recent events</h2>{recent}</section></body></html>")


def render_page(view: StatusView, journal: JournalReader) -> str:
    """The whole HTML page for the engine's current state."""
    status = view.status()
    events = [e.to_dict() for e in journal.events(limit=EVENTS)]
    operations: dict[str, Mapping[str, Any] | None] = {}
    for name in status["services"]:
        latest = journal.operations(service=name, limit=1)
        operations[name] = latest[0] if latest else None
    return render(status, events, operations)
