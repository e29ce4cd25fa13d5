"""Building blocks of the config model: the frozen base, durations, secrets and rule errors.

- :class:`Model`: frozen, ``extra="forbid"``; every config class derives from it.
- :data:`Duration`: ``10s``, ``500ms``, ``2m``, ``1h30m`` or a number of seconds; stored as float seconds.
- :class:`Secret`: a value given inline, as ``${ENV}`` (expanded by the loader) or ``file:/path``;
  kept in a ``SecretStr`` so it never shows in a repr, a log line or an API response.
- :func:`rule_error`: a cross-field rule that names the offending field, so the error path reads
  ``services.api.sites.gcp.probes[0].timeout`` rather than the enclosing object.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    SecretStr,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError


class Model(BaseModel):
    """Base of every config class: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """Parse ``10s``, ``1m30s``, ``250ms`` or a bare number of seconds into float seconds."""
    if isinstance(value, bool):
        raise PydanticCustomError("duration", "expected a duration such as 10s, 500ms or 2m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if not text:
            raise PydanticCustomError("duration", "expected a duration such as 10s, 500ms or 2m")
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text):
                raise PydanticCustomError(
                    "duration", "'{value}' is not a duration (use e.g. 10s, 500ms, 2m, 1h)",
                    {"value": value}) from None
    else:
        raise PydanticCustomError("duration", "expected a duration such as 10s, 500ms or 2m")
    if seconds < 0:
        raise PydanticCustomError("duration", "a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration` for messages: ``10s``, ``500ms``, ``2m``, ``8m20s``."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60 or seconds != int(seconds):
        return f"{seconds:g}s"
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"},
                              {"type": "number", "minimum": 0}],
                    "description": "a duration: 10s, 500ms, 2m, 1h, or seconds as a number"}),
]


def _load_secret(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("secret", "expected a string, ${ENV_VAR} or file:/path")
    if value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        try:
            return SecretStr(path.read_text().strip())
        except OSError as exc:
            raise PydanticCustomError("secret", "cannot read secret file {path}: {err}",
                                      {"path": str(path), "err": exc.strerror or str(exc)}) from None
    if not value:
        raise PydanticCustomError("secret", "secret is empty")
    return SecretStr(value)


Secret = Annotated[
    SecretStr,
    BeforeValidator(_load_secret),
    PlainSerializer(lambda _s: "**********", return_type=str),
    WithJsonSchema({"type": "string",
                    "description": "a secret: ${ENV_VAR} or file:/path (inline only for tests)"}),
]


def rule_error(field: str, message: str) -> PydanticCustomError:
    """A cross-field rule failure attributed to ``field`` of the model being validated."""
    return PydanticCustomError("rule", "{field}: {message}", {"field": field, "message": message})
