"""The compare-and-set skeleton the cloud providers share (Cloud DNS, Azure DNS, Traffic Manager,
Route 53, Cloudflare LB): :meth:`CasProvider.shift`, :meth:`~CasProvider.retime` and
:meth:`~CasProvider.validate` over two provider-specific parts:

- ``read(records)`` -> :class:`~actions.dns.state.DnsState`, with the provider's version tokens
  (ETags, exact record data) in ``RecordState.refs`` / ``Epoch.ref``;
- ``_write(expected, planned)``: ONE conditional change from ``expected`` to ``planned`` that the
  provider itself refuses when the zone is not ``expected`` any more (it raises
  :class:`ConditionFailed`), and that returns only once the provider reports the change applied
  (Cloud DNS ``done``, Route 53 ``INSYNC``).

The epoch travels exactly as with RFC 2136 and Cloudflare (``epoch=N site=S op=T``, see
:mod:`actions.dns.state`): in a TXT record beside the records for the DNS providers, in a profile
tag (Traffic Manager) or the load balancer's description (Cloudflare LB), always in the same
conditional write as the records, so a stale executor is refused by the provider. A refused write
is read back: our own op token in place is success (a retried or lost reply), anything else is
:class:`~actions.dns.errors.DnsConflict` with nothing changed by us.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Generic, TypeVar

from actions.dns.errors import DnsError, DnsRefused, DnsUnavailable
from actions.dns.state import (
    DnsState,
    conflict,
    derive_op,
    is_applied,
    new_op,
    planned_state,
    resumed_state,
)
from engine.config.dns import DnsConfig, RecordConfig


class ConditionFailed(Exception):
    """The provider refused a conditional write: its precondition (ETag, exact old data) did not hold."""


class ChangePending(DnsUnavailable):
    """The provider accepted the change but did not report it applied within ``change_timeout``;
    retrying the same shift (same op) finds it and succeeds."""


P = TypeVar("P")


class CasProvider(Generic[P]):
    """Base of the cloud providers: the shift protocol over ``read`` and one conditional ``_write``.

    The shared constructor checks that ``config.provider`` is the provider's own config class (``config_type``,
    also ``P``: it is ``self._p``) and keeps an injected SDK ``client`` (None: built on first use)."""

    kind = "provider"

    def __init__(self, config: DnsConfig, service: str, config_type: type[P], *, client: Any = None) -> None:
        provider = config.provider
        if not isinstance(provider, config_type):
            raise TypeError(f"{type(self).__name__} needs a {config_type.__name__}, not {type(provider).__name__}")
        self._p: P = provider
        self._client: Any = client
        self._config = config
        self._service = service
        self._salt = new_op()
        self.zone = config.provider.zone
        self.epoch_name = config.epoch_fqdn(service)
        self._configs = {config.fqdn(r.name): r for r in config.records}

    # -- provider parts ------------------------------------------------------------------------
    async def read(self, records: Sequence[RecordConfig] | None = None) -> DnsState:
        raise NotImplementedError

    async def _write(self, expected: DnsState, planned: DnsState) -> None:
        raise NotImplementedError

    async def _prove_access(self) -> str:
        """Prove credentials without writing; a sentence of what was proven (default: a read)."""
        return "credentials accepted for reading"

    async def aclose(self) -> None:
        return None

    # -- shared protocol -----------------------------------------------------------------------
    def _chosen(self, state: DnsState) -> list[RecordConfig]:
        return [self._configs[r.name] for r in state.records]

    def _conflict(self, expected: DnsState, current: DnsState) -> DnsError:
        return conflict(self.zone, expected, current)

    async def _fresh(self, expected: DnsState) -> DnsState:
        """``expected`` with the version tokens of a fresh read, or a conflict when the zone moved."""
        current = await self.read(self._chosen(expected))
        if current != expected:
            raise self._conflict(expected, current)
        return current

    async def shift(self, expected: DnsState, target_site: str, new_epoch: int,
                    *, op: str | None = None) -> DnsState:
        """One conditional change from ``expected`` to ``target_site`` at ``new_epoch`` (see the module)."""
        op = op or derive_op(self._salt, self._service, new_epoch, target_site)
        chosen = self._chosen(expected)
        resumed = resumed_state(expected, self._configs, target_site, new_epoch, op)
        if resumed is not None:  # the caller already read our own write: confirm it is still there
            current = await self.read(chosen)
            if is_applied(current, resumed):
                return current
            raise self._conflict(expected, current)
        planned = planned_state(expected, self._configs, target_site, new_epoch, op)
        await self._conditional(expected, planned, lambda after: is_applied(after, planned))
        return await self._after(planned)

    async def _after(self, planned: DnsState) -> DnsState:
        """The state after our write: a fresh read (with the new version tokens) when it shows the write."""
        try:
            current = await self.read(self._chosen(planned))
        except DnsError:
            return planned
        return current if is_applied(current, planned) else planned

    async def _conditional(self, expected: DnsState, planned: DnsState, ours: object) -> None:
        """Run ``_write``; a refused precondition or a lost answer is decided by one read-back."""
        check = ours if callable(ours) else (lambda _s: False)
        try:
            await self._write(expected, planned)
        except ConditionFailed as refused:
            current = await self.read(self._chosen(expected))
            if check(current):  # our own earlier try was applied
                return
            if current == expected:  # the zone is as read: the change was refused for another reason
                raise DnsRefused(f"{self.kind} refused the change of zone {self.zone} although it is as read: "
                                 f"{refused}; nothing changed") from None
            raise self._conflict(expected, current) from None
        except ChangePending:
            raise
        except DnsUnavailable as lost:  # maybe applied with the answer lost
            try:
                current = await self.read(self._chosen(expected))
            except DnsError:
                raise lost from None
            if check(current):
                return
            raise

    async def retime(self, expected: DnsState, ttls: Mapping[str, int]) -> DnsState:
        """Only the TTLs of ``expected``'s records change, under the same condition as a shift."""
        records = tuple(replace(r, ttl=int(ttls.get(r.name, r.ttl))) for r in expected.records)
        planned = replace(expected, records=records)

        def ours(after: DnsState) -> bool:
            return ([(r.name, r.values, r.ttl) for r in after.records]
                    == [(r.name, r.values, r.ttl) for r in planned.records] and after.epoch == expected.epoch)

        await self._conditional(expected, planned, ours)
        try:
            return await self.read(self._chosen(expected))
        except DnsError:
            return planned

    async def validate(self, expected: DnsState, target_site: str, new_epoch: int) -> str:
        """Prove what can be proven without writing: credentials, and that the zone is still ``expected``."""
        proven = await self._prove_access()
        current = await self.read(self._chosen(expected))
        if current != expected:
            raise self._conflict(expected, current)
        return (f"{self.kind}: {proven}; {current.describe()} is what was read, so a shift to {target_site} "
                f"at epoch {new_epoch} would be accepted (nothing changed)")
