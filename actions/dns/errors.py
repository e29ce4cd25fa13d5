"""What can go wrong with a DNS read or shift, as one small tree::

    DnsError                    anything this package raises on purpose
    ├── DnsConflict             the records or epoch are not what the caller read: someone else won;
    │                           carries plain data about what is there now (``found``, ``epoch``,
    │                           ``site``, ``op``) and what was expected (``expected``)
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


class DnsError(Exception):
    """Base of every error raised by the DNS providers."""


class DnsConflict(DnsError):
    """The conditional shift lost: the zone is not in the state the caller read.

    Plain data only (this module imports nothing of the package): ``found`` and ``expected`` are the
    one-line descriptions of the state read back and of the state the caller read; ``epoch``, ``site``
    and ``op`` are the epoch number, site and writer's token found now. Build one from two states
    with :func:`actions.dns.state.conflict`.
    """

    def __init__(self, message: str, *, found: str, expected: str, epoch: int, site: str,
                 op: str | None = None) -> None:
        super().__init__(message)
        self.found = found
        self.expected = expected
        self.epoch = epoch
        self.site = site
        self.op = op


class DnsAuthError(DnsError):
    """Credentials refused: the message names the key or token and the zone, never the secret."""


class DnsUnavailable(DnsError):
    """The server or API gave no usable answer after the bounded retries."""


class DnsConfigError(DnsError):
    """The zone does not hold what the config describes."""


class DnsRefused(DnsError):
    """The provider's API refused the request (not the credentials): the message carries its error."""
