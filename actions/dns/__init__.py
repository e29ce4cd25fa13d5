"""DNS shifts that cannot race: read a service's records with the epoch beside them, shift them
conditionally in one atomic operation, and verify the result at the authoritative servers.

- :mod:`actions.dns.provider`: the :class:`DnsProvider` protocol and :func:`build_provider`.
- :mod:`actions.dns.rfc2136`: RFC 2136 + TSIG (BIND, Knot, PowerDNS...), prerequisites and update
  in one message.
- :mod:`actions.dns.cloudflare`: Cloudflare's SDK, compare-and-swap through one batch.
- cloud providers on the shared compare-and-set skeleton :mod:`actions.dns.cas`:
  :mod:`~actions.dns.cloud_dns` (one change, exact deletions, polled until done),
  :mod:`~actions.dns.azure_dns` (record sets under If-Match), :mod:`~actions.dns.traffic_manager`
  (priority swap or enable/disable under If-Match), :mod:`~actions.dns.route53` (DELETE exact +
  CREATE in one batch, until INSYNC), :mod:`~actions.dns.cloudflare_lb` (pool order + epoch in one PATCH).
- :mod:`actions.dns.propagation`: each provider type's worst-case propagation (``propagation_worst_s``).
- :mod:`actions.dns.verify`: polling every authoritative nameserver (and resolvers) after a shift.
- :mod:`actions.dns.state`: the pure state and epoch-record format; :mod:`actions.dns.errors`: the
  error tree (``DnsError`` > ``DnsConflict``, ``DnsAuthError``, ``DnsUnavailable``, ``DnsConfigError``, ``DnsRefused``).

Typical runbook use::

    provider = build_provider(service.dns, "shop")
    state = await provider.read()
    try:   # the epoch must be exactly the one read plus one; op: this operation's token (optional)
        state = await provider.shift(state, "azure", state.epoch.number + 1, op=operation_id)
    except DnsConflict as lost:       # someone else moved it first: stand down
        ...
    except DnsUnavailable:            # no answer; retrying with the same state, epoch and op is safe:
        ...                           # finding our own write is success, not a conflict
    verification = await build_verifier(service.dns).verify(state)   # .ok, .message, .checks
"""

from actions.dns.errors import DnsAuthError, DnsConfigError, DnsConflict, DnsError, DnsRefused, DnsUnavailable
from actions.dns.propagation import PROPAGATION, propagation_worst_s
from actions.dns.provider import DnsProvider, build_provider, build_verifier
from actions.dns.state import DnsState, Epoch, RecordState
from actions.dns.verify import ServerCheck, Verification, Verifier

__all__ = [
    "PROPAGATION",
    "DnsAuthError",
    "DnsConfigError",
    "DnsConflict",
    "DnsError",
    "DnsProvider",
    "DnsRefused",
    "DnsState",
    "DnsUnavailable",
    "Epoch",
    "RecordState",
    "ServerCheck",
    "Verification",
    "Verifier",
    "build_provider",
    "build_verifier",
    "propagation_worst_s",
]
