"""OpenTelemetry traces of runbooks: one span per run of an operation, one child span per step.

Optional: the ``otel`` extra brings ``opentelemetry-api``, ``-sdk`` and the OTLP/HTTP exporter. Without it
every call here is a no-op and nothing is imported. With the API but no SDK provider installed, the API's
own no-op tracer answers. :func:`install_from_env` installs an SDK provider that exports over OTLP/HTTP
when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; the
exporter reads the other ``OTEL_EXPORTER_OTLP_*`` variables (headers, timeout, certificate) itself.

A run is one span (``failover shop``), so a runbook resumed after a restart shows as a second span of the
same operation id; every step that ran in it is a child (``step promote``) with its attempts, its state
and, on failure, its error as the span status. Attributes never carry secrets: only the names, ids and
sentences the journal already holds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engine import __version__

TRACER_NAME = "failover-engine"
_installed: list[Any] = []  # the provider install_from_env set, at most one per process


def _operation_attributes(op: Any) -> dict[str, str | int]:
    return {"failover.operation.id": op.id, "failover.service": op.service, "failover.kind": op.kind,
            "failover.trigger": op.trigger, "failover.source": op.source, "failover.target": op.target,
            "failover.epoch_from": op.epoch_from, "failover.epoch_to": op.epoch_to}


class RunbookTracer:
    """Spans for a runbook runner. ``provider``: an SDK ``TracerProvider`` (tests); default the global one."""

    def __init__(self, provider: Any | None = None) -> None:
        self._provider = provider
        self._tracer: Any = None
        self._absent = False

    def _get(self) -> Any | None:
        if self._tracer is None and not self._absent:
            try:
                from opentelemetry import trace
            except ImportError:  # the otel extra is not installed: tracing is off
                self._absent = True
                return None
            self._tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=self._provider)
        return self._tracer

    @contextmanager
    def operation(self, op: Any) -> Iterator[None]:
        """A span around one run of ``op``; its final state (and halt message) is set when the run ends."""
        tracer = self._get()
        if tracer is None:
            yield
            return
        with tracer.start_as_current_span(f"{op.kind} {op.service}", attributes=_operation_attributes(op)) as span:
            yield
            span.set_attribute("failover.operation.state", str(op.state))
            if str(op.state) == "halted":
                _error(span, op.message)

    @contextmanager
    def step(self, op: Any, name: str) -> Iterator[None]:
        """A child span around one step (all its attempts); the step's journal record gives its outcome."""
        tracer = self._get()
        if tracer is None:
            yield
            return
        with tracer.start_as_current_span(f"step {name}", attributes={
                "failover.operation.id": op.id, "failover.service": op.service, "failover.step": name}) as span:
            yield
            record = op.steps.get(name) or {}
            span.set_attribute("failover.step.state", str(record.get("state")))
            span.set_attribute("failover.step.attempts", int(record.get("attempts") or 0))
            if record.get("summary"):
                span.set_attribute("failover.step.summary", str(record["summary"]))
            if record.get("error"):
                span.set_attribute("failover.step.error", str(record["error"]))
                if str(record.get("state")) == "failed":
                    _error(span, str(record["error"]))


def _error(span: Any, description: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, description))


def install_from_env(instance: str, site: str, env: dict[str, str] | None = None) -> Any | None:
    """Install (once per process) an SDK tracer provider exporting to OTLP/HTTP when an OTLP endpoint is
    configured in the environment and the ``otel`` extra is installed. Returns the provider, or ``None``."""
    values = os.environ if env is None else env
    endpoint = values.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint and values.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = values["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"  # as the OTLP spec says
    if not endpoint:
        return None
    if _installed:
        return _installed[0]
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return None
    resource = Resource.create({"service.name": TRACER_NAME, "service.version": __version__,
                                "service.instance.id": instance, "failover.site": site})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _installed.append(provider)
    return provider
