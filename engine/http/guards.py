"""What the HTTP face refuses before any handler sees a request, and how its own failures are logged.

Each guard answers a stranger's request with a 4xx JSON refusal, never a 500 or a held connection:

- **Slow clients** (:func:`server_settings`, passed to aiohttp's ``AppRunner``): aiohttp starts its
  keep-alive timer when a connection opens and after each response, and closes a connection whose next
  request head is still incomplete when it fires; :data:`HEAD_TIMEOUT` makes that timer the header-read
  timeout (aiohttp's default is an hour). Request lines, header sizes and counts are capped.
- **Bodies** (:func:`screen`): at most the app's ``client_max_size`` (413), read within
  :data:`BODY_TIMEOUT` (408), JSON nested at most :data:`MAX_JSON_DEPTH` (400, checked on the bytes before
  any parser recurses), and no ``NaN``, ``Infinity`` or ``1e999`` in it (400: Python's ``json`` reads them
  as floats that compare false with everything, e.g. a pause "until NaN").
- **Authorization** (:func:`authorization_problem`): a header that is not printable ASCII (aiohttp hands
  invalid UTF-8 on as lone surrogates, which cannot even be hashed) is a 401 with a reason.
- **Failures** (:class:`QuietLog`, :class:`QuietServerLog`): an unexpected exception in a handler, and
  aiohttp's own "Error handling request" for a request it could not parse, are logged with a traceback
  at most a few times a minute; the rest are counted and the next line says how many were held back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

from aiohttp import web

from engine.core.limits import LogBudget, json_depth

HEAD_TIMEOUT = 10.0  # seconds to send a whole request head (and to stay idle between requests)
BODY_TIMEOUT = 10.0  # seconds to send a whole request body
MAX_JSON_DEPTH = 32  # the API's bodies nest 2 deep; a verdict 4
MAX_AUTHORIZATION = 4096  # bytes: a bearer token is 30 to 60



class QuietServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger with a budget on warnings and errors (one bad request, one traceback)."""

    def __init__(self, logger: logging.Logger, burst: int = 5, period: float = 60.0) -> None:
        super().__init__(logger, {})
        self.budget = LogBudget(burst, period)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level >= logging.WARNING:
            held = self.budget.take(str(msg)[:80], time.monotonic())
            if held is None:
                return
            if held:
                msg = f"{msg} ({held} like it held back)"
        super().log(level, msg, *args, **kwargs)


def server_settings() -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` (handed on to every connection's handler); a fresh log budget."""
    return {"logger": QuietServerLog(logging.getLogger("aiohttp.server")), "keepalive_timeout": HEAD_TIMEOUT,
            "max_line_size": 8190, "max_field_size": 8190, "max_headers": 64, "lingering_time": 2.0}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def refusal(status: int, code: str, detail: str) -> web.Response:
    """The API's JSON error shape (``{"error", "detail"}``)."""
    return web.Response(text=json.dumps({"error": code, "detail": detail}), status=status,
                        content_type="application/json")


def authorization_problem(value: str | None) -> str | None:
    """Why an ``Authorization`` header cannot be a credential, or None when it may be one (or is absent)."""
    if value is None:
        return None
    if len(value) > MAX_AUTHORIZATION:
        return f"the Authorization header is longer than {MAX_AUTHORIZATION} characters"
    if not value.isascii() or not value.isprintable():
        return "the Authorization header must be printable ASCII ('Bearer <token>')"
    return None


async def screen(request: web.Request) -> web.Response | None:
    """Read a request's body within the deadline and judge it; None when the handler may have it.

    The body is kept by aiohttp, so the handler's own ``read()``/``json()`` returns it without waiting again.
    """
    if request.method not in _BODY_METHODS or not request.body_exists:
        return None
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            body = await request.read()
    except TimeoutError:
        return refusal(408, "request_timeout", f"the body did not arrive within {BODY_TIMEOUT:g}s")
    except web.HTTPRequestEntityTooLarge as exc:  # over the app's client_max_size, found while reading
        return refusal(413, "too_large", exc.text or "the request body is too large")
    if json_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        return refusal(400, "bad_json", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        json.loads(body, parse_constant=_not_finite, parse_float=_finite)
    except _NotFinite as exc:
        return refusal(400, "bad_json", f"numbers must be finite, not {exc}")
    except ValueError:
        pass  # not JSON: the handler says so in its own words (or wants no JSON)
    return None


class _NotFinite(ValueError):
    pass


def _not_finite(text: str) -> float:
    raise _NotFinite(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text[:20])
    return value


class QuietLog:
    """Logs unexpected handler failures with a bounded volume: ``burst`` tracebacks per path a minute."""

    def __init__(self, log: Any, burst: int = 5, period: float = 60.0) -> None:
        self.log = log
        self.budget = LogBudget(burst, period)

    def failure(self, path: str, now: float | None = None) -> None:
        """Call from an ``except`` block: the traceback of the exception being handled, unless over budget."""
        held = self.budget.take(path, time.monotonic() if now is None else now)
        if held is not None:
            self.log.exception("api handler failed", path=path, **({"held_back": held} if held else {}))
