"""How Azure SDK failures become short reasons: which errors are worth another try, what a failed
token fetch looks like, and the plain-http refusal of azure-core's bearer policy.

Azure's own error body (``{"error": {"code", "message"}}``) gives the code in the reason
(``permission denied (AuthorizationFailed: ...)``); messages are trimmed and never carry a secret.
"""

from __future__ import annotations

import asyncio
from typing import Any

from probes.base import describe_exception
from probes.cloud_signal import CloudProbeError, CredentialError, short_message

_TRANSIENT_STATUS = {408: "timeout", 429: "throttled", 500: "status 500", 502: "status 502",
                     503: "unavailable", 504: "gateway timeout"}


class TokenReporter:
    """Wraps a credential so a failed token fetch reads as ``credentials failed (...)``.

    Without it a token endpoint that is down surfaces as the same ``ServiceRequestError`` as the
    Monitor endpoint being down, and would be retried and reported as ``cannot connect``.
    """

    def __init__(self, credential: Any) -> None:
        self._credential = credential

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        try:
            return await self._credential.get_token(*scopes, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc)
            # azure-identity's messages name the credential and the endpoint, never the secret
            raise CredentialError(
                f"credentials failed ({type(exc).__name__}: {short_message(message, 120)})") from None

    async def close(self) -> None:  # the probe closes the credential it owns itself
        return None


def transient_azure_error(exc: BaseException) -> str | None:
    """The short name of a retryable error (429, 5xx, connection failures), or None."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, ServiceRequestError):
        return None if _refused_plain_http(exc) else "cannot connect"
    if isinstance(exc, ServiceResponseError):
        return "connection dropped"
    if isinstance(exc, HttpResponseError) and exc.status_code in _TRANSIENT_STATUS:
        return _TRANSIENT_STATUS[exc.status_code]
    return None


def _refused_plain_http(exc: BaseException) -> bool:
    """azure-core's bearer policy refuses non-https URLs with a ServiceRequestError before sending."""
    return "non-TLS" in str(exc)


def describe_azure_error(exc: BaseException) -> str:
    """A short reason for an error from azure-core, the Monitor clients or azure-identity."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError

    if isinstance(exc, CloudProbeError):
        return str(exc)
    if isinstance(exc, HttpResponseError):
        error = getattr(exc, "error", None)
        # Azure's body is parsed as is: code and message may be any JSON value, not only strings
        code = short_message(getattr(error, "code", None), 60) or type(exc).__name__
        message = getattr(error, "message", None) or exc.reason or ""
        detail = f"({code}: {short_message(message)})"
        prefix = {401: "unauthenticated", 403: "permission denied", 404: "not found",
                  400: "invalid query"}.get(exc.status_code or 0, f"status {exc.status_code}")
        return f"{prefix} {detail}"
    if isinstance(exc, ServiceRequestError):
        if _refused_plain_http(exc):
            return "refused to send a token over plain http (the endpoint must be https://)"
        return f"cannot connect ({type(exc).__name__})"
    return describe_exception(exc)
