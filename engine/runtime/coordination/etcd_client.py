"""A small etcd v3 client over etcd's JSON gateway (``/v3/...``, etcd 3.4+) with aiohttp.

Why hand-written rather than a library: the maintained asyncio client, aetcd (1.0.0), speaks gRPC
(grpcio and protobuf as new core dependencies) to ONE host:port with no failover between cluster
members; the engine needs several endpoints, a deadline on every await and errors as values, and it
uses seven gateway calls (range, put, txn, lease grant/keepalive/revoke, watch) that aiohttp, already
a core dependency, speaks in a few lines each. Keys and values are bytes (base64 on the wire);
64-bit numbers travel as JSON strings.

Endpoints: each request goes to the endpoint that last answered; when it is unreachable, times out
or reports no leader, the next one is tried, until the request's overall deadline. A request that
failed that way may still have been applied (a transaction whose answer was lost): callers make
their writes safe to repeat (the coordination backend's compare-and-set carries a unique token).

Errors (values, never raised)::

    EtcdError(kind)
     ├── "unreachable"  no endpoint answered within the deadline, or none had a leader
     ├── "rejected"     the request was refused: auth, permission, invalid argument
     ├── "not_found"    e.g. the lease is gone
     ├── "compacted"    a watch asked for history the cluster no longer keeps
     └── "malformed"    an answer that does not decode
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import aiohttp

_T = TypeVar("_T")
ErrorKind = Literal["unreachable", "rejected", "not_found", "compacted", "malformed"]
# gRPC status codes etcd reports in the gateway's {"code": N}: which ones mean "try another member".
_FAILOVER_CODES = {1, 2, 4, 10, 13, 14}  # cancelled, unknown, deadline, aborted, internal, unavailable
_NOT_FOUND, _UNAUTHENTICATED, _OUT_OF_RANGE = 5, 16, 11
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None)


@dataclass(frozen=True, slots=True)
class EtcdError:
    kind: ErrorKind
    message: str
    endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    revision: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    ranges: tuple[RangeResult, ...]  # the answers of the range operations of the branch taken, in order


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class WatchBatch:
    events: tuple[WatchEvent, ...]
    revision: int


@dataclass(frozen=True, slots=True)
class Credentials:
    """etcd's user and password (``--auth``); the password never shows in a repr."""

    user: str
    password: str = field(repr=False)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    return trimmed[:-1] + bytes([trimmed[-1] + 1]) if trimmed else b"\x00"


# --- request pieces of a transaction -----------------------------------------------------------------

def compare_mod(key: bytes, revision: int) -> dict[str, Any]:
    """Holds while ``key`` was last modified at ``revision`` (0: the key does not exist)."""
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def compare_absent(key: bytes) -> dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def compare_lease(key: bytes, lease_id: int) -> dict[str, Any]:
    """Holds while ``key`` exists attached to lease ``lease_id``."""
    return {"key": b64(key), "target": "LEASE", "result": "EQUAL", "lease": str(lease_id)}


def put_op(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def range_op(key: bytes, range_end: bytes | None = None) -> dict[str, Any]:
    body = {"key": b64(key)}
    if range_end is not None:
        body["range_end"] = b64(range_end)
    return {"request_range": body}


def delete_op(key: bytes) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key)}}


# --- decoding ---------------------------------------------------------------------------------------

def _int(value: Any) -> int:
    return int(value) if value not in (None, "") else 0


def _kv(raw: Mapping[str, Any]) -> KeyValue:
    return KeyValue(base64.b64decode(raw.get("key", "")), base64.b64decode(raw.get("value", "")),
                    _int(raw.get("create_revision")), _int(raw.get("mod_revision")), _int(raw.get("version")),
                    _int(raw.get("lease")))


def _range(raw: Mapping[str, Any]) -> RangeResult:
    return RangeResult(tuple(_kv(kv) for kv in raw.get("kvs", ())), _int(raw.get("header", {}).get("revision")))


class _Failover(Exception):
    """This endpoint cannot serve the request now; another may (internal to :class:`EtcdClient`)."""


class EtcdClient:
    """Talks to one etcd cluster through any of its ``endpoints`` (``http(s)://host:port``)."""

    def __init__(self, endpoints: Sequence[str], *, request_timeout: float = 2.0, deadline: float = 5.0,
                 watch_idle: float = 10.0, credentials: Credentials | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint")
        self.endpoints = tuple(e.rstrip("/") for e in endpoints)
        self.request_timeout = request_timeout  # one attempt at one endpoint
        self.deadline = deadline  # one request, all attempts together
        self.watch_idle = watch_idle  # a watch stream silent this long is reopened elsewhere
        self._credentials = credentials
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._tokens: dict[str, str] = {}  # per endpoint: etcd's simple tokens are per member
        self._current = 0
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=32, ssl=self._ssl)
            self._session = aiohttp.ClientSession(connector=connector, timeout=_NO_TIMEOUT, trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- one request, with failover between endpoints ---------------------------------------------

    async def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any] | EtcdError:
        """POST ``body`` to ``/v3/<path>`` on the first endpoint that serves it, within the deadline."""
        start = time.monotonic()
        last = EtcdError("unreachable", "no endpoint tried")
        for attempt in range(max(len(self.endpoints) * 2, 2)):
            left = self.deadline - (time.monotonic() - start)
            if left <= 0:
                break
            index = (self._current + attempt) % len(self.endpoints)
            endpoint = self.endpoints[index]
            try:
                async with asyncio.timeout(min(self.request_timeout, left)):
                    answer = await self._attempt(endpoint, path, body)
            except (_Failover, TimeoutError, aiohttp.ClientError, OSError) as exc:
                last = EtcdError("unreachable", _describe(exc), endpoint)
                continue
            if isinstance(answer, dict):
                self._current = index
            return answer
        return EtcdError("unreachable", f"no etcd endpoint answered within {self.deadline:g}s ({last.message})",
                         last.endpoint)

    async def _attempt(self, endpoint: str, path: str, body: Mapping[str, Any]) -> dict[str, Any] | EtcdError:
        for _ in range(2):  # a second time after re-authenticating once
            headers = await self._auth_headers(endpoint)
            if isinstance(headers, EtcdError):
                return headers
            async with self._http().post(f"{endpoint}/v3/{path}", json=body, headers=headers) as response:
                answer = await _json(response)
            if not isinstance(answer, dict):
                raise _Failover(f"HTTP {response.status}: not JSON")
            code = answer.get("code")
            if response.status == 200 and not code:
                return answer
            message = str(answer.get("message") or answer.get("error") or f"HTTP {response.status}")
            if code == _UNAUTHENTICATED and self._credentials is not None and endpoint in self._tokens:
                del self._tokens[endpoint]
                continue
            return _classify(code, message, endpoint, response.status)
        return EtcdError("rejected", "authentication failed twice", endpoint)

    async def _auth_headers(self, endpoint: str) -> dict[str, str] | EtcdError:
        if self._credentials is None:
            return {}
        token = self._tokens.get(endpoint)
        if token is None:
            body = {"name": self._credentials.user, "password": self._credentials.password}
            async with self._http().post(f"{endpoint}/v3/auth/authenticate", json=body) as response:
                answer = await _json(response)
            if not isinstance(answer, dict) or "token" not in answer:
                message = answer.get("message") if isinstance(answer, dict) else None
                return _classify(answer.get("code") if isinstance(answer, dict) else None,
                                 f"authentication: {message or 'HTTP ' + str(response.status)}", endpoint,
                                 response.status)
            token = self._tokens[endpoint] = str(answer["token"])
        return {"Authorization": token}

    # --- the calls ----------------------------------------------------------------------------------

    async def range(self, key: bytes, range_end: bytes | None = None) -> RangeResult | EtcdError:
        """Linearizable read of ``key`` (or ``[key, range_end)``)."""
        body = {"key": b64(key)} | ({} if range_end is None else {"range_end": b64(range_end)})
        answer = await self.call("kv/range", body)
        return answer if isinstance(answer, EtcdError) else _decoded(_range, answer)

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int | EtcdError:
        """Write ``key``; returns the revision of the write."""
        answer = await self.call("kv/put", put_op(key, value, lease)["request_put"])
        return answer if isinstance(answer, EtcdError) else _int(answer.get("header", {}).get("revision"))

    async def txn(self, compare: Sequence[Mapping[str, Any]], success: Sequence[Mapping[str, Any]],
                  failure: Sequence[Mapping[str, Any]] = ()) -> TxnResult | EtcdError:
        answer = await self.call("kv/txn", {"compare": list(compare), "success": list(success),
                                            "failure": list(failure)})
        if isinstance(answer, EtcdError):
            return answer

        def decode(raw: Mapping[str, Any]) -> TxnResult:
            ranges = tuple(_range(r["response_range"]) for r in raw.get("responses", ()) if "response_range" in r)
            return TxnResult(bool(raw.get("succeeded", False)), _int(raw.get("header", {}).get("revision")), ranges)

        return _decoded(decode, answer)

    async def lease_grant(self, ttl: int) -> tuple[int, int] | EtcdError:
        """A new lease: ``(id, granted ttl)``."""
        answer = await self.call("lease/grant", {"TTL": str(ttl)})
        if isinstance(answer, EtcdError):
            return answer
        lease_id, granted = _int(answer.get("ID")), _int(answer.get("TTL"))
        return (lease_id, granted) if lease_id else EtcdError("malformed", f"lease grant without an ID: {answer}")

    async def lease_keepalive(self, lease_id: int) -> int | EtcdError:
        """Renew a lease; returns the TTL it has now (0: it had already expired or was revoked)."""
        answer = await self.call("lease/keepalive", {"ID": str(lease_id)})
        if isinstance(answer, EtcdError):
            return answer
        return _int(answer.get("result", {}).get("TTL"))

    async def lease_revoke(self, lease_id: int) -> EtcdError | None:
        answer = await self.call("lease/revoke", {"ID": str(lease_id)})
        if isinstance(answer, EtcdError) and answer.kind != "not_found":
            return answer
        return None

    async def watch(self, key: bytes, range_end: bytes | None, start_revision: int
                    ) -> AsyncGenerator[WatchBatch | EtcdError, None]:
        """Changes to ``[key, range_end)`` from ``start_revision`` on, as long as the caller iterates.

        A stream that fails or stays silent longer than ``watch_idle`` is reopened (on the next
        endpoint) from the revision after the last one seen, after yielding the error. History the
        cluster compacted ends the watch with an ``EtcdError("compacted")``.
        """
        request: dict[str, Any] = {"key": b64(key), "start_revision": str(start_revision),
                                   "progress_notify": True}
        if range_end is not None:
            request["range_end"] = b64(range_end)
        attempt = 0
        while True:
            endpoint = self.endpoints[(self._current + attempt) % len(self.endpoints)]
            attempt += 1
            seen = start_revision - 1
            async with aclosing(self._watch_stream(endpoint, request)) as stream:
                async for item in stream:
                    if isinstance(item, WatchBatch):
                        seen = max(seen, item.revision)
                    yield item
                    if isinstance(item, EtcdError) and item.kind in ("compacted", "rejected"):
                        return
            if seen >= start_revision:
                start_revision = seen + 1
                request["start_revision"] = str(start_revision)
            await asyncio.sleep(min(0.2 * attempt, 1.0) if attempt > len(self.endpoints) else 0)

    async def _watch_stream(self, endpoint: str, request: Mapping[str, Any]
                            ) -> AsyncGenerator[WatchBatch | EtcdError, None]:
        try:
            headers = await asyncio.wait_for(self._auth_headers(endpoint), self.request_timeout)
            if isinstance(headers, EtcdError):
                yield headers
                return
            async with asyncio.timeout(self.request_timeout):
                response = await self._http().post(f"{endpoint}/v3/watch", json={"create_request": request},
                                                   headers=headers)
            async with response:
                buffer = b""
                while True:
                    async with asyncio.timeout(self.watch_idle):
                        chunk = await response.content.readany()
                    if not chunk:
                        yield EtcdError("unreachable", "watch stream closed", endpoint)
                        return
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            item = _watch_message(line, endpoint)
                            if item is not None:
                                yield item
                                if isinstance(item, EtcdError):
                                    return
        except (_Failover, TimeoutError, aiohttp.ClientError, OSError) as exc:
            yield EtcdError("unreachable", f"watch: {_describe(exc)}", endpoint)


def _watch_message(line: bytes, endpoint: str) -> WatchBatch | EtcdError | None:
    try:
        message = json.loads(line)
    except ValueError:
        return EtcdError("malformed", "watch message is not JSON", endpoint)
    result = message.get("result")
    if not isinstance(result, dict):
        error = message.get("error")
        detail = error.get("message") if isinstance(error, dict) else message
        return EtcdError("unreachable", f"watch failed: {detail}", endpoint)
    if result.get("canceled"):
        if _int(result.get("compact_revision")):
            return EtcdError("compacted", f"history compacted up to revision {result['compact_revision']}", endpoint)
        return EtcdError("unreachable", f"watch canceled: {result.get('cancel_reason', 'no reason')}", endpoint)
    revision = _int(result.get("header", {}).get("revision"))
    events = tuple(WatchEvent("delete" if e.get("type") == "DELETE" else "put", _kv(e.get("kv", {})))
                   for e in result.get("events", ()))
    if not events:
        return None if result.get("created") else WatchBatch((), revision)  # a progress notification
    return WatchBatch(events, max(e.kv.mod_revision for e in events))


def _classify(code: Any, message: str, endpoint: str, status: int) -> EtcdError:
    if code in _FAILOVER_CODES or (status >= 500 and code is None) or "no leader" in message:
        raise _Failover(message)
    if code == _NOT_FOUND:
        return EtcdError("not_found", message, endpoint)
    if code == _OUT_OF_RANGE:
        return EtcdError("compacted", message, endpoint)
    return EtcdError("rejected", message, endpoint)


async def _json(response: aiohttp.ClientResponse) -> Any:
    try:
        return json.loads(await response.read())
    except ValueError:
        return None


def _decoded(decode: Callable[[dict[str, Any]], _T], answer: dict[str, Any]) -> _T | EtcdError:
    try:
        return decode(answer)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return EtcdError("malformed", f"answer does not decode: {exc}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
