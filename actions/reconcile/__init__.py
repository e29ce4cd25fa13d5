"""Reconciliation: prove two databases hold the same rows, or list the rows that differ.

``plan`` (pure decisions) → ``bisect`` (the walk over two sides) → ``pg_side`` (SQL) → ``runner``
(one service: tables and business metrics) → ``result`` (what goes to the journal, status, CLI).
"""

from actions.reconcile.result import MetricResult, ReconcileResult, TableResult
from actions.reconcile.runner import reconcile

__all__ = ["MetricResult", "ReconcileResult", "TableResult", "reconcile"]
