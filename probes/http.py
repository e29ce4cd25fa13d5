"""HTTP probe: status, body and latency checks, on a fresh connection per check by default.

Memory is bounded: at most ``max_body_bytes`` of a body is read, a larger body is a failure.
Reasons are human (``status 503 not in [200]``, ``body lacks "ok"``, ``connect refused``).
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Any

import aiohttp

from engine.config.probes import HttpProbeConfig, JsonCondition
from engine.core.clock import Clock
from probes.base import BaseProbe, describe_exception

# The probe's own deadline (BaseProbe.observe) bounds every check; a second timer per request in
# aiohttp would only cost CPU at 1,000 checks a second.
_NO_CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None)


def new_session(*, keep_alive: bool, limit: int = 0) -> aiohttp.ClientSession:
    """A client session for probes: ``keep_alive=False`` closes every connection after its check."""
    connector = aiohttp.TCPConnector(force_close=not keep_alive, limit=limit, ttl_dns_cache=10,
                                     enable_cleanup_closed=False)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False,
                                 skip_auto_headers=("User-Agent",),
                                 headers={"User-Agent": "failover-engine-probe"})


class HttpProbe(BaseProbe):
    """Checks one URL. Give it a shared ``session`` to pool sockets and timers across probes."""

    def __init__(self, config: HttpProbeConfig, *, clock: Clock | None = None,
                 session: aiohttp.ClientSession | None = None) -> None:
        super().__init__(timeout=config.timeout, clock=clock)
        self.config = config
        self._session = session
        self._owns_session = session is None
        self._ssl = _ssl_for(config)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_session(keep_alive=not self.config.new_connection)
            self._owns_session = True
        return self._session

    async def _check(self) -> tuple[bool, str, float | None, dict[str, object]]:
        cfg = self.config
        started = time.perf_counter()
        async with self._get_session().request(
            cfg.method, cfg.url, headers=cfg.headers, data=cfg.body, ssl=self._ssl,
            allow_redirects=False, timeout=_NO_CLIENT_TIMEOUT,
        ) as response:
            status = response.status
            body = b""
            needs_body = cfg.body_contains is not None or cfg.json_condition is not None
            if needs_body or response.content_length is None or response.content_length <= cfg.max_body_bytes:
                body = await response.content.read(cfg.max_body_bytes + 1)
            too_big = len(body) > cfg.max_body_bytes or (
                response.content_length is not None and response.content_length > cfg.max_body_bytes)
        latency = time.perf_counter() - started
        details: dict[str, object] = {"status": status}
        if status not in cfg.expect_status:
            return False, f"status {status} not in {cfg.expect_status}", None, details
        if too_big and needs_body:
            return False, f"body larger than {cfg.max_body_bytes} bytes", None, details
        if cfg.body_contains is not None and cfg.body_contains.encode() not in body:
            return False, f'body lacks "{cfg.body_contains}"', None, details
        if cfg.json_condition is not None:
            failure = check_json(body, cfg.json_condition)
            if failure:
                return False, failure, None, details
        if cfg.max_latency is not None and latency > cfg.max_latency:
            return False, f"slow: {latency * 1000:.0f} ms > {cfg.max_latency * 1000:.0f} ms", None, details
        return True, f"{status} in {latency * 1000:.0f} ms", None, details

    def describe_error(self, exc: BaseException) -> str:
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return "TLS certificate rejected"
        if isinstance(exc, aiohttp.ClientSSLError):
            return "TLS handshake failed"
        if isinstance(exc, aiohttp.ClientConnectorError):
            return describe_exception(exc.os_error) if exc.os_error else "connect failed"
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return "server closed the connection"
        if isinstance(exc, aiohttp.ClientPayloadError):
            return "truncated or malformed body"
        if isinstance(exc, aiohttp.ClientResponseError):
            return f"malformed response: {exc.message[:120]}"
        if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
            return f"timeout after {self.timeout:g}s"
        if isinstance(exc, aiohttp.ClientOSError):
            return describe_exception(exc)
        return describe_exception(exc)

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()


def _ssl_for(config: HttpProbeConfig) -> ssl.SSLContext | bool:
    if not config.url.startswith("https://"):
        return True
    if not config.tls_verify:
        return False
    if config.ca_file:
        return ssl.create_default_context(cafile=config.ca_file)
    return True


_MISSING = object()


def _lookup(document: Any, path: str) -> Any:
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def check_json(body: bytes, cond: JsonCondition) -> str | None:
    """Why the body fails the condition, or None when it passes."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return "body is not JSON"
    value = _lookup(document, cond.path)
    if value is _MISSING:
        return f"JSON lacks {cond.path}"
    if cond.equals is not None and value != cond.equals:
        return f"{cond.path} is {value!r}, expected {cond.equals!r}"
    if cond.not_equals is not None and value == cond.not_equals:
        return f"{cond.path} is {value!r}"
    for bound, op in ((cond.less_than, "<"), (cond.greater_than, ">")):
        if bound is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{cond.path} is {value!r}, not a number"
        if (op == "<" and not value < bound) or (op == ">" and not value > bound):
            return f"{cond.path} is {value:g}, expected {op} {bound:g}"
    return None
