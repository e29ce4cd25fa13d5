"""Reading YAML that may be hostile: duplicate keys, alias bombs, circular aliases, deep nesting, odd scalars.

PyYAML's safe loader builds what the text says, and some texts say too much: a 272-byte "billion
laughs" names one list a billion times through aliases, ``&a [*a]`` names a list inside itself, and a
repeated key silently keeps the last value. So the text is first composed into YAML's node graph
(aliases stay shared there: cheap), the graph is judged, and only a graph that passes becomes data:

- a key given twice in one mapping (merge keys ``<<`` may still be overridden, as YAML intends);
- an alias that contains itself;
- more than :data:`MAX_NODES` nodes once every alias is expanded (the bomb fails in milliseconds,
  before any expansion), or nesting deeper than :data:`MAX_DEPTH`. libyaml's composer recurses in C, so
  50,000 ``[`` would crash the process: a text with more nesting characters than :data:`FEW_NESTERS` is
  first walked as a stream of events (iterative, about a quarter of the composing time) to find its depth;
- a scalar the constructor cannot turn into a value (a 5,000-digit integer, the 13th month).

Every refusal is a :class:`YamlRefused` with the path and line where it was found.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

PathPart = str | int
MAX_NODES = 2_000_000  # a 10,000-probe file has about 150,000; a bomb has billions
MAX_DEPTH = 64  # the config's own shape is about 10 deep
MERGE = "tag:yaml.org,2002:merge"

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
FEW_NESTERS = 2000  # every level of nesting needs one of _NESTERS; libyaml's composer survives 5,000 levels
_NESTERS = "[{-?:"
_OPENING = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSING = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_CHECKED_SCALARS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"})


class YamlRefused(Exception):
    """The text is not YAML this loader will build; ``path`` and ``line`` say where (when known)."""

    def __init__(self, message: str, path: tuple[PathPart, ...] = (), line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.path, self.line = message, path, line


def load(text: str) -> Any:
    """The data of one YAML document, after the node graph passed every check above.

    Built with libyaml when present and copied through a compact JSON string: the parser's node graph
    is several times the size of the data, and survivors allocated among those nodes would pin the heap
    (a 10,000-probe file left 112 MB resident; through JSON 78 MB).
    """
    loader = _Loader(text)
    try:
        try:
            if sum(text.count(c) for c in _NESTERS) > FEW_NESTERS:
                _depth_by_events(text)
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise YamlRefused(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", (), line) from None
        except RecursionError:
            raise YamlRefused(f"not valid YAML: nested deeper than {MAX_DEPTH} levels") from None
        if node is None:
            return None
        _Judge(loader).size(node, (), 0)
        try:
            data = loader.construct_document(node)
            return json.loads(json.dumps(data, default=str))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise YamlRefused(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", (), line) from None
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise YamlRefused(f"a value cannot be read: {str(exc)[:200]}") from None
    finally:
        loader.dispose()


def _depth_by_events(text: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH`, found on the parser's event stream (no recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, _OPENING):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise YamlRefused(f"nested deeper than {MAX_DEPTH} levels", (), mark.line + 1 if mark else None)
        elif isinstance(event, _CLOSING):
            depth -= 1


class _Judge:
    """Walks the node graph once (shared nodes are sized once), refusing what :func:`load` must not build."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.sizes: dict[int, int] = {}
        self.open: set[int] = set()  # nodes on the current path: meeting one again is a cycle

    def size(self, node: yaml.Node, path: tuple[PathPart, ...], depth: int) -> int:
        key = id(node)
        line = node.start_mark.line + 1
        if key in self.open:
            raise YamlRefused("an alias refers to a node that contains it (circular alias)", path, line)
        known = self.sizes.get(key)
        if known is not None:
            return known
        if depth > MAX_DEPTH:
            raise YamlRefused(f"nested deeper than {MAX_DEPTH} levels", path, line)
        self.open.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                child = (*path, name if isinstance(name, str) else "?")
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != MERGE:
                    ident = (key_node.tag, key_node.value)
                    if ident in seen:
                        raise YamlRefused(f"duplicate key {key_node.value!r} (first on line {seen[ident]}): "
                                          "YAML would silently keep only the last", child,
                                          key_node.start_mark.line + 1)
                    seen[ident] = key_node.start_mark.line + 1
                total += self.size(key_node, child, depth + 1) + self.size(value_node, child, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                total += self.size(item, (*path, index), depth + 1)
        elif node.tag in _CHECKED_SCALARS:
            try:  # built now, where its path is known (kept: the document's construction reuses it)
                self.loader.construct_object(node)
            except (ValueError, OverflowError, yaml.YAMLError) as exc:
                raise YamlRefused(f"cannot read {node.value[:40]!r}: {str(exc)[:120]}", path, line) from None
        self.open.discard(key)
        if total > MAX_NODES:
            raise YamlRefused(f"more than {MAX_NODES:,} values once aliases are expanded (an alias bomb?)",
                              path, line)
        self.sizes[key] = total
        return total
