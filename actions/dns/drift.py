"""DNS drift: how the records read differ from what they should be at the engine's epoch (pure, no I/O).

The engine knows which site a service is active in and at which epoch; the config says which
values and TTL every record has per site. :func:`drift` compares one read (a
:class:`~actions.dns.state.DnsState`) with that and lists every difference in one sentence each:

- a record whose values match no configured site (``app.example.test A answers 203.0.113.99:
  matches no site``), or a site other than the active one;
- a mixed answer (the records do not all point to one site);
- a TTL other than the configured one;
- an epoch record that is missing, went back, names another site than the records, or was rewritten
  at the same epoch (its text differs from the one the engine saw at that epoch: ``seen``).

Without an expected ``active``/``epoch`` (the ``dns show`` command has no journal) only what the
read says about itself is compared: records that agree on one configured site, that site also named
by the epoch record, and the configured TTLs. A higher epoch than the engine's, consistent in
itself, is a move someone made (a peer's runbook); the caller adopts it before comparing.

:class:`Drift` carries the differences and a fingerprint of them (:attr:`Drift.key`): an operator's
acknowledgement covers exactly one fingerprint, so a new, different drift blocks again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from actions.dns.state import MIXED, UNKNOWN, DnsState
from engine.config.dns import RecordConfig


@dataclass(frozen=True)
class Drift:
    """What differs between a DNS read and the expected state (empty: nothing)."""

    differences: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.differences)

    @property
    def key(self) -> str:
        """A fingerprint of exactly these differences (the same foreign change gives the same key)."""
        return hashlib.sha256("\n".join(self.differences).encode()).hexdigest()[:16]

    @property
    def summary(self) -> str:
        return "; ".join(self.differences)

    def to_dict(self) -> dict[str, object]:
        return {"differences": list(self.differences), "key": self.key, "summary": self.summary}


def _short(name: str) -> str:
    return name.rstrip(".")


def consistent_site(state: DnsState, configs: Mapping[str, RecordConfig]) -> str | None:
    """The site a read points to when it is consistent in itself (records agree on one configured site, the
    epoch record names that site, TTLs as configured); else None. A consistent higher epoch is a move."""
    site = state.site
    if site in (UNKNOWN, MIXED) or self_differences(state, configs):
        return None
    return site


def self_differences(state: DnsState, configs: Mapping[str, RecordConfig]) -> tuple[str, ...]:
    """What a read says against itself and the config, with no expected epoch (see the module docstring)."""
    out: list[str] = []
    for record in state.records:
        where = f"{_short(record.name)} {record.rtype}"
        shown = ",".join(record.values) or "(none)"
        if record.site == UNKNOWN:
            out.append(f"{where} answers {shown}: matches no site")
        config = configs.get(record.name)
        if config is not None and record.values and record.ttl != int(config.ttl):
            out.append(f"{where} TTL {record.ttl}s, configured {int(config.ttl)}s")
    site = state.site
    if site == MIXED:
        parts = ", ".join(f"{_short(r.name)} -> {r.site}" for r in state.records)
        out.append(f"mixed answer: {parts}")
    epoch = state.epoch
    if epoch.text is not None and site not in (UNKNOWN, MIXED) and epoch.site != site:
        out.append(f"epoch record {_short(state.epoch_name)} names {epoch.site or 'no site'} at epoch "
                   f"{epoch.number}, the records point to {site}")
    return tuple(out)


def drift(state: DnsState, configs: Mapping[str, RecordConfig], *, active: str | None = None,
          epoch: int | None = None, seen: str | None = None) -> Drift:
    """Every difference between ``state`` and the expected one.

    ``configs`` maps absolute record names to their config. ``active``/``epoch``: where the engine
    believes the service is, and at which epoch (None: not known, compare the read with itself).
    ``seen``: the epoch record's text the engine saw (or wrote) at ``epoch``; a different text at the
    same epoch is a rewrite by someone else.
    """
    out = list(self_differences(state, configs))
    if active is not None:
        for record in state.records:
            if record.site not in (UNKNOWN, active):
                out.append(f"{_short(record.name)} {record.rtype} points to {record.site}, expected {active}"
                           + (f" at epoch {epoch}" if epoch is not None else ""))
    if epoch is not None:
        got = state.epoch
        name = _short(state.epoch_name)
        if got.text is None and epoch > 0:
            out.append(f"epoch record {name} is missing, expected epoch {epoch}")
        elif got.text is not None and got.number < epoch:
            out.append(f"epoch record {name} says epoch {got.number}, behind the engine's {epoch}")
        elif got.text is not None and got.number > epoch:
            out.append(f"epoch record {name} says epoch {got.number} ({got.text!r}), ahead of the engine's "
                       f"{epoch}, and the records are not that move's")
        elif got.text is not None and seen is not None and got.text != seen:
            out.append(f"epoch record {name} rewritten at epoch {epoch}: {got.text!r}, the engine saw {seen!r}")
        if (got.text is not None and got.number == epoch and active is not None and got.site is not None
                and got.site != active):
            out.append(f"epoch record {name} names {got.site} at epoch {epoch}, expected {active}")
    return Drift(tuple(dict.fromkeys(out)))
