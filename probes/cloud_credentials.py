"""Credential builders for the cloud probes: GCP (ADC, service-account file, workload identity
federation) and Azure (DefaultAzureCredential, workload identity, client secret).

Builders read files and environment but send nothing; tokens are fetched by the SDKs on first use.
Failures raise :class:`~probes.cloud_signal.CredentialError` whose message names the kind and the
file, never a key or a secret. SDK imports are lazy: this module loads without the extras.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from engine.config.cloud import (
    AzureClientSecret,
    AzureCredentials,
    AzureDefault,
    AzureWorkloadIdentity,
    GcpAdc,
    GcpCredentials,
    GcpExternalAccount,
    GcpServiceAccountFile,
    plain_http_url_error,
)
from probes.cloud_signal import CredentialError

MONITORING_READ_SCOPE = "https://www.googleapis.com/auth/monitoring.read"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
_IMPERSONATION_URL = ("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
                      "{email}:generateAccessToken")


def external_account_info(spec: GcpExternalAccount) -> dict[str, Any]:
    """The ``external_account`` JSON for an inline federation spec (the subject token is a file)."""
    info: dict[str, Any] = {
        "type": "external_account",
        "audience": spec.audience,
        "subject_token_type": JWT_TOKEN_TYPE,
        "token_url": spec.token_url,
        "credential_source": {"file": spec.token_file},
    }
    if spec.service_account:
        info["service_account_impersonation_url"] = _IMPERSONATION_URL.format(email=spec.service_account)
    return info


def gcp_credentials(spec: GcpCredentials) -> Any:
    """Build ``google.auth`` credentials scoped to Monitoring read. May read files: call off-loop."""
    import google.auth
    import google.auth.exceptions

    scopes = [MONITORING_READ_SCOPE]
    try:
        if isinstance(spec, GcpAdc):
            credentials, _project = google.auth.default(scopes=scopes)
            return credentials
        if isinstance(spec, GcpServiceAccountFile):
            from google.oauth2 import service_account

            return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(Path(spec.path).expanduser()), scopes=scopes)
        if isinstance(spec, GcpExternalAccount):
            from google.auth import identity_pool

            if spec.config_file is not None:
                info = _read_external_account(spec.config_file)
            else:
                info = external_account_info(spec)
            return identity_pool.Credentials.from_info(info, scopes=scopes)  # type: ignore[no-untyped-call]
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise CredentialError(f"no GCP credentials for {spec.type} ({type(exc).__name__})") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CredentialError(f"cannot read GCP {spec.type} file: {reason}") from None
    except (ValueError, KeyError, TypeError) as exc:
        # messages from google.auth name fields, never key material; keep only the exception type
        raise CredentialError(f"invalid GCP {spec.type} credentials ({type(exc).__name__})") from None
    raise CredentialError(f"unknown GCP credential kind {spec.type!r}")


def _read_external_account(path: str) -> dict[str, Any]:
    try:
        info = json.loads(Path(path).expanduser().read_text())
    except json.JSONDecodeError:
        raise CredentialError(f"external_account config {path} is not JSON") from None
    if not isinstance(info, dict) or info.get("type") != "external_account":
        raise CredentialError(f"{path} is not an external_account config (type: external_account)")
    if "credential_source" not in info:
        raise CredentialError(f"{path} has no credential_source")
    # the same rule as an inline token_url: tokens travel over plain http only to a loopback host
    for field in ("token_url", "service_account_impersonation_url"):
        url = info.get(field)
        problem = plain_http_url_error(str(url)) if url is not None else None
        if problem is not None:
            raise CredentialError(f"{path}: {field} {problem}")
    return info


# token requests get one retry, not azure-core's default three with backoff: the probe timeout
# (seconds) must cover a failed token fetch, and the next check tries again anyway
_IDENTITY_OPTIONS: dict[str, Any] = {"retry_total": 1, "retry_backoff_factor": 0.2}

_WORKLOAD_ENV = (("tenant_id", "AZURE_TENANT_ID"), ("client_id", "AZURE_CLIENT_ID"),
                 ("token_file", "AZURE_FEDERATED_TOKEN_FILE"))


def _require_workload_identity(spec: AzureWorkloadIdentity) -> None:
    missing = [f"{field} (or ${env})" for field, env in _WORKLOAD_ENV
               if not getattr(spec, field) and not os.environ.get(env)]
    if missing:
        raise CredentialError(f"azure workload_identity credentials: missing {', '.join(missing)}")


def azure_credential(spec: AzureCredentials) -> Any:
    """Build an async ``azure.identity`` credential; the caller closes it."""
    from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential, WorkloadIdentityCredential

    try:
        if isinstance(spec, AzureDefault):
            return DefaultAzureCredential(**_IDENTITY_OPTIONS)
        if isinstance(spec, AzureWorkloadIdentity):
            _require_workload_identity(spec)
            return WorkloadIdentityCredential(tenant_id=spec.tenant_id, client_id=spec.client_id,
                                              token_file_path=spec.token_file, **_IDENTITY_OPTIONS)
        if isinstance(spec, AzureClientSecret):
            extra = {"authority": spec.authority} if spec.authority else {}
            extra.update(_IDENTITY_OPTIONS)
            return ClientSecretCredential(spec.tenant_id, spec.client_id,
                                          spec.secret.get_secret_value(), **extra)
    except ValueError as exc:
        # azure-identity names the missing argument or variable here; it never echoes a secret
        raise CredentialError(f"azure {spec.type} credentials: {str(exc)[:200]}") from None
    raise CredentialError(f"unknown Azure credential kind {spec.type!r}")
