"""The configuration reference as Markdown, generated from the config model's JSON Schema.

    python -m engine.config.reference > docs/configuration.md

One table per object, addressed by its path (``services.<name>.policy``); each key with its type,
default and description. Unions (probe kinds, DNS providers, credentials) list each variant under
its discriminating ``type``/``kind``. A test keeps ``docs/configuration.md`` equal to this output.
"""

from __future__ import annotations

import json
from typing import Any

from engine.config.base import format_duration
from engine.config.model import EngineConfig

HEADER = """# Configuration reference

Generated from the config model (`python -m engine.config.reference > docs/configuration.md`; a test
fails when this file is stale). One YAML file per instance; durations are `500ms`, `10s`, `2m`,
`1h30m` or seconds; secrets come from `${ENV_VAR}` or `file:/path`, never inline. `failover-engine
check-config FILE` checks a file and prints the worst-case RTO of each service;
`failover-engine schema` prints the JSON Schema for editors.
"""


def _ref(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _variants(schema: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [v for v in schema[key] if v.get("type") != "null"]
    return [schema]


def _type(schema: dict[str, Any], defs: dict[str, Any], top: bool = True) -> str:
    names = []
    for v in _variants(schema):
        if "anyOf" in v or "oneOf" in v:
            names.append(_type(v, defs, top=False))
        elif "$ref" in v:
            names.append("object")
        elif "const" in v:
            names.append(json.dumps(v["const"]))
        elif "enum" in v:
            names.append(" \\| ".join(json.dumps(e) for e in v["enum"]))
        elif v.get("type") == "array":
            names.append(f"list of {_type(v.get('items', {}), defs)}")
        elif v.get("type") == "object" and "additionalProperties" in v:
            names.append(f"map of {_type(v['additionalProperties'], defs)}")
        else:
            names.append(str(v.get("type", "any")))
    text = " or ".join(dict.fromkeys(names)).replace("string or number", "duration")
    text += _range(schema, text.startswith("duration")) if top else ""
    return text + (" (optional)" if any(v.get("type") == "null" for v in schema.get("anyOf", [])) else "")


def _range(schema: dict[str, Any], duration: bool) -> str:
    """``, > 0s, ≤ 1h``: the bounds the schema states for a number, in durations when it is one."""
    for v in _variants(schema):
        if "anyOf" in v:
            found = _range(v, duration)
            if found:
                return found
        if v.get("type") in ("number", "integer") and any(
                k in v for k in ("minimum", "exclusiveMinimum", "maximum")):
            show = format_duration if duration else (lambda x: f"{x:,}")
            parts = []
            if "exclusiveMinimum" in v:
                parts.append(f"> {show(v['exclusiveMinimum'])}")
            elif "minimum" in v:
                parts.append(f"≥ {show(v['minimum'])}")
            if "maximum" in v:
                parts.append(f"≤ {show(v['maximum'])}")
            return ", " + ", ".join(parts)
    return ""


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return ""
    value = prop["default"]
    if value in (None, [], {}):
        return "" if value is None else f"`{json.dumps(value)}`"
    return f"`{json.dumps(value)}`"


def _children(schema: dict[str, Any], defs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(path suffix, object schema) of the objects nested under ``schema``'s properties."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name, prop in schema.get("properties", {}).items():
        for v in _variants(prop):
            target, suffix = v, name
            if v.get("type") == "array" and "items" in v:
                target, suffix = v["items"], f"{name}[]"
            elif v.get("type") == "object" and isinstance(v.get("additionalProperties"), dict):
                target, suffix = v["additionalProperties"], f"{name}.<{'site' if name == 'sites' else 'name'}>"
            for item in _variants(target):
                if "$ref" in item:
                    out.append((suffix, _ref(item, defs)))
    return out


def render() -> str:
    schema = EngineConfig.model_json_schema()
    defs = schema.get("$defs", {})
    parts = [HEADER]
    seen: set[tuple[str, str]] = set()
    queue: list[tuple[str, dict[str, Any]]] = [("", schema)]
    while queue:
        path, obj = queue.pop(0)
        title = obj.get("title", "")
        if (path, title) in seen:
            continue
        seen.add((path, title))
        props = obj.get("properties", {})
        if not props:
            continue
        kind = next((json.dumps(p["const"]) for k, p in props.items() if k in ("type", "kind") and "const" in p), "")
        heading = f"`{path or '(top level)'}`" + (f" with type {kind}" if kind else "")
        parts.append(f"\n## {heading}\n")
        if obj.get("description") and path:
            parts.append(" ".join(obj["description"].split()) + "\n\n")
        required = set(obj.get("required", []))
        rows = ["| key | type | default | description |", "|---|---|---|---|"]
        for name, prop in props.items():
            desc = " ".join(str(prop.get("description", "")).split())
            if name in required:
                desc = ("**required.** " + desc).strip()
            rows.append(f"| `{name}` | {_type(prop, defs)} | {_default(prop)} | {desc.replace('|', chr(92) + '|')} |")
        parts.append("\n".join(rows) + "\n")
        for suffix, child in _children(obj, defs):
            queue.append((f"{path}.{suffix}" if path else suffix, child))
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
