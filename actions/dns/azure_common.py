"""What Azure DNS and Traffic Manager share: the credential, the https opt-out for a loopback test
endpoint, and the mapping of azure-core errors onto the DnsError tree (412 is a failed condition)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from actions.dns.cas import ConditionFailed
from actions.dns.errors import DnsAuthError, DnsConfigError, DnsRefused, DnsUnavailable
from engine.config.dns_providers import AzureArmConfig
from probes.cloud_credentials import azure_credential

T = TypeVar("T")
NOT_FOUND = object()


def credential(p: AzureArmConfig) -> Any:
    """The async azure-identity credential of the config (the caller closes it)."""
    try:
        return azure_credential(p.credentials)
    except Exception as exc:  # CredentialError: names the kind, never the secret
        raise DnsAuthError(f"no Azure credentials ({p.credentials.type}): {exc}") from None


def client_options(p: AzureArmConfig) -> dict[str, Any]:
    """Keyword arguments for an ARM management client: endpoint, retries and timeouts."""
    options: dict[str, Any] = {"retry_total": p.attempts - 1, "retry_backoff_factor": 0.5,
                               "connection_timeout": p.timeout, "read_timeout": p.timeout}
    if p.base_url:
        options["base_url"] = p.base_url
    return options


def call_options(p: AzureArmConfig) -> dict[str, Any]:
    """Per-call options: a plain-http test endpoint needs azure-core's bearer policy told so."""
    return {"enforce_https": False} if (p.base_url or "").startswith("http://") else {}


async def arm_call(p: AzureArmConfig, what: str, call: Callable[[], Awaitable[T]], *,
                   missing: str | None = None) -> T | object:
    """Run one SDK call; 412 raises ConditionFailed, 404 returns :data:`NOT_FOUND` when ``missing`` is
    None (else DnsConfigError with that text), the rest maps onto the DnsError tree."""
    from azure.core import exceptions as aexc

    try:
        return await call()
    except aexc.ClientAuthenticationError as exc:
        raise DnsAuthError(f"Azure refused the credentials ({p.credentials.type}) during {what} "
                           f"({getattr(exc, 'status_code', None) or 'no token'})") from None
    except aexc.ResourceNotFoundError:
        if missing is not None:
            raise DnsConfigError(missing) from None
        return NOT_FOUND
    except aexc.HttpResponseError as exc:
        status = exc.status_code or 0
        code = getattr(getattr(exc, "error", None), "code", None) or status
        if status == 412:
            raise ConditionFailed(f"{what}: 412 {code}") from None
        if status == 403:
            raise DnsAuthError(f"Azure denied {what} to the credentials ({p.credentials.type}): {code}") from None
        if status in (408, 429) or status >= 500:
            raise DnsUnavailable(f"{what}: Azure {code} after {p.attempts} "
                                 f"tr{'y' if p.attempts == 1 else 'ies'}") from None
        raise DnsRefused(f"Azure refused the {what} ({status} {code})") from None
    except (aexc.ServiceRequestError, aexc.ServiceResponseError, TimeoutError) as exc:
        raise DnsUnavailable(f"{what}: Azure gave no answer ({type(exc).__name__})") from None
