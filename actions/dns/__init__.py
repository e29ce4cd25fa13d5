"""DNS shifts that cannot race: read a service's records with the epoch beside them, shift them
conditionally in one atomic operation, and verify the result at the authoritative servers.

- :mod:`actions.dns.provider`: the :class:`DnsProvider` protocol and :func:`build_provider`.
- :mod:`actions.dns.rfc2136`: RFC 2136 + TSIG (BIND, Knot, PowerDNS...), prerequisites and update
  in one message.
- :mod:`actions.dns.cloudflare`: Cloudflare's SDK, compare-and-swap through one batch.
- :mod:`actions.dns.verify`: polling every authoritative nameserver (and resolvers) after a shift.
- :mod:`actions.dns.state`: the pure state and epoch-record format; :mod:`actions.dns.errors`: the
  error tree (``DnsError`` > ``DnsConflict``, ``DnsAuthError``, ``DnsUnavailable``, ``DnsConfigError``).

Typical runbook use::

    provider = build_provider(service.dns, "shop")
    state = await provider.read()
    try:
        state = await provider.shift(state, "azure", state.epoch.number + 1)
    except DnsConflict as lost:       # someone else moved it first: stand down
        ...
    verification = await build_verifier(service.dns).verify(state)   # .ok, .message, .checks
"""

from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict, DnsError, DnsUnavailable
from actions.dns.provider import DnsProvider, build_provider, build_verifier
from actions.dns.state import DnsState, Epoch, RecordState
from actions.dns.verify import ServerCheck, Verification, Verifier

__all__ = [
    "DnsAuthError",
    "DnsConfigError",
    "DnsConflict",
    "DnsError",
    "DnsProvider",
    "DnsState",
    "DnsUnavailable",
    "Epoch",
    "RecordState",
    "ServerCheck",
    "Verification",
    "Verifier",
    "build_provider",
    "build_verifier",
]
