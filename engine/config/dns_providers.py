"""Settings of the cloud traffic providers (issue 21): ``cloud_dns``, ``azure_dns``, ``traffic_manager``,
``route53`` and ``cloudflare_lb``. :mod:`engine.config.dns` puts them in the ``provider.type`` union.

Each provider's SDK is an optional extra; a config naming a provider whose SDK is missing is refused
with the install command (the check runs in ``check-config``, so a typo never waits for a failover).
Traffic Manager and Cloudflare Load Balancing route one name: their ``dns.records`` hold exactly that
name, its values per site being what the provider answers for the site's endpoint or pool (the
verifier asks the authoritative servers for them after a move).
"""

from __future__ import annotations

import importlib.util
import re
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from engine.config.base import Duration, Model, Secret, format_duration, rule_error
from engine.config.cloud import AzureCredentials, AzureDefault, GcpAdc, GcpCredentials

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_AZURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._()-]{0,89}$")
_GCP_ZONE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
INSTALL = {
    "cloud_dns": ("google.cloud.dns", "pip install 'failover-engine[cloud-dns]'"),
    "azure_dns": ("azure.mgmt.dns", "pip install 'failover-engine[azure-dns]'"),
    "traffic_manager": ("azure.mgmt.trafficmanager", "pip install 'failover-engine[traffic-manager]'"),
    "route53": ("boto3", "pip install 'failover-engine[route53]'"),
    "cloudflare_lb": ("cloudflare", "pip install 'failover-engine[cloudflare]'"),
}


def zone_name(value: str) -> str:
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"'{value}' is not a zone name")
    return value.rstrip(".").lower()


def _url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/") if value else value


def _installed(kind: str) -> None:
    module, hint = INSTALL[kind]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        found = False
    if not found:
        raise rule_error("type", f"the {kind} provider needs its SDK: {hint}")


class _Cloud(Model):
    """What every cloud provider shares: request deadline, tries, and a test endpoint."""

    zone: str = Field(description="the DNS zone that holds the records, e.g. example.com")
    timeout: Duration = Field(10.0, description="deadline of one request")
    attempts: int = Field(3, ge=1, le=10, description="tries per request on 429, 5xx or lost connection")
    change_timeout: Duration = Field(120.0, description="give up waiting for an accepted change to apply")
    poll_interval: Duration = Field(1.0, description="pause between two reads of a change's status")

    _zone = field_validator("zone")(classmethod(lambda cls, v: zone_name(v)))

    @model_validator(mode="after")
    def _times(self) -> Self:
        if self.timeout <= 0:
            raise rule_error("timeout", "must be more than 0s")
        if self.poll_interval <= 0 or self.poll_interval >= self.change_timeout:
            raise rule_error("poll_interval", f"must be more than 0s and less than change_timeout "
                                              f"({format_duration(self.change_timeout)})")
        return self


class CloudDnsConfig(_Cloud):
    """Google Cloud DNS through google-cloud-dns (extra ``[cloud-dns]``)."""

    type: Literal["cloud_dns"]
    project: str = Field(min_length=1, description="the GCP project id that owns the managed zone")
    managed_zone: str = Field(description="the managed zone's resource name (not its DNS name), e.g. shop-zone")
    credentials: GcpCredentials = Field(default_factory=lambda: GcpAdc(type="adc"),
                                        description="adc (default), service_account_file or external_account")
    api_endpoint: str | None = Field(None, description="API root, e.g. http://127.0.0.1:8080 (tests only)")

    _endpoint = field_validator("api_endpoint")(classmethod(lambda cls, v: _url(v)))

    @field_validator("managed_zone")
    @classmethod
    def _managed(cls, value: str) -> str:
        if not _GCP_ZONE.match(value):
            raise ValueError(f"'{value}' is not a managed zone name (lower case letters, digits, '-')")
        return value

    @model_validator(mode="after")
    def _sdk(self) -> Self:
        _installed("cloud_dns")
        return self


class AzureArmConfig(_Cloud):
    """Azure Resource Manager: subscription, resource group and a service principal (or the default chain)."""

    subscription_id: str = Field(min_length=1)
    resource_group: str = Field(description="the resource group that holds the zone or profile")
    credentials: AzureCredentials = Field(default_factory=lambda: AzureDefault(type="default"),
                                          description="default, workload_identity or client_secret")
    base_url: str | None = Field(None, description="ARM root, e.g. http://127.0.0.1:8080 (tests only)")

    _endpoint = field_validator("base_url")(classmethod(lambda cls, v: _url(v)))

    @field_validator("resource_group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not _AZURE_NAME.match(value):
            raise ValueError(f"'{value}' is not a resource group name")
        return value


class AzureDnsConfig(AzureArmConfig):
    """Azure DNS through azure-mgmt-dns (extra ``[azure-dns]``): record sets updated under ``If-Match``."""

    type: Literal["azure_dns"]

    @model_validator(mode="after")
    def _sdk(self) -> Self:
        _installed("azure_dns")
        return self


class TrafficManagerConfig(AzureArmConfig):
    """Azure Traffic Manager through azure-mgmt-trafficmanager (extra ``[traffic-manager]``).

    ``mode: priority`` moves traffic by swapping the endpoints' priorities (the target's endpoint
    gets priority 1); ``mode: enable`` enables the target's endpoint and disables the others.
    """

    type: Literal["traffic_manager"]
    zone: str = Field("trafficmanager.net", description="where the profile's DNS name lives")
    profile: str = Field(description="the Traffic Manager profile's resource name")
    endpoints: dict[str, str] = Field(description="endpoint name per site, e.g. {gcp: gcp-ep, azure: azure-ep}")
    mode: Literal["priority", "enable"] = "priority"

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        if not _AZURE_NAME.match(value):
            raise ValueError(f"'{value}' is not a profile name")
        return value

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) < 2:
            raise ValueError("needs the endpoints of at least two sites")
        if len(set(value.values())) != len(value):
            raise ValueError("each site needs its own endpoint")
        return value

    @model_validator(mode="after")
    def _sdk(self) -> Self:
        _installed("traffic_manager")
        return self


class Route53Config(_Cloud):
    """Amazon Route 53 through boto3 (extra ``[route53]``): one change batch, DELETE exact + CREATE."""

    type: Literal["route53"]
    hosted_zone_id: str = Field(pattern=r"^(/hostedzone/)?[A-Z0-9]{1,32}$", description="e.g. Z0123456789ABC")
    region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    access_key_id: Secret | None = Field(None, description="without it boto3's default credential chain is used")
    secret_access_key: Secret | None = None
    endpoint_url: str | None = Field(None, description="API root, e.g. http://127.0.0.1:5000 (tests only)")
    poll_interval: Duration = Field(2.0, description="pause between two GetChange calls")

    _endpoint = field_validator("endpoint_url")(classmethod(lambda cls, v: _url(v)))

    @model_validator(mode="after")
    def _keys(self) -> Self:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise rule_error("secret_access_key" if self.secret_access_key is None else "access_key_id",
                             "access_key_id and secret_access_key go together")
        _installed("route53")
        return self


class CloudflareLbConfig(_Cloud):
    """Cloudflare Load Balancing through the cloudflare SDK (extra ``[cloudflare]``): the load balancer's
    pool order (``default_pools``) and its description (the epoch) change in one PATCH."""

    type: Literal["cloudflare_lb"]
    account_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="the account that owns the pools")
    pools: dict[str, str] = Field(description="pool id per site")
    api_token: Secret = Field(description="API token with Load Balancing edit rights: ${ENV} or file:/path")
    base_url: str | None = Field(None, description="API base including /client/v4 (tests only)")

    _endpoint = field_validator("base_url")(classmethod(lambda cls, v: _url(v)))

    @field_validator("pools")
    @classmethod
    def _pools(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) < 2:
            raise ValueError("needs the pools of at least two sites")
        if len(set(value.values())) != len(value):
            raise ValueError("each site needs its own pool")
        return value

    @model_validator(mode="after")
    def _sdk(self) -> Self:
        _installed("cloudflare_lb")
        return self


ROUTING_PROVIDERS = ("traffic_manager", "cloudflare_lb")  # one routed name, no epoch TXT record
