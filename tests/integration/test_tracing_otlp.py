"""Runbook traces leave the engine over OTLP/HTTP: an engine process with OTEL_EXPORTER_OTLP_ENDPOINT set exports
its operation and step spans, named after the instance and site, to a local OTLP receiver (aiohttp, protobuf)."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support import free_port, require_part

ROOT = Path(__file__).resolve().parents[2]
ENGINE_RUN = textwrap.dedent("""
    import asyncio, sys
    from engine.core.operations import Operation, Outcome, StepFailed
    from engine.core.steps import StepSpec
    from engine.runtime.runner import RunbookRunner
    from engine.runtime.tracing import install_from_env

    provider = install_from_env("engine-azure", "azure")
    assert provider is not None, "no tracer provider installed"

    class Store:
        async def save_operation(self, op): pass
        async def save_step(self, op, name, record): pass

    async def ok(op):
        return Outcome("ok")

    async def refused(op):
        raise StepFailed("ns2 still answers gcp", retry=False)

    specs = [StepSpec("promote"), StepSpec("verify_dns")]
    op = Operation("op-9", "shop", "failover", "gcp", "azure", 4, 5, "auto")
    done = asyncio.run(RunbookRunner(Store(), specs, {"promote": ok, "verify_dns": refused}).run(op))
    provider.shutdown()  # flushes the batch to the collector
    print("state", done.state)
""")


def otlp_protos() -> Any:
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    except ImportError:
        require_part("opentelemetry-exporter-otlp-proto-http", False, "python3 -m pip install -e '.[otel]'")
        raise
    return trace_service_pb2


async def test_an_engine_exports_its_runbook_spans_over_otlp_http() -> None:
    """The spans of a halted failover arrive at the collector: the run and its two steps, the failed step and the
    run marked as errors, the resource naming the engine's instance and site."""
    protos = otlp_protos()
    received: list[bytes] = []

    async def collect(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        received.append(await request.read())
        return web.Response(body=protos.ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and not k.lower().endswith("_proxy")}
        env.update(PYTHONPATH=str(ROOT), OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", ENGINE_RUN, cwd=ROOT, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert out.decode().splitlines()[-1] == "state halted"
    finally:
        await runner.cleanup()

    spans, resources = [], []
    for body in received:
        request = protos.ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resources.append({a.key: a.value.string_value for a in resource_spans.resource.attributes})
            spans += [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert sorted(s.name for s in spans) == ["failover shop", "step promote", "step verify_dns"]
    assert all(r["service.name"] == "failover-engine" and r["service.instance.id"] == "engine-azure"
               and r["failover.site"] == "azure" for r in resources)
    by_name = {s.name: s for s in spans}
    root = by_name["failover shop"]
    assert by_name["step promote"].parent_span_id == root.span_id == by_name["step verify_dns"].parent_span_id
    status_error = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR
    assert by_name["step verify_dns"].status.code == status_error
    assert by_name["step verify_dns"].status.message == "ns2 still answers gcp"
    assert root.status.code == status_error
    attributes = {a.key: a.value for a in root.attributes}
    assert attributes["failover.operation.id"].string_value == "op-9"
    assert attributes["failover.epoch_to"].int_value == 5
