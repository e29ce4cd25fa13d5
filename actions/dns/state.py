"""What a read of a service's DNS returns, and the epoch record's text format (pure, no I/O).

A :class:`DnsState` is the current values of every configured record, which site each points to
(or ``unknown``), and the epoch stored beside them in a TXT record whose text is
``epoch=N site=S op=T``. ``op`` is the writer's token: it tells a retried shift that found its
own write ("the reply was lost, but it was applied") apart from a rival's write. A caller that
retries an operation (perhaps from a new provider) passes the same ``op`` again; without one, a
provider derives it from a per-provider salt and (service, new epoch, target) with
:func:`derive_op`, so the same provider retrying the same shift recognises itself while two
providers racing for the same target never share a token.

:func:`planned_state` is what a shift writes; providers turn it into one atomic change.
:func:`is_applied` says whether a state read back is that planned state (our own write).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from actions.dns.errors import DnsConfigError, DnsConflict
from engine.config.dns import RecordConfig

UNKNOWN = "unknown"
MIXED = "mixed"


@dataclass(frozen=True)
class RecordState:
    """One name as read: its canonical values (sorted), TTL and the site they match."""

    name: str  # absolute, lower case, trailing dot
    rtype: str
    ttl: int
    values: tuple[str, ...]
    site: str
    refs: tuple[str, ...] = field(default=(), compare=False)  # provider ids (Cloudflare record ids)


@dataclass(frozen=True)
class Epoch:
    """The epoch record: number (0 when absent), the site it names and the writer's token."""

    number: int
    site: str | None = None
    op: str | None = None
    text: str | None = None  # the exact TXT text read; None when the record does not exist
    ref: str | None = field(default=None, compare=False)  # Cloudflare: record id; RFC 2136: rdata text


@dataclass(frozen=True)
class DnsState:
    """A service's records and epoch at one moment."""

    zone: str
    records: tuple[RecordState, ...]
    epoch: Epoch
    epoch_name: str

    @property
    def site(self) -> str:
        """The site every record points to; ``unknown`` or ``mixed`` when they do not agree on one."""
        sites = {r.site for r in self.records}
        if len(sites) == 1:
            return sites.pop()
        return UNKNOWN if sites == {UNKNOWN} else MIXED

    def describe(self) -> str:
        """One line for messages: ``epoch 3, azure (app A 198.51.100.10; api AAAA 2001:db8:1::10)``."""
        parts = "; ".join(f"{r.name.rstrip('.')} {r.rtype} {','.join(r.values) or '(none)'}"
                          for r in self.records)
        return f"epoch {self.epoch.number}, {self.site} ({parts})"


def conflict(zone: str, expected: DnsState, current: DnsState) -> DnsConflict:
    """The DnsConflict for a zone that is ``current`` where the caller read ``expected``."""
    return DnsConflict(f"zone {zone} changed since it was read: expected {expected.describe()}, "
                       f"found {current.describe()}", found=current.describe(), expected=expected.describe(),
                       epoch=current.epoch.number, site=current.site, op=current.epoch.op)


def format_epoch(number: int, site: str, op: str) -> str:
    return f"epoch={number} site={site} op={op}"


def parse_epoch(text: str | None, name: str) -> Epoch:
    """Parse the epoch TXT text; ``None`` (no record) is epoch 0. Raises DnsConfigError if unreadable."""
    if text is None:
        return Epoch(0)
    fields: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    raw = fields.get("epoch", "")
    if not raw.isdigit():
        raise DnsConfigError(f"epoch record {name.rstrip('.')} holds {text[:80]!r}, "
                             f"not 'epoch=N site=S'")
    return Epoch(int(raw), fields.get("site"), fields.get("op"), text)


def new_op() -> str:
    return secrets.token_hex(6)


def derive_op(salt: str, service: str, new_epoch: int, target_site: str) -> str:
    """The op token of a shift: the same for the same (salt, service, epoch, target), else unrelated."""
    digest = hashlib.sha256(f"{salt}\0{service}\0{new_epoch}\0{target_site}".encode()).hexdigest()
    return digest[:12]


def is_applied(current: DnsState, planned: DnsState) -> bool:
    """True when ``current`` (a read) is ``planned``: same epoch, site, op and record values.

    TTLs and provider ids are not compared: the op token is ours, and the values are what matter.
    """
    return (current.epoch.number == planned.epoch.number and current.epoch.op == planned.epoch.op
            and current.epoch.site == planned.epoch.site
            and [(r.name, r.rtype, r.values) for r in current.records]
            == [(r.name, r.rtype, r.values) for r in planned.records])


def site_of(values: Sequence[str], targets: Mapping[str, Sequence[str]]) -> str:
    """The site whose configured values equal ``values`` exactly, else ``unknown``."""
    wanted = sorted(values)
    for site, site_values in targets.items():
        if sorted(site_values) == wanted:
            return site
    return UNKNOWN


def planned_state(expected: DnsState, configs: Mapping[str, RecordConfig], target_site: str,
                  new_epoch: int, op: str) -> DnsState:
    """The state a shift from ``expected`` to ``target_site`` at ``new_epoch`` writes.

    ``configs`` maps absolute record names to their config. Raises ValueError for a caller error
    (unknown site, a new epoch that is not exactly the epoch read plus one).
    """
    if new_epoch != expected.epoch.number + 1:
        raise ValueError(f"new epoch {new_epoch} must be exactly one more than the epoch read "
                         f"({expected.epoch.number})")
    return target_state(expected, configs, target_site, new_epoch, op)


def resumed_state(expected: DnsState, configs: Mapping[str, RecordConfig], target_site: str,
                  new_epoch: int, op: str) -> DnsState | None:
    """The planned state if ``expected`` already carries epoch ``new_epoch`` written by ``op``, else None.

    That is a caller retrying a shift that was applied (it read its own write back): the provider
    confirms the zone still holds it and reports success instead of a conflict or a caller error.
    """
    if expected.epoch.number != new_epoch or expected.epoch.op != op:
        return None
    return target_state(expected, configs, target_site, new_epoch, op)


def target_state(expected: DnsState, configs: Mapping[str, RecordConfig], target_site: str,
                 new_epoch: int, op: str) -> DnsState:
    """``expected``'s records at ``target_site`` with epoch ``new_epoch`` by ``op`` (no epoch check)."""
    records = []
    for record in expected.records:
        config = configs[record.name]
        if target_site not in config.targets:
            raise ValueError(f"'{target_site}' is not a site of {record.name} ({sorted(config.targets)})")
        records.append(replace(record, ttl=int(config.ttl), values=tuple(config.targets[target_site]),
                               site=target_site, refs=()))
    text = format_epoch(new_epoch, target_site, op)
    return DnsState(expected.zone, tuple(records), Epoch(new_epoch, target_site, op, text),
                    expected.epoch_name)
