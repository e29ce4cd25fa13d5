"""From a probe config to a probe: the only place that maps ``type:`` to a module.

Cloud probes are imported lazily so the core runs without their SDKs installed.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from engine.config.probes import HttpProbeConfig, TcpProbeConfig
from engine.core.clock import Clock
from probes.base import Probe


def build_probe(config: Any, *, clock: Clock | None = None,
                http_session: aiohttp.ClientSession | None = None) -> Probe:
    """Build the probe for ``config``; HTTP probes may share a pooled ``http_session``."""
    kind = config.type
    if kind == "http":
        from probes.http import HttpProbe

        assert isinstance(config, HttpProbeConfig)
        return HttpProbe(config, clock=clock, session=http_session)
    if kind == "tcp":
        from probes.tcp import TcpProbe

        assert isinstance(config, TcpProbeConfig)
        return TcpProbe(config, clock=clock)
    if kind == "gcp_monitoring":
        from probes.gcp_monitoring import GcpMonitoringProbe

        probe: Probe = GcpMonitoringProbe(config, clock=clock)
        return probe
    if kind == "azure_metrics":
        from probes.azure_monitor import AzureMetricsProbe

        metrics_probe: Probe = AzureMetricsProbe(config, clock=clock)
        return metrics_probe
    if kind == "azure_logs":
        from probes.azure_monitor import AzureLogsProbe

        logs_probe: Probe = AzureLogsProbe(config, clock=clock)
        return logs_probe
    if kind == "provider_health":
        from probes.provider_health import ProviderHealthProbe

        provider_probe: Probe = ProviderHealthProbe(config, clock=clock)
        return provider_probe
    raise ValueError(f"no probe for type {kind!r}")
