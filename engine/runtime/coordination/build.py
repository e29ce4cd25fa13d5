"""Building the etcd backend from the ``coordination`` config: endpoints, timeouts, TLS and credentials.

The daemon (the composition root) calls :func:`etcd_from_config` when ``coordination.type`` is
``etcd``; the peer backend is chosen otherwise.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

from engine.config.coordination import CoordinationConfig
from engine.runtime.coordination.etcd import EtcdCoordination
from engine.runtime.coordination.etcd_client import Credentials, EtcdClient


def ssl_context(config: CoordinationConfig) -> ssl.SSLContext | None:
    """Verification against ``tls.ca_file`` (or the system CAs), with our certificate when one is given."""
    if config.tls is None:
        return None
    context = ssl.create_default_context(cafile=config.tls.ca_file)
    if config.tls.cert_file is not None and config.tls.key_file is not None:
        context.load_cert_chain(config.tls.cert_file, config.tls.key_file)
    return context


def etcd_from_config(config: CoordinationConfig, *,
                     monotonic: Callable[[], float] = time.monotonic) -> EtcdCoordination:
    if config.type != "etcd":
        raise ValueError("coordination.type is not etcd")
    credentials = None
    if config.auth is not None:
        credentials = Credentials(config.auth.user, config.auth.password.get_secret_value())
    client = EtcdClient(config.endpoints, request_timeout=config.request_timeout, deadline=config.deadline,
                        watch_idle=config.watch_idle, credentials=credentials, ssl_context=ssl_context(config))
    return EtcdCoordination(client, config.prefix, vote_ttl=config.vote_ttl, monotonic=monotonic)
