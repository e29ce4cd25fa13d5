"""Live narration: what the voters see, decide and do, printed as it happens, in time order.

Every ~100 ms the :class:`Narrator` reads each voter's ``/v1/events`` (new ones only), ``/v1/status``
(consecutive failure and success counts of the signals that are not up) and the engines'
``/v1/operations`` (each runbook step as it finishes, with its duration). Lines carry the time the
voter recorded, relative to the break (``t+2.6s``), and wait ~0.3 s in a small buffer so that lines
from three voters come out in time order. The same sentence from several voters is printed once
(a decision names its executor instead of "this instance"). What the story needs later (when each
voter declared gcp down, the operations) is kept in :attr:`facts`.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from engine.demo.voters import Api, Voter

STEP_EVENT = re.compile(r"^\w+ of \w[\w.-]*: (\w+ (done|skipped|attempt)|resuming)")
FINISHED = ("done", "halted", "stood_down", "aborted")


class Printer:
    """Lines stamped relative to ``t0`` (the break), reordered within ``delay`` seconds."""

    def __init__(self, delay: float = 0.3) -> None:
        self.t0: float | None = None
        self.delay = delay
        self._buffer: list[tuple[float, int, str]] = []
        self._count = 0

    def stamp(self, at: float | None) -> str:
        if self.t0 is None or at is None:
            return " " * 8
        return f"t+{max(0.0, at - self.t0):5.1f}s"

    def line(self, text: str, at: float | None = None) -> None:
        """Print now (after everything buffered): the demo's own actions and headings."""
        self.flush(everything=True)
        print(f"{self.stamp(at)}  {text}" if at is not None else text, flush=True)

    def event(self, at: float, text: str) -> None:
        self._count += 1
        self._buffer.append((at, self._count, text))

    def flush(self, *, everything: bool = False) -> None:
        limit = float("inf") if everything else time.time() - self.delay
        ready = sorted(item for item in self._buffer if item[0] <= limit)
        self._buffer = [item for item in self._buffer if item[0] > limit]
        for at, _n, text in ready:
            sys.stdout.write(f"{self.stamp(at)}  {text}\n")
        sys.stdout.flush()


@dataclass
class Facts:
    first_failure: float | None = None
    down_at: dict[str, float] = field(default_factory=dict)  # voter -> when it declared gcp down
    up_at: dict[str, float] = field(default_factory=dict)  # voter -> when gcp was up again for it
    decision: tuple[float, str, str] | None = None  # (at, voter, sentence) of the first failover decision
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> latest record
    status: dict[str, dict[str, Any]] = field(default_factory=dict)  # voter -> latest /v1/status

    def operation(self, kind: str) -> dict[str, Any] | None:
        """The latest operation of ``kind`` (failover, failback) seen since the break."""
        ops = [op for op in self.operations.values() if op.get("kind") == kind]
        return max(ops, key=lambda op: op["created_at"]) if ops else None


def _short(text: str, width: int = 170) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


class Narrator:
    def __init__(self, api: Api, voters: list[Voter], printer: Printer, threshold: int, service: str = "shop") -> None:
        self.api, self.voters, self.out = api, voters, printer
        self.threshold, self.service = threshold, service
        self.facts = Facts()
        self._last_event: dict[str, int] = {}
        self._counts: dict[tuple[str, str, str, str], int] = {}
        self._said: set[tuple[str, str]] = set()
        self._steps: set[tuple[Any, ...]] = set()
        self._since = 0.0

    async def prime(self) -> None:
        """Start from now: events and operations before this moment are not narrated."""
        self._since = time.time()
        for voter in self.voters:
            data = await self.api.get(voter, "/v1/events?limit=1")
            events = (data or {}).get("events") or []
            self._last_event[voter.id] = events[0]["id"] if events else 0

    async def run(self) -> None:
        failed = False
        while True:
            try:
                await self.poll()
            except Exception as exc:  # an answer of an unexpected shape: say so once, keep narrating
                if not failed:
                    self.out.line(f"(narration: could not read an answer: {type(exc).__name__}: {exc})")
                failed = True
            await asyncio.sleep(0.1)

    async def poll(self) -> None:
        engines = [v for v in self.voters if v.role == "engine"]
        await asyncio.gather(*(self._events(v) for v in self.voters), *(self._status(v) for v in self.voters),
                             *(self._operations(v) for v in engines))
        self.out.flush()

    # -- events --------------------------------------------------------------------------------------
    async def _events(self, voter: Voter) -> None:
        data = await self.api.get(voter, "/v1/events?limit=100")
        if not data:
            return
        last = self._last_event.get(voter.id, 0)
        fresh = sorted((e for e in data.get("events", []) if e["id"] > last), key=lambda e: e["id"])
        for event in fresh:
            self._last_event[voter.id] = event["id"]
            self._event(voter, event)

    def _once(self, kind: str, text: str) -> bool:
        key = (kind, text)
        if key in self._said:
            return False
        self._said.add(key)
        return True

    def _event(self, voter: Voter, event: dict[str, Any]) -> None:
        kind, message, at, data = event["kind"], event["message"], event["at"], event.get("data") or {}
        if kind == "signal":
            current = data.get("current")
            if current not in ("up", "down") or data.get("previous") == "unknown":
                return
            if "/gcp/" in str(data.get("signal")):
                (self.facts.down_at if current == "down" else self.facts.up_at).setdefault(voter.id, at)
            self.out.event(at, f"{voter.id:<12} {message}")
        elif kind == "decision":  # the engines' (the witness votes; its sentences only say what it would do)
            if data.get("verdict") == "failover" and data.get("executor") == voter.id and self.facts.decision is None:
                self.facts.decision = (at, voter.id, message)
            if voter.role == "engine":
                self.out.event(at, f"{voter.id:<12} decides: {_short(message)}")
        elif kind in ("runbook", "engine", "operator"):  # operator: the demo's own calls, which it prints itself
            if kind == "runbook" and not STEP_EVENT.match(message) and " started (" not in message \
                    and not message.endswith(" done") and self._once(kind, message):
                self.out.event(at, f"{voter.id:<12} {_short(message)}")
        elif self._once(kind, message):
            self.out.event(at, f"{voter.id:<12} {kind}: {_short(message)}")

    # -- signal counts ---------------------------------------------------------------------------------
    async def _status(self, voter: Voter) -> None:
        status = await self.api.get(voter, "/v1/status?signals=all")
        if not status:
            return
        self.facts.status[voter.id] = status
        service = status["services"].get(self.service) or {}
        for site, view in (service.get("sites") or {}).items():
            listed = set()
            for signal in view.get("signals") or []:
                listed.add(signal["name"])
                self._counted(voter, site, signal)
            for key in [k for k in self._counts if k[:2] == (voter.id, site) and k[2] not in listed]:
                del self._counts[key]  # up again: counting starts over

    def _counted(self, voter: Voter, site: str, signal: dict[str, Any]) -> None:
        last = signal.get("last") or {}
        at = float(last.get("at") or time.time()) + float(last.get("latency_ms") or 0) / 1000
        reason = last.get("reason") or ""
        for kind, count, limit, word in (
                ("failures", signal["consecutive_failures"], signal["failure_threshold"], "failed"),
                ("successes", signal["consecutive_successes"], signal["success_threshold"], "answered")):
            key = (voter.id, site, signal["name"], kind)
            if not count or count == self._counts.get(key) or at < self._since:
                continue
            self._counts[key] = count
            if kind == "failures" and site == "gcp" and (self.facts.first_failure is None
                                                         or at < self.facts.first_failure):
                self.facts.first_failure = at
            if count < limit and (kind == "failures" or signal["state"] == "down"):
                self.out.event(at, f"{voter.id:<12} {site}/{signal['name']} {word} {count}/{limit}"
                               + (f": {reason}" if kind == "failures" else ""))

    # -- runbooks --------------------------------------------------------------------------------------
    async def _operations(self, voter: Voter) -> None:
        data = await self.api.get(voter, f"/v1/operations?service={self.service}&limit=3")
        for op in (data or {}).get("operations", []):
            if op["created_at"] < self._since:
                continue
            known = op["id"] in self.facts.operations
            self.facts.operations[op["id"]] = {**op, "voter": voter.id}
            if not known:
                self.out.event(op["created_at"], f"{voter.id:<12} runbook {op['kind']} {op['source']} -> "
                               f"{op['target']} started (epoch {op['epoch_from']} -> {op['epoch_to']}, "
                               f"{op['trigger']}): operation {op['id']}")
            for name, step in op["steps"].items():
                state = str(step.get("state"))
                mark = (op["id"], name, step.get("attempts"), state)
                if state not in ("done", "skipped", "failed") or mark in self._steps:
                    continue
                self._steps.add(mark)
                what = step.get("summary") if state != "failed" else step.get("error")
                full = name in ("consistency", "verify_dns") or state == "failed"  # the proof: never cut
                self.out.event(step.get("finished_at") or time.time(),
                               f"{'':<12}   {name:<12} {state:<7} {float(step.get('duration_s') or 0):6.2f}s  "
                               f"{_short(what or '', 10_000 if full else 130)}")
            if op["state"] in FINISHED and (op["id"], "end") not in self._steps:
                self._steps.add((op["id"], "end"))
                took = (op.get("finished_at") or time.time()) - op["created_at"]
                self.out.event(op.get("finished_at") or time.time(),
                               f"{voter.id:<12} runbook {op['kind']} {op['state']} in {took:.1f}s"
                               + (f": {_short(op['message'])}" if op["state"] != "done" else ""))
