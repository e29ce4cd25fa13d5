"""The runbook runner: ordered, journaled, idempotent steps that carry out a move (plans: engine.core.steps).

Theory of operation
-------------------
An :class:`Operation` names a move of one service from one site to another at a given epoch.
The :class:`RunbookRunner` executes its steps in order. Before a step it journals "started" (with
the attempt number); after it, "done" with the result and timing, or "failed" with the error.
Journal writes are durable before the next action starts, so after ``kill -9`` the journal shows
exactly which step may have been interrupted, and :meth:`RunbookRunner.resume` runs it again.
That is safe because every step is idempotent: it first reads the world (DNS records and epoch,
database state) and does only what is still missing. The DNS shift in particular is a
compare-and-set on the epoch: re-running it after a crash finds the new records in place and does
not change them again.

A step has a timeout and bounded retries with backoff. A *best-effort* step (fencing an old
primary that may be gone) that fails is recorded as skipped and the runbook continues. Any other
step that fails for good halts the operation with a sentence naming the step and the reason
("failover of api stuck at verify_dns: ns2 still answers gcp after 120s"). A step may also end
the operation early: ``Outcome.stand_down`` when another executor won the epoch race. Steps named in
``rerun_on_resume`` (the precheck) run again whenever a run resumes, so a runbook interrupted for
hours re-reads the world before it touches a database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog

from engine.core.clock import Clock, SystemClock
from engine.core.operations import Operation, OpEvent, OpState, Outcome, StepFailed, StepState
from engine.core.steps import StepSpec
from engine.runtime.tracing import RunbookTracer

__all__ = ["OperationStore", "RunbookRunner", "StepFn"]

log = structlog.get_logger("engine.runbook")

StepFn = Callable[[Operation], Awaitable[Outcome]]


class OperationStore(Protocol):
    """Where operations live: the journal implements this (``engine.runtime.journal.Journal``)."""

    async def save_operation(self, op: Operation) -> None: ...

    async def save_step(self, op: Operation, name: str, record: dict[str, Any]) -> None: ...


def _step_log(op: Operation, step: str) -> Any:
    """The logger of one step: every line names the operation, its service, kind and epoch, and the step."""
    return log.bind(operation=op.id, service=op.service, kind=op.kind, epoch=op.epoch_to, step=step)


class RunbookRunner:
    """Runs an operation's steps with journaling, timeouts, retries, and resume after a crash."""

    def __init__(self, store: OperationStore, specs: Sequence[StepSpec], steps: Mapping[str, StepFn], *,
                 rerun_on_resume: frozenset[str] = frozenset(),
                 clock: Clock | None = None,
                 on_event: Callable[[Operation, str, str], Awaitable[None]] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 tracer: RunbookTracer | None = None) -> None:
        missing = [s.name for s in specs if s.name not in steps]
        if missing:
            raise ValueError(f"no step function for {missing}")
        self.store = store
        self.rerun_on_resume = rerun_on_resume
        self.specs = list(specs)
        self.steps = steps
        self.clock = clock or SystemClock()
        self.on_event = on_event
        self.sleep = sleep
        self.tracer = tracer or RunbookTracer()

    async def _event(self, op: Operation, kind: str, message: str) -> None:
        if self.on_event is not None:
            await self.on_event(op, kind, message)

    async def run(self, op: Operation) -> Operation:
        """Run (or resume) ``op`` until it is done, halted or stood down.

        Every log line of the run (the steps' own too) carries the operation id, service and epoch; the run is
        one trace span with a child per step (:mod:`engine.runtime.tracing`)."""
        if op.state is not OpState.RUNNING:
            return op
        with structlog.contextvars.bound_contextvars(operation=op.id, service=op.service, epoch=op.epoch_to), \
                self.tracer.operation(op):
            return await self._run_steps(op)

    async def _run_steps(self, op: Operation) -> Operation:
        resuming = any(rec.get("state") for rec in op.steps.values())
        for spec in self.specs:
            record = op.steps.get(spec.name, {})
            again = resuming and spec.name in self.rerun_on_resume and record.get("state") == StepState.DONE
            if record.get("state") in (StepState.DONE, StepState.SKIPPED) and not again:
                continue
            if record.get("state") == StepState.STARTED:
                log.info("resuming interrupted step", operation=op.id, step=spec.name)
                await self._event(op, "runbook", f"{op.kind} of {op.service}: resuming {spec.name} "
                                  "after an interruption")
            with self.tracer.step(op, spec.name):
                finished = await self._run_step(op, spec)
            if not finished:
                break
        else:
            op.advance(OpEvent.FINISH)
            op.finished_at = self.clock.now()
            op.message = op.message or f"{op.kind} of {op.service} to {op.target} done"
            await self.store.save_operation(op)
            await self._event(op, "runbook", op.message)
        return op

    async def _start_attempt(self, op: Operation, spec: StepSpec, attempt: int) -> dict[str, Any]:
        """Journal (durably) and log that an attempt of a step starts; return its record."""
        record: dict[str, Any] = {"state": StepState.STARTED, "started_at": self.clock.now(), "attempts": attempt,
                                  "finished_at": None, "summary": "", "error": None, "data": {}}
        op.steps[spec.name] = record
        await self.store.save_step(op, spec.name, record)
        _step_log(op, spec.name).info("runbook step started", attempt=attempt, timeout_s=spec.timeout)
        return record

    async def _run_step(self, op: Operation, spec: StepSpec) -> bool:
        """Run one step with retries; return False when the operation must stop here."""
        previous = op.steps.get(spec.name, {})
        attempt = int(previous.get("attempts", 0))
        error = ""
        for _ in range(spec.attempts):
            attempt += 1
            record = await self._start_attempt(op, spec, attempt)
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(spec.timeout):
                    outcome = await self.steps[spec.name](op)
            except TimeoutError:
                error, retry = f"timed out after {spec.timeout:g}s", True
            except StepFailed as exc:
                error, retry = exc.reason, exc.retry
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in a step: record it, do not retry blindly
                log.exception("runbook step raised", operation=op.id, step=spec.name)
                error, retry = f"{type(exc).__name__}: {exc}", False
            else:
                record.update(state=StepState.SKIPPED if outcome.skipped else StepState.DONE,
                              finished_at=self.clock.now(), duration_s=round(time.monotonic() - t0, 4),
                              summary=outcome.summary, data=dict(outcome.data))
                await self.store.save_step(op, spec.name, record)
                _step_log(op, spec.name).info(f"runbook step {record['state']}", attempt=attempt,
                                              duration_s=record["duration_s"], summary=outcome.summary)
                await self._event(op, "runbook", f"{op.kind} of {op.service}: {spec.name} "
                                  f"{'skipped' if outcome.skipped else 'done'}: {outcome.summary}")
                if outcome.stand_down:
                    op.advance(OpEvent.STAND_DOWN)
                    op.finished_at = self.clock.now()
                    op.message = f"{op.kind} of {op.service} stood down at {spec.name}: {outcome.summary}"
                    await self.store.save_operation(op)
                    await self._event(op, "runbook", op.message)
                    return False
                return True
            record.update(state=StepState.FAILED, finished_at=self.clock.now(),
                          duration_s=round(time.monotonic() - t0, 4), error=error)
            await self.store.save_step(op, spec.name, record)
            _step_log(op, spec.name).warning("runbook step failed", attempt=attempt, duration_s=record["duration_s"],
                                             error=error, retry=retry and attempt < spec.attempts)
            await self._event(op, "runbook", f"{op.kind} of {op.service}: {spec.name} attempt {attempt} "
                              f"failed: {error}")
            if not retry:
                break
            await self.sleep(spec.backoff * (2 ** (attempt - 1)))
        if spec.best_effort:
            record = op.steps[spec.name]
            record.update(state=StepState.SKIPPED, summary=f"best effort, skipped: {error}")
            await self.store.save_step(op, spec.name, record)
            await self._event(op, "runbook", f"{op.kind} of {op.service}: {spec.name} skipped (best effort): "
                              f"{error}")
            return True
        op.advance(OpEvent.HALT)
        op.message = f"{op.kind} of {op.service} stuck at {spec.name}: {error}"
        await self.store.save_operation(op)
        _step_log(op, spec.name).error("runbook halted", message=op.message)
        await self._event(op, "alert", op.message)
        return False
