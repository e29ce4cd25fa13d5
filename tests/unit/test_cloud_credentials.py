"""Credential builders: the right credential per config kind, no network, and no secret in errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config.cloud import (
    AzureClientSecret,
    AzureCredentials,
    AzureDefault,
    AzureWorkloadIdentity,
    GcpExternalAccount,
    GcpServiceAccountFile,
)
from probes.cloud_credentials import (
    MONITORING_READ_SCOPE,
    azure_credential,
    external_account_info,
    gcp_credentials,
)
from probes.cloud_signal import CredentialError

AUDIENCE = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/azure/providers/entra"


def test_inline_federation_builds_the_external_account_json(tmp_path: Path) -> None:
    """Audience, the Azure token file and an impersonated account become a standard external_account."""
    spec = GcpExternalAccount(type="external_account", audience=AUDIENCE, token_file=str(tmp_path / "t"),
                              service_account="probe@p1.iam.gserviceaccount.com")
    info = external_account_info(spec)
    assert info["type"] == "external_account"
    assert info["subject_token_type"] == "urn:ietf:params:oauth:token-type:jwt"
    assert info["credential_source"] == {"file": str(tmp_path / "t")}
    assert info["token_url"] == "https://sts.googleapis.com/v1/token"
    assert info["service_account_impersonation_url"].endswith(
        "/serviceAccounts/probe@p1.iam.gserviceaccount.com:generateAccessToken")


def test_federation_credentials_are_scoped_for_monitoring_read(tmp_path: Path) -> None:
    """The federated credential asks for the Monitoring read scope and reads nothing yet."""
    spec = GcpExternalAccount(type="external_account", audience=AUDIENCE, token_file=str(tmp_path / "absent"))
    credentials = gcp_credentials(spec)
    assert type(credentials).__name__ == "Credentials"
    assert list(credentials.scopes) == [MONITORING_READ_SCOPE]
    assert credentials.token is None


def test_external_account_config_file_must_be_external_account(tmp_path: Path) -> None:
    """A config_file of another type is refused with a message naming the file."""
    path = tmp_path / "wif.json"
    path.write_text(json.dumps({"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----x"}))
    with pytest.raises(CredentialError) as info:
        gcp_credentials(GcpExternalAccount(type="external_account", config_file=str(path)))
    assert str(info.value) == f"{path} is not an external_account config (type: external_account)"


def test_broken_service_account_file_never_echoes_the_key(tmp_path: Path) -> None:
    """A malformed key file fails with the kind and the error type, not its content."""
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "private_key": "TOP-SECRET-KEY-MATERIAL",
                                "client_email": "x@p1.iam.gserviceaccount.com", "token_uri": "https://t"}))
    with pytest.raises(CredentialError) as info:
        gcp_credentials(GcpServiceAccountFile(type="service_account_file", path=str(path)))
    assert "TOP-SECRET" not in str(info.value)
    assert str(info.value).startswith("invalid GCP service_account_file credentials (")


async def test_azure_kinds_build_the_matching_credential(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """default, workload_identity and client_secret build the azure-identity credential of that name."""
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    token = tmp_path / "azure-identity-token"
    token.write_text("jwt")
    specs: list[tuple[AzureCredentials, str]] = [
        (AzureDefault(type="default"), "DefaultAzureCredential"),
        (AzureWorkloadIdentity(type="workload_identity", tenant_id="t", client_id="c", token_file=str(token)),
         "WorkloadIdentityCredential"),
        (AzureClientSecret.model_validate({"type": "client_secret", "tenant_id": "t", "client_id": "c",
                                           "secret": "very-secret-value"}), "ClientSecretCredential"),
    ]
    for spec, expected in specs:
        credential = azure_credential(spec)
        try:
            assert type(credential).__name__ == expected
        finally:
            await credential.close()


def test_client_secret_credential_gets_the_plain_secret_and_bounded_retries(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The credential is given the secret's value (not the masked form), the authority and one retry."""
    import azure.identity.aio

    seen: list[tuple[tuple[object, ...], dict[str, object]]] = []

    class Recorder:
        def __init__(self, *args: object, **kwargs: object) -> None:
            seen.append((args, kwargs))

    monkeypatch.setattr(azure.identity.aio, "ClientSecretCredential", Recorder)
    spec = AzureClientSecret.model_validate({"type": "client_secret", "tenant_id": "t", "client_id": "c",
                                             "secret": "very-secret-value",
                                             "authority": "login.microsoftonline.us"})
    assert isinstance(azure_credential(spec), Recorder)
    assert seen == [(("t", "c", "very-secret-value"),
                     {"authority": "login.microsoftonline.us", "retry_total": 1, "retry_backoff_factor": 0.2})]


@pytest.mark.parametrize(("field", "url"), [
    ("token_url", "http://sts.example.com/v1/token"),
    ("service_account_impersonation_url", "http://iam.example.com/v1/sa:generateAccessToken"),
])
def test_external_account_config_file_refuses_plain_http_to_a_remote_host(
        tmp_path: Path, field: str, url: str) -> None:
    """A config_file sending the subject token (or the STS token) over plain http to a remote host is refused."""
    path = tmp_path / "wif.json"
    info = {"type": "external_account", "audience": AUDIENCE, "subject_token_type": "urn:x",
            "token_url": "https://sts.googleapis.com/v1/token", "credential_source": {"file": "/t"}}
    info[field] = url
    path.write_text(json.dumps(info))
    with pytest.raises(CredentialError) as info_error:
        gcp_credentials(GcpExternalAccount(type="external_account", config_file=str(path)))
    assert str(info_error.value) == (
        f"{path}: {field} must be https:// (plain http only to a loopback host: 127.0.0.0/8, ::1, localhost)")


def test_external_account_config_file_allows_http_to_loopback(tmp_path: Path) -> None:
    """A local token server (http to 127.0.0.1) is accepted from a config_file, as in tests."""
    path = tmp_path / "wif.json"
    path.write_text(json.dumps({"type": "external_account", "audience": AUDIENCE, "subject_token_type": "urn:x",
                                "token_url": "http://127.0.0.1:9/v1/token", "credential_source": {"file": "/t"}}))
    credentials = gcp_credentials(GcpExternalAccount(type="external_account", config_file=str(path)))
    assert credentials.token is None


def test_workload_identity_without_tenant_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A workload identity with nothing configured or in the environment says which value is missing."""
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CredentialError) as info:
        azure_credential(AzureWorkloadIdentity(type="workload_identity"))
    assert str(info.value).startswith("azure workload_identity credentials: ")
    assert str(info.value).endswith(
        "missing tenant_id (or $AZURE_TENANT_ID), client_id (or $AZURE_CLIENT_ID), "
        "token_file (or $AZURE_FEDERATED_TOKEN_FILE)")
