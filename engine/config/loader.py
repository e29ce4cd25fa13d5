"""Turning YAML bytes into an :class:`EngineConfig`, or into every problem with its path and line.

Loading is split like Gatus does it: :func:`parse_config` is pure (text in, config or problems
out) and :func:`load_config` reads the file (at most :data:`MAX_CONFIG_BYTES`, UTF-8). The YAML is read
by :mod:`engine.config.yaml_safe` (duplicate keys, alias bombs and circular aliases refused). ``${VAR}``
and ``${VAR:-default}`` are expanded in every string; a missing variable, and a ``${`` that is not one of
those two forms (``${VAR`` unterminated, ``${1X}``), is a problem at the path where it was used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from engine.config.cross import problems as cross_problems
from engine.config.model import EngineConfig
from engine.config.yaml_safe import YamlRefused
from engine.config.yaml_safe import load as yaml_safe_load

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
PathPart = str | int
MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a 10,000-probe file is about 2 MB


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """The config is unusable; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


def format_path(parts: tuple[PathPart, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _split_field(field: str) -> list[PathPart]:
    parts: list[PathPart] = []
    for piece in field.split("."):
        name, *indices = re.split(r"\[(\d+)\]", piece)
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indices if i)
    return parts


def _line_map(node: yaml.Node | None, prefix: tuple[PathPart, ...] = (),
              out: dict[tuple[PathPart, ...], int] | None = None) -> dict[tuple[PathPart, ...], int]:
    out = {} if out is None else out
    if node is None:
        return out
    out.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, key.value)
            out[path] = key.start_mark.line + 1
            _line_map(value, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*prefix, index), out)
    return out


# read-only commands (``dns show``): an unset ${VAR} becomes this instead of an error. Valid base64 and
# long enough for any key rule, so the model loads; a caller checks for it before using a secret.
UNSET_PLACEHOLDER = "VU5TRVQtRk9SLUEtUkVBRC1PTkxZLUNPTU1BTkQ="


def _expand_env(data: Any, env: Mapping[str, str], path: tuple[PathPart, ...],
                problems: list[tuple[tuple[PathPart, ...], str]], unset_ok: bool = False) -> Any:
    if isinstance(data, str):
        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name is None:
                problems.append((path, "'${' must start ${NAME} or ${NAME:-default}, closed by '}' "
                                       f"(found {data[match.start():match.start() + 24]!r})"))
                return match.group(0)
            if name in env:
                return env[name]
            if default is not None:
                return default
            if unset_ok:
                return UNSET_PLACEHOLDER
            problems.append((path, f"environment variable {name} is not set"))
            return ""
        return _ENV.sub(sub, data)
    if isinstance(data, dict):
        return {k: _expand_env(v, env, (*path, str(k)), problems, unset_ok) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_env(v, env, (*path, i), problems, unset_ok) for i, v in enumerate(data)]
    return data


def _real_path(loc: tuple[Any, ...], data: Any) -> tuple[PathPart, ...]:
    """Drop the parts of a pydantic error location that are not in the data (union tags)."""
    out: list[PathPart] = []
    node = data
    tag_skipped = False  # a union tag appears at most once per level; a later equal name is a real key
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
            out.append(part)
            tag_skipped = False
        elif isinstance(part, str) and isinstance(node, dict) and (tag_skipped or not _is_tag(part, node)):
            out.append(part)  # a missing key: name it
            node = None
        else:
            tag_skipped = True  # a discriminator tag (or beyond the data): skip it
    return tuple(out)


def _is_tag(part: str, node: dict[str, Any]) -> bool:
    return node.get("type") == part


_FRIENDLY = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
}

RENAMED = {  # keys a release removed: what replaces them, for an upgrading user's config
    "self_fence_after": "unknown key: replaced by policy.lease (the lease length, see docs/lease.md)",
    "lease_wait": "unknown key: replaced by policy.lease (the majority waits lease + 0.5 s, see docs/lease.md)",
}


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "rule":
        return str(err["ctx"]["message"])
    if kind == "extra_forbidden" and err.get("loc") and str(err["loc"][-1]) in RENAMED:
        return RENAMED[str(err["loc"][-1])]
    if kind in _FRIENDLY:
        return _FRIENDLY[kind]
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_config(text: str, *, source: str = "<config>", env: Mapping[str, str] | None = None,
                 unset_ok: bool = False) -> EngineConfig:
    """Parse YAML text into a config, or raise :class:`ConfigError` listing every problem. With
    ``unset_ok`` (read-only commands) an unset ``${VAR}`` is :data:`UNSET_PLACEHOLDER`, not an error."""
    env = os.environ if env is None else env
    try:
        data = yaml_safe_load(text)
    except YamlRefused as exc:
        raise ConfigError(source, [Problem(format_path(exc.path), exc.message, exc.line)]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", "the file must hold a mapping (key: value) at the top", 1)])
    env_problems: list[tuple[tuple[PathPart, ...], str]] = []
    data = _expand_env(data, env, (), env_problems, unset_ok)
    found: list[tuple[tuple[PathPart, ...], str]] = list(env_problems)
    try:
        config = EngineConfig.model_validate(data)
    except ValidationError as exc:
        unset = {path for path, _ in env_problems}  # the missing variable is the problem there, not its blank
        for err in exc.errors():
            parts = list(_real_path(tuple(err["loc"]), data))
            if err.get("type") == "rule":
                parts.extend(_split_field(str(err["ctx"]["field"])))
            if tuple(parts) not in unset:
                found.append((tuple(parts), _message(err)))
    else:
        found.extend((tuple(_split_field(field)), message) for field, message in cross_problems(config))
    if found:
        lines = _line_map(yaml.compose(text, Loader=_Loader))  # only needed to report problems
        problems = [Problem(format_path(p), m, _line_for(lines, p)) for p, m in found]
        raise ConfigError(source, sorted(_dedupe(problems), key=lambda p: p.line or 0))
    return config


def _line_for(lines: dict[tuple[PathPart, ...], int], path: tuple[PathPart, ...]) -> int | None:
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return out


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None,
                unset_ok: bool = False) -> EngineConfig:
    """Read and parse a config file (``unset_ok``: see :func:`parse_config`)."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(file), [Problem("", f"cannot read file: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(str(file), [Problem("", f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MB")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(str(file), [Problem("", f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                                                  f"{exc.start})", line)]) from None
    return parse_config(text, source=str(file), env=env, unset_ok=unset_ok)
