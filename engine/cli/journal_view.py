"""What an engine's journal says about a service, read-only, for commands that run beside the engine.

``dns show`` and ``db reinit-subscription`` compare with the engine's own view (active site, epoch,
the epoch record's text it saw) without opening the journal for writing or creating it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any


def journal_view(path: str, service: str) -> dict[str, Any]:
    """``active``, ``epoch`` and ``seen`` (the epoch record's text at that epoch) for ``service``; empty when the
    journal is missing, unreadable or knows nothing of the service."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)) as db:
            rows = dict(db.execute("SELECT key, value FROM state WHERE service = ? AND key IN "
                                   "('active', 'epoch', 'dns_epoch_seen')", (service,)).fetchall())
    except sqlite3.Error:
        return {}
    if "active" not in rows or "epoch" not in rows:
        return {}
    epoch = int(json.loads(rows["epoch"]))
    seen = json.loads(rows.get("dns_epoch_seen", "null"))
    return {"active": json.loads(rows["active"]), "epoch": epoch,
            "seen": seen.get("text") if isinstance(seen, dict) and seen.get("epoch") == epoch else None}
