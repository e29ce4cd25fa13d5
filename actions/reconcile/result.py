"""What a reconciliation found: per table, per business metric, and one sentence for the whole run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from actions.reconcile.causes import count_causes
from actions.reconcile.plan import Key, RowDiff, key_text

TableStatus = Literal["identical", "differences", "refused", "error"]

_KIND_TEXT = {"missing_on_standby": "missing on {standby}", "missing_on_primary": "missing on {primary}",
              "changed": "changed"}


@dataclass(frozen=True, slots=True)
class TableResult:
    """One table: status, counts, the differing rows (at most ``max_reported_rows``) and in-flight ones."""

    table: str
    status: TableStatus
    reason: str = ""
    rows_primary: int = 0
    rows_standby: int = 0
    differences: tuple[RowDiff, ...] = ()
    difference_count: int = 0
    in_flight: int = 0
    seconds: float = 0.0
    queries: int = 0
    bisect_seconds: float = 0.0
    samples: dict[Key, tuple[str | None, str | None]] = field(default_factory=dict)
    in_flight_rows: tuple[RowDiff, ...] = ()
    key: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    scan: str | None = None  # ordered (key slices over the heap) or hashed (key-hash classes)

    @property
    def causes(self) -> dict[str, int] | None:
        """After a failover: differences per cause (lost, after_promotion, diverged), else None."""
        if not any(d.cause for d in self.differences):
            return None
        return count_causes(self.differences)

    def to_dict(self) -> dict[str, Any]:
        out = {"table": self.table, "status": self.status, "reason": self.reason, "key": list(self.key),
               "rows_primary": self.rows_primary, "rows_standby": self.rows_standby,
               "difference_count": self.difference_count, "in_flight": self.in_flight,
               "differences": [d.to_dict() for d in self.differences],
               "in_flight_rows": [d.to_dict() for d in self.in_flight_rows],
               "seconds": round(self.seconds, 3), "bisect_seconds": round(self.bisect_seconds, 3),
               "queries": self.queries, "scan": self.scan, "notes": list(self.notes)}
        if self.causes is not None:
            out["causes"] = self.causes
        return out


@dataclass(frozen=True, slots=True)
class MetricResult:
    """A business metric on both sides, compared with its tolerance."""

    name: str
    ok: bool
    reason: str
    primary_value: float | None = None
    standby_value: float | None = None
    tolerance: float = 0.0
    error: bool = False  # the query failed: nothing was compared

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "reason": self.reason, "primary_value": self.primary_value,
                "standby_value": self.standby_value, "tolerance": self.tolerance}


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """The whole run. ``identical`` only when every table was compared, none differs, metrics agree."""

    service: str
    primary: str
    standby: str
    hash_mode: str
    watermark: float | None
    started_at: float
    seconds: float
    tables: tuple[TableResult, ...] = ()
    metrics: tuple[MetricResult, ...] = ()
    error: str | None = None
    promotion: dict[str, Any] | None = None  # after a failover: the promotion point the causes are judged by

    @property
    def exit_code(self) -> int:
        """0 no differences, 1 differences (or rows still in flight, or a metric off), 2 error: the run
        failed, a table was refused or failed, or a metric query failed. Never 0 unless compared."""
        if (self.error is not None or any(t.status in ("refused", "error") for t in self.tables)
                or any(m.error for m in self.metrics)):
            return 2
        return 0 if self.identical else 1

    @property
    def causes(self) -> dict[str, int] | None:
        """After a failover: differences per cause over every table, else None."""
        per = [t.causes for t in self.tables if t.causes is not None]
        if not per:
            return None
        return {name: sum(p[name] for p in per) for name in per[0]}

    @property
    def differences_found(self) -> int:
        return sum(t.difference_count for t in self.tables)

    @property
    def identical(self) -> bool:
        return (self.error is None and all(t.status == "identical" for t in self.tables)
                and all(m.ok for m in self.metrics) and not any(t.in_flight for t in self.tables))

    @property
    def sentence(self) -> str:
        if self.error is not None:
            return f"reconciliation failed: {self.error}"
        problems = []
        if self.differences_found:
            per = ", ".join(f"{t.table} {t.difference_count}" for t in self.tables if t.difference_count)
            problems.append(f"{self.differences_found} differing row{'s' * (self.differences_found != 1)} ({per})")
            causes = self.causes
            if causes is not None:
                problems[-1] += (f": {causes['lost']} lost, {causes['diverged']} diverged, "
                                 f"{causes['after_promotion']} written after promotion")
        bad_metrics = [m for m in self.metrics if not m.ok]
        if bad_metrics:
            problems.append("metric " + "; ".join(f"{m.name}: {m.reason}" for m in bad_metrics))
        not_compared = [t for t in self.tables if t.status in ("refused", "error")]
        if not_compared:
            problems.append("not compared: " + "; ".join(f"{t.reason}" for t in not_compared))
        in_flight = sum(t.in_flight for t in self.tables)
        named = [f"{t.table} {key_text(d.key)}" for t in self.tables for d in t.in_flight_rows][:5]
        listed = f": {', '.join(named)}{' ...' if in_flight > len(named) else ''}" if named else ""
        tail = f" ({in_flight} row{'s' * (in_flight != 1)} still in flight{listed})" if in_flight else ""
        if problems:
            return f"{self.primary} vs {self.standby}: " + "; ".join(problems) + tail
        rows = sum(t.rows_primary for t in self.tables)
        return (f"{self.primary} and {self.standby} agree: {len(self.tables)} table{'s' * (len(self.tables) != 1)}, "
                f"{rows} rows, {len(self.metrics)} metric{'s' * (len(self.metrics) != 1)}{tail}")

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "primary": self.primary, "standby": self.standby,
                "identical": self.identical, "sentence": self.sentence, "hash_mode": self.hash_mode,
                "watermark": self.watermark, "started_at": self.started_at, "seconds": round(self.seconds, 3),
                "differences_found": self.differences_found, "error": self.error, "exit_code": self.exit_code,
                "causes": self.causes, "promotion": self.promotion,
                "tables": [t.to_dict() for t in self.tables], "metrics": [m.to_dict() for m in self.metrics]}

    def gauges(self) -> list[tuple[str, dict[str, str], float]]:
        """Samples for ``/metrics``: (name, labels, value); the daemon exports them as gauges."""
        base = {"service": self.service}
        out: list[tuple[str, dict[str, str], float]] = [
            ("failover_reconcile_identical", base, 1.0 if self.identical else 0.0),
            ("failover_reconcile_seconds", base, self.seconds)]
        for t in self.tables:
            labels = {**base, "table": t.table}
            out.append(("failover_reconcile_differences", labels, float(t.difference_count)))
            out.append(("failover_reconcile_in_flight_rows", labels, float(t.in_flight)))
            out.append(("failover_reconcile_compared", labels, 1.0 if t.status in ("identical", "differences")
                        else 0.0))
        for m in self.metrics:
            out.append(("failover_reconcile_metric_ok", {**base, "metric": m.name}, 1.0 if m.ok else 0.0))
        return out

    def render(self) -> str:
        """A human listing for the CLI: the sentence, then every table, difference and metric."""
        lines = [self.sentence, f"  hash: {self.hash_mode}, {self.seconds:.2f} s"]
        for t in self.tables:
            head = f"  table {t.table}: {t.status}"
            if t.status in ("identical", "differences"):
                head += f" ({t.rows_primary} rows on {self.primary}, {t.rows_standby} on {self.standby})"
            if t.reason:
                head += f": {t.reason}"
            lines.append(head)
            for note in t.notes:
                lines.append(f"    note: {note}")
            for d in (*t.differences, *t.in_flight_rows):
                kind = _KIND_TEXT[d.kind].format(primary=self.primary, standby=self.standby)
                flag = " (in flight)" if d.in_flight else ""
                why = f" [{d.cause.replace('_', ' ')}]" if d.cause else ""
                lines.append(f"    key {key_text(d.key)}: {kind}{flag}{why}")
                left, right = t.samples.get(d.key, (None, None))
                if left is not None:
                    lines.append(f"      {self.primary}: {left}")
                if right is not None:
                    lines.append(f"      {self.standby}: {right}")
            if t.difference_count > len(t.differences):
                lines.append(f"    ... and {t.difference_count - len(t.differences)} more")
        for m in self.metrics:
            lines.append(f"  metric {m.name}: {'ok' if m.ok else 'MISMATCH'}: {m.reason}")
        return "\n".join(lines)
