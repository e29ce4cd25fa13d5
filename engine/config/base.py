"""Building blocks of the config model: the frozen base, durations, secrets and rule errors.

- :class:`Model`: frozen, ``extra="forbid"``; every config class derives from it.
- :data:`Duration`: ``10s``, ``500ms``, ``2m``, ``1h30m`` or a number of seconds; stored as float seconds.
  Always finite and between 0 and :data:`MAX_DURATION`; :class:`Span` narrows a field's range
  (``Annotated[Duration, Span(0, 1h, above=True)]``): checked with a message in durations and stated in
  the JSON Schema as ``minimum``/``exclusiveMinimum``/``maximum``.
- :class:`Secret`: a value given inline, as ``${ENV}`` (expanded by the loader) or ``file:/path`` (a
  regular file of at most :data:`MAX_SECRET_FILE` bytes, UTF-8); kept in a ``SecretStr`` so it never
  shows in a repr, a log line or an API response.
- :func:`rule_error`: a cross-field rule that names the offending field, so the error path reads
  ``services.api.sites.gcp.probes[0].timeout`` rather than the enclosing object.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    SecretStr,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema


class Model(BaseModel):
    """Base of every config class: immutable, unknown keys rejected, no NaN or infinity in any number."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=False, allow_inf_nan=False)


MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
MAX_DURATION = 366 * DAY  # no duration in this file means more than a year
MAX_SECRET_FILE = 64 * 1024  # a key, a token or a URL; never a device or a log file


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
    if not math.isfinite(seconds):
        raise PydanticCustomError("duration", "a duration must be a finite number")
    if seconds < 0:
        raise PydanticCustomError("duration", "a duration cannot be negative")
    if seconds > MAX_DURATION:
        raise PydanticCustomError("range", "must be at most {high}", {"high": format_duration(MAX_DURATION)})
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of :func:`parse_duration` for messages: ``10s``, ``500ms``, ``2m``, ``8m20s``."""
    if not math.isfinite(seconds):
        return str(seconds)
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
                              {"type": "number", "minimum": 0, "maximum": MAX_DURATION}],
                    "description": "a duration: 10s, 500ms, 2m, 1h, or seconds as a number"}),
]


@dataclass(frozen=True)
class Span:
    """The range of one duration field: ``low`` to ``high`` seconds, ``low`` itself refused when ``above``.

    Used as ``Annotated[Duration, Span(...)]``: pydantic's own ``Field(gt=..)`` cannot reach inside a
    duration's parser, and would put its bounds in the JSON Schema as unknown keywords.
    """

    low: float = 0.0
    high: float = MAX_DURATION
    above: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = dict(handler(schema))
        number: dict[str, Any] = {"type": "number", "maximum": self.high,
                                  ("exclusiveMinimum" if self.above else "minimum"): self.low}
        out["anyOf"] = [part if part.get("type") != "number" else number for part in out.get("anyOf", [])]
        low = ("more than " if self.above else "at least ") + format_duration(self.low)
        out["description"] = f"{out.get('description', 'a duration')}; {low}, at most {format_duration(self.high)}"
        return out

    def check(self, seconds: float) -> float:
        if seconds < self.low or (self.above and seconds == self.low):
            word = "more than" if self.above else "at least"
            raise PydanticCustomError("range", "must be {word} {low}",
                                      {"word": word, "low": format_duration(self.low)})
        if seconds > self.high:
            raise PydanticCustomError("range", "must be at most {high}", {"high": format_duration(self.high)})
        return seconds


def positive(high: float) -> Span:
    """More than zero and at most ``high`` seconds: timeouts, intervals, windows, deadlines."""
    return Span(0.0, high, above=True)


def _load_secret(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("secret", "expected a string, ${ENV_VAR} or file:/path")
    if value.startswith("file:"):
        return SecretStr(read_secret_file(Path(value[5:]).expanduser()))
    if not value:
        raise PydanticCustomError("secret", "secret is empty")
    return SecretStr(value)


def read_secret_file(path: Path) -> str:
    """The stripped text of a secret file: a regular file, at most :data:`MAX_SECRET_FILE` bytes, UTF-8.

    Opened first and judged by the open descriptor, so a path swapped between check and read is judged
    as what is read; never reads more than the cap (``/dev/zero`` or a FIFO is refused before a read).
    """
    def refuse(reason: str) -> PydanticCustomError:
        return PydanticCustomError("secret", "cannot read secret file {path}: {err}",
                                   {"path": str(path), "err": reason})

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the load awaiting a writer
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise refuse("not a regular file")
            data = b""
            while len(data) <= MAX_SECRET_FILE and (chunk := os.read(fd, MAX_SECRET_FILE + 1 - len(data))):
                data += chunk
        finally:
            os.close(fd)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    if len(data) > MAX_SECRET_FILE:
        raise refuse(f"larger than {MAX_SECRET_FILE} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise refuse("not UTF-8 text") from None
    if not text.strip():
        raise refuse("the file is empty")
    return text.strip()


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
