"""What can go wrong with a DNS read or shift, as one small tree::

    DnsError                    anything this package raises on purpose
    ├── DnsConflict             the records or epoch are not what the caller read: someone else won;
    │                           carries ``current`` (the state read back) and ``expected``
    ├── DnsAuthError            the server or API refused our credentials (names key/token and zone,
    │                           never the secret)
    ├── DnsUnavailable          no usable answer after bounded retries (timeout, refused, 5xx, 429),
    │                           or the nameservers of the zone could not be discovered
    ├── DnsConfigError          the zone or records do not match the config: unknown zone, record
    │                           missing, CNAME where A was expected, unreadable epoch record
    └── DnsRefused              the API refused a request for another reason (a 4xx that is not
                                about credentials), named with the API's own error

A runbook treats :class:`DnsConflict` as "stand down", :class:`DnsUnavailable` as "retry later",
and the others as "an operator must fix something".
"""

from __future__ import annotations

from typing import Protocol


class ZoneState(Protocol):
    """What a conflict carries of the zone (an :class:`actions.dns.state.DnsState`): plain data that describes
    itself. A protocol, so that this module stays at the bottom of the DNS package and imports nothing."""

    @property
    def site(self) -> str: ...

    def describe(self) -> str: ...


class DnsError(Exception):
    """Base of every error raised by the DNS providers."""


class DnsConflict(DnsError):
    """The conditional shift lost: the zone is not in the state the caller read."""

    def __init__(self, message: str, *, current: ZoneState, expected: ZoneState) -> None:
        super().__init__(message)
        self.current = current
        self.expected = expected


class DnsAuthError(DnsError):
    """Credentials refused: the message names the key or token and the zone, never the secret."""


class DnsUnavailable(DnsError):
    """The server or API gave no usable answer after the bounded retries."""


class DnsConfigError(DnsError):
    """The zone does not hold what the config describes."""


class DnsRefused(DnsError):
    """The provider's API refused the request (not the credentials): the message carries its error."""
