"""structlog setup: JSON lines when stderr is not a TTY, a readable console otherwise.

Processors are small callables; the one I/O step is the renderer at the tail. :func:`redact`
drops values of keys that look secret, as a last line of defence (secrets are ``SecretStr`` and
should never reach a log call in the first place). :func:`bind_instance` puts the instance id, site and
role on every later line of the calling task and of every task it starts (structlog contextvars).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SECRET_KEYS = ("password", "secret", "token", "authorization", "api_key", "hmac")


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(word in key.lower() for word in _SECRET_KEYS):
            event[key] = "**********"
    return event


def configure(level: str = "info", fmt: str = "auto", file: TextIO | None = None) -> None:
    """Log to ``file`` (standard error by default): JSON lines, or the console format on a terminal."""
    out = sys.stderr if file is None else file
    json_output = fmt == "json" or (fmt == "auto" and not out.isatty())
    # plain tracebacks: a rich one prints local variables, and a local may hold a secret
    renderer: Any = (structlog.processors.JSONRenderer() if json_output
                     else structlog.dev.ConsoleRenderer(colors=False,
                                                        exception_formatter=structlog.dev.plain_traceback))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def bind_instance(instance: str, site: str, role: str) -> None:
    """Name this engine on every log line from here on: in the calling task and the tasks it creates later."""
    structlog.contextvars.bind_contextvars(instance=instance, site=site, role=role)
