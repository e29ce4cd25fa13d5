"""The status page at ``/`` (owned by the status-page work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.daemon import Engine


def render_page(engine: Engine) -> str:
    """The whole HTML page for ``engine``'s current state."""
    raise NotImplementedError
