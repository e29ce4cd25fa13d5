"""What a runbook tells an operator while it runs: one JSON log line per step start, end or failure, naming
the engine, the operation, its service and epoch; and an OpenTelemetry span per run with a child per step."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from engine.core.clock import ManualClock
from engine.core.operations import Operation, OpState, Outcome, StepFailed
from engine.core.steps import StepSpec
from engine.runtime import logs
from engine.runtime.runner import RunbookRunner
from engine.runtime.tracing import RunbookTracer
from tests.support import require_part

ROOT = Path(__file__).resolve().parents[2]
SPECS = [StepSpec("fence", attempts=1, best_effort=True), StepSpec("promote", attempts=2),
         StepSpec("verify_dns", attempts=1)]
step_log = structlog.get_logger("test.step")


class MemoryStore:
    async def save_operation(self, op: Operation) -> None:
        return None

    async def save_step(self, op: Operation, name: str, record: dict[str, Any]) -> None:
        return None


async def no_sleep(_s: float) -> None:
    return None


def new_op() -> Operation:
    return Operation("op-7", "shop", "failover", "gcp", "azure", 3, 4, "auto", created_at=1000.0)


def steps(failures: dict[str, list[StepFailed]]) -> dict[str, Any]:
    async def step(op: Operation, name: str) -> Outcome:
        step_log.info("inside the step", detail=name)
        queue = failures.get(name)
        if queue:
            raise queue.pop(0)
        return Outcome(f"{name} ok")

    return {s.name: (lambda op, n=s.name: step(op, n)) for s in SPECS}


def runner(failures: dict[str, list[StepFailed]], tracer: RunbookTracer | None = None) -> RunbookRunner:
    return RunbookRunner(MemoryStore(), SPECS, steps(failures), clock=ManualClock(), sleep=no_sleep, tracer=tracer)


@pytest.fixture
def json_logs() -> Iterator[Any]:
    """structlog as the daemon configures it (JSON lines); yields a reader of the lines written."""
    out = io.StringIO()
    logs.configure("info", "json", file=out)

    def read() -> list[dict[str, Any]]:
        return [json.loads(line) for line in out.getvalue().splitlines()]

    try:
        yield read
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()


async def test_each_step_logs_its_start_and_end_with_operation_service_epoch_and_duration(json_logs: Any) -> None:
    """A clean run writes a start and a done line per step, each naming instance, site, operation, service,
    epoch and step, the done line with its duration."""
    logs.bind_instance("engine-azure", "azure", "engine")
    op = await asyncio.create_task(runner({}).run(new_op()))  # a task of its own, as the coordinator runs it
    assert op.state is OpState.DONE
    lines = [line for line in json_logs() if line["event"].startswith("runbook step")]
    assert [(line["event"], line["step"]) for line in lines] == [
        (f"runbook step {what}", step) for step in ("fence", "promote", "verify_dns") for what in ("started", "done")]
    for line in lines:
        assert {k: line[k] for k in ("instance", "site", "operation", "service", "epoch", "kind")} == {
            "instance": "engine-azure", "site": "azure", "operation": "op-7", "service": "shop", "epoch": 4,
            "kind": "failover"}
        assert line["level"] == "info" and "timestamp" in line
    done = [line for line in lines if line["event"] == "runbook step done"]
    assert all(isinstance(line["duration_s"], float) and line["duration_s"] >= 0 for line in done)
    assert [line["summary"] for line in done] == ["fence ok", "promote ok", "verify_dns ok"]


async def test_a_failed_attempt_and_a_halt_are_logged_with_the_error(json_logs: Any) -> None:
    """A failed attempt is a warning line with its error, duration and whether it is retried; a halt is an error."""
    logs.bind_instance("engine-azure", "azure", "engine")
    failures = {"promote": [StepFailed("connection refused")], "verify_dns": [StepFailed("ns2 still answers gcp")]}
    op = await runner(failures).run(new_op())
    assert op.state is OpState.HALTED
    lines = json_logs()
    failed = [line for line in lines if line["event"] == "runbook step failed"]
    assert [(f["step"], f["error"], f["retry"], f["attempt"]) for f in failed] == [
        ("promote", "connection refused", True, 1), ("verify_dns", "ns2 still answers gcp", False, 1)]
    assert all(f["level"] == "warning" and f["duration_s"] >= 0 and f["epoch"] == 4 for f in failed)
    (halted,) = [line for line in lines if line["event"] == "runbook halted"]
    assert halted["level"] == "error" and halted["step"] == "verify_dns" and halted["site"] == "azure"
    assert halted["message"] == "failover of shop stuck at verify_dns: ns2 still answers gcp"


async def test_a_steps_own_log_lines_carry_the_operation(json_logs: Any) -> None:
    """Whatever a step logs itself is tagged with the operation, service and epoch of the run; after the run the
    tags are gone again."""
    logs.bind_instance("engine-gcp", "gcp", "engine")
    await runner({}).run(new_op())
    step_log.info("after the run")
    lines = json_logs()
    inside = [line for line in lines if line["event"] == "inside the step"]
    assert len(inside) == 3
    assert all((i["operation"], i["service"], i["epoch"], i["instance"]) == ("op-7", "shop", 4, "engine-gcp")
               for i in inside)
    (after,) = [line for line in lines if line["event"] == "after the run"]
    assert "operation" not in after and after["instance"] == "engine-gcp"


# -- traces ----------------------------------------------------------------------------------------
@pytest.fixture
def spans() -> Iterator[Any]:
    """An SDK tracer provider of the test's own, exporting to memory (the global provider is left alone)."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        require_part("opentelemetry-sdk", False, "python3 -m pip install -e '.[otel]'")
        raise
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_a_run_is_one_span_with_a_child_per_step(spans: Any) -> None:
    """The run's span is the parent of one span per step, in order, with the operation's ids and outcomes."""
    from opentelemetry.trace import StatusCode

    provider, exporter = spans
    op = await runner({"promote": [StepFailed("connection refused")]}, RunbookTracer(provider)).run(new_op())
    assert op.state is OpState.DONE
    finished = exporter.get_finished_spans()
    assert [s.name for s in finished] == ["step fence", "step promote", "step verify_dns", "failover shop"]
    root = finished[-1]
    assert root.parent is None
    assert {s.parent.span_id for s in finished[:-1]} == {root.context.span_id}
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}
    assert dict(root.attributes) == {
        "failover.operation.id": "op-7", "failover.service": "shop", "failover.kind": "failover",
        "failover.trigger": "auto", "failover.source": "gcp", "failover.target": "azure",
        "failover.epoch_from": 3, "failover.epoch_to": 4, "failover.operation.state": "done"}
    promote = finished[1]
    assert promote.attributes["failover.step.attempts"] == 2
    assert promote.attributes["failover.step.state"] == "done"
    assert promote.attributes["failover.step.summary"] == "promote ok"
    assert "failover.step.error" not in promote.attributes  # the last attempt succeeded
    assert promote.status.status_code is StatusCode.UNSET


async def test_a_halted_run_marks_its_failed_step_and_itself_as_errors(spans: Any) -> None:
    """The step that failed for good and the run's span carry an error status with the reason."""
    from opentelemetry.trace import StatusCode

    provider, exporter = spans
    failures = {"verify_dns": [StepFailed("ns2 still answers gcp")]}
    await runner(failures, RunbookTracer(provider)).run(new_op())
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    assert by_name["step verify_dns"].status.status_code is StatusCode.ERROR
    assert by_name["step verify_dns"].status.description == "ns2 still answers gcp"
    assert by_name["failover shop"].status.status_code is StatusCode.ERROR
    assert by_name["failover shop"].attributes["failover.operation.state"] == "halted"
    assert by_name["step fence"].status.status_code is StatusCode.UNSET


def test_without_the_otel_extra_tracing_is_a_no_op() -> None:
    """With OpenTelemetry not importable the runner runs exactly as before and nothing is traced."""
    script = textwrap.dedent("""
        import asyncio, sys
        sys.modules["opentelemetry"] = None  # as if the otel extra were not installed: import fails
        from engine.core.operations import Operation, Outcome
        from engine.core.steps import StepSpec
        from engine.runtime.runner import RunbookRunner
        from engine.runtime.tracing import install_from_env

        class Store:
            async def save_operation(self, op): pass
            async def save_step(self, op, name, record): pass

        async def ok(op):
            return Outcome("ok")

        op = Operation("op-1", "shop", "failover", "gcp", "azure", 1, 2, "manual")
        done = asyncio.run(RunbookRunner(Store(), [StepSpec("promote")], {"promote": ok}).run(op))
        provider = install_from_env("e1", "gcp", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
        print("result:", done.state, provider)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "result: done None"
