"""The kinds of event in the audit log: one list, read by the API (``GET /v1/events?kind=``) and the CLI
(``events --kind``) to refuse an unknown kind instead of answering an empty page.

A new ``ctx.record("<kind>", ...)`` must add its kind here (tests/unit/test_event_kinds.py checks the
source against this list).
"""

from __future__ import annotations

EVENT_KINDS: tuple[str, ...] = (
    "alert", "decision", "dns_drift", "drill", "engine", "fence", "lease", "operator", "quorum", "reconcile",
    "rpo", "runbook", "signal", "state", "synchronous",
)
