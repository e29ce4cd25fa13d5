"""Bounds on what strangers can make the engine do: how deep a JSON text nests, how often one error is logged.

Pure (no I/O; time is passed in) so the HTTP face and the peer exchange share one definition:

- :func:`json_depth` measures nesting on the raw bytes, before any parser recurses into them (CPython's
  ``json`` raises ``RecursionError`` near 1,000 levels, which would surface as a 500).
- :class:`LogBudget` lets at most ``burst`` lines of one kind through per ``period``; the rest are only
  counted, and the next line let through says how many were held back. A flood of bad requests costs
  the log a few lines a minute, not one per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_OPEN, _CLOSE, _QUOTE, _BACKSLASH = (0x5B, 0x7B), (0x5D, 0x7D), 0x22, 0x5C


def json_depth(text: bytes, limit: int) -> int:
    """The nesting depth of JSON ``text``, counting no further than ``limit + 1`` (brackets in strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif byte in _CLOSE:
            depth -= 1
    return deepest


@dataclass
class LogBudget:
    """At most ``burst`` log lines per key in each ``period`` seconds."""

    burst: int = 5
    period: float = 60.0
    _window: dict[str, tuple[float, int, int]] = field(default_factory=dict)  # key -> (start, used, held back)

    def take(self, key: str, now: float) -> int | None:
        """None: stay quiet (counted). Otherwise log now, mentioning the returned number of lines held back."""
        start, used, held = self._window.get(key, (now, 0, 0))
        if now - start >= self.period:
            start, used = now, 0
        if used >= self.burst:
            self._window[key] = (start, used, held + 1)
            return None
        self._window[key] = (start, used + 1, 0)
        return held
