"""The ``dns:`` section of a service: defaults, canonical values and every rule with its error path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.config import ConfigError, parse_config
from engine.config.dns import CLOUDFLARE_INSTALL, DnsConfig, Rfc2136Config, split_server

SITE = {"probes": [{"type": "tcp", "host": "127.0.0.1", "port": 9}]}  # a site needs at least one probe

SECRET = "c9f7Yx3sjV2WmwWgak9XKpWShDjf4jVo1pazIB1qz3A="


def document(dns: dict[str, Any]) -> str:
    return yaml.safe_dump({"instance": {"id": "e1", "site": "gcp"},
                           "services": {"shop": {"active": "gcp", "sites": {"gcp": SITE, "azure": SITE},
                                                 "dns": dns}}}, sort_keys=False)


def rfc2136(**overrides: Any) -> dict[str, Any]:
    dns: dict[str, Any] = {
        "provider": {"type": "rfc2136", "servers": ["127.0.0.1:5353"], "zone": "Example.Test.",
                     "tsig": {"name": "failover-key", "secret": "${TSIG}"}},
        "records": [
            {"name": "app", "type": "A", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}},
            {"name": "www", "type": "CNAME", "ttl": "30s",
             "targets": {"gcp": ["App.GCP.example.net"], "azure": ["app.azure.example.net."]}},
        ],
    }
    dns.update(overrides)
    return dns


def parse(dns: dict[str, Any], env: dict[str, str] | None = None) -> DnsConfig:
    config = parse_config(document(dns), env={"TSIG": SECRET} if env is None else env)
    result = config.services["shop"].dns
    assert result is not None
    return result


def problems(dns: dict[str, Any], env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse(dns, env)
    return [(p.path, p.message) for p in info.value.problems]


def test_defaults_and_canonical_values() -> None:
    """TTL defaults to 60 s, values are canonical, the epoch record defaults to _failover-epoch.<service>."""
    dns = parse(rfc2136())
    assert isinstance(dns.provider, Rfc2136Config)
    assert dns.provider.zone == "example.test" and dns.provider.port == 53
    assert dns.provider.tsig.algorithm == "hmac-sha256"
    assert [r.ttl for r in dns.records] == [60.0, 30.0]
    assert dns.records[1].targets == {"gcp": ["app.gcp.example.net."], "azure": ["app.azure.example.net."]}
    assert dns.epoch_fqdn("shop") == "_failover-epoch.shop.example.test."
    assert dns.fqdn("@") == "example.test." and dns.fqdn("app") == "app.example.test."
    assert dns.verify.deadline == 120.0 and dns.verify.nameservers == []


def test_ipv6_values_are_normalised() -> None:
    """AAAA targets are stored in their compressed form so answers compare equal."""
    records = [{"name": "api", "type": "AAAA",
                "targets": {"gcp": ["2001:0db8:0000::0010"], "azure": ["2001:db8:1::10"]}}]
    assert parse(rfc2136(records=records)).records[0].targets["gcp"] == ["2001:db8::10"]


def test_secret_from_file_is_read_and_never_shown(tmp_path: Path) -> None:
    """A TSIG secret given as file:/path is loaded, and neither repr nor dump shows it."""
    secret_file = tmp_path / "tsig"
    secret_file.write_text(SECRET + "\n")
    dns = parse(rfc2136(provider={"type": "rfc2136", "servers": ["ns1"], "zone": "example.test",
                                  "tsig": {"name": "k", "secret": f"file:{secret_file}"}}))
    assert isinstance(dns.provider, Rfc2136Config)
    assert dns.provider.tsig.secret.get_secret_value() == SECRET
    assert SECRET not in repr(dns) and SECRET not in dns.model_dump_json()


RULES = [
    ({"records": [{"name": "app", "ttl": "1.5s", "targets": {"gcp": ["192.0.2.1"], "azure": ["192.0.2.2"]}}]},
     "records[0].ttl", "must be whole seconds"),
    ({"records": [{"name": "app", "targets": {"gcp": ["not-an-ip"], "azure": ["192.0.2.2"]}}]},
     "records[0].targets.gcp", "a A value must be an IPv4 address"),
    ({"records": [{"name": "app", "type": "AAAA", "targets": {"gcp": ["192.0.2.1"], "azure": ["::1"]}}]},
     "records[0].targets.gcp", "must be an IPv6 address"),
    ({"records": [{"name": "w", "type": "CNAME", "targets": {"gcp": ["a.example", "b.example"],
                                                             "azure": ["c.example"]}}]},
     "records[0].targets.gcp", "a CNAME has exactly one value"),
    ({"records": [{"name": "app", "targets": {"gcp": ["192.0.2.1"], "azure": ["192.0.2.1"]}}]},
     "records[0].targets.azure", "same values as site 'gcp'"),
    ({"records": [{"name": "app", "targets": {"gcp": ["192.0.2.1"]}}]},
     "records[0].targets", "needs the values of at least two sites"),
    ({"records": [{"name": "app", "targets": {"gcp": [], "azure": ["192.0.2.1"]}}]},
     "records[0].targets.gcp", "needs at least one value"),
    ({"records": [{"name": "app", "targets": {"gcp": ["192.0.2.1"], "azure": ["192.0.2.2"]}},
                  {"name": "APP", "targets": {"gcp": ["192.0.2.3"], "azure": ["192.0.2.4"]}}]},
     "records[1].name", "is already records[0]"),
    ({"records": [{"name": "app.other.test.", "targets": {"gcp": ["192.0.2.1"], "azure": ["192.0.2.2"]}}]},
     "records[0].name", "is not inside zone example.test"),
    ({"records": [{"name": "app", "targets": {"gcp": ["192.0.2.1"], "azure": ["192.0.2.2"]}},
                  {"name": "api", "targets": {"gcp": ["192.0.2.3"], "dr": ["192.0.2.4"]}}]},
     "records[1].targets", "differ from records[0]'s"),
    ({"records": []}, "records", "at least 1 item"),
    ({"epoch_record": "app"}, "epoch_record", "must not be one of the records"),
    ({"verify": {"deadline": "10s", "interval": "10s"}}, "verify.interval", "less than deadline (10s)"),
    ({"verify": {"deadline": "1s", "interval": "100ms", "query_timeout": "2s"}},
     "verify.query_timeout", "at most deadline (1s)"),
    ({"verify": {"nameservers": ["ns1:http"]}}, "verify.nameservers", "must be host or host:port"),
    ({"provider": {"type": "rfc2136", "servers": ["ns1:99999"], "zone": "example.test",
                   "tsig": {"name": "k", "secret": SECRET}}},
     "provider.servers", "must be host or host:port"),
    ({"provider": {"type": "rfc2136", "servers": ["ns1"], "zone": "example.test",
                   "tsig": {"name": "k", "algorithm": "hmac-sha3", "secret": SECRET}}},
     "provider.tsig.algorithm", "Input should be"),
    ({"provider": {"type": "rfc2136", "servers": [], "zone": "example.test",
                   "tsig": {"name": "k", "secret": SECRET}}}, "provider.servers", "at least 1 item"),
    ({"provider": {"type": "ns1", "zone": "example.test"}},
     "provider", "does not match any of the expected"),
    ({"provider": {"type": "cloudflare", "zone": "example.test", "api_token": "t"},
      "records": [{"name": "app", "ttl": "10s", "targets": {"gcp": ["192.0.2.1"], "azure": ["192.0.2.2"]}}]},
     "records[0].ttl", "Cloudflare accepts 1 (automatic) or 30s and more"),
    ({"provider": {"type": "cloudflare", "zone": "example.test", "api_token": "t", "base_url": "ftp://x"}},
     "provider.base_url", "must start with http:// or https://"),
]


@pytest.mark.parametrize(("change", "path", "message"), RULES, ids=[r[1] + ":" + r[2][:20] for r in RULES])
def test_rule_reports_its_path(change: dict[str, Any], path: str, message: str) -> None:
    """Each rule rejects the config with a problem at the exact path of the offending field."""
    found = problems(rfc2136(**change))
    full = f"services.shop.dns.{path}"
    assert any(p == full and message in m for p, m in found), found


def test_bad_tsig_secret_is_rejected_without_echoing_it() -> None:
    """A TSIG secret that is not base64 is an error at tsig.secret whose message does not contain it."""
    found = problems(rfc2136(), env={"TSIG": "not base64 at all!"})
    assert found == [("services.shop.dns.provider.tsig.secret", "is not valid base64 key material")]
    assert all("not base64 at all" not in m for _p, m in found)


def test_missing_secret_variable_is_named() -> None:
    """A ${VAR} secret whose variable is not set is reported at the secret's path."""
    found = problems(rfc2136(), env={})
    assert ("services.shop.dns.provider.tsig.secret", "environment variable TSIG is not set") in found


def test_cloudflare_without_sdk_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Choosing cloudflare when the SDK cannot be imported fails with the install command."""
    monkeypatch.setitem(sys.modules, "cloudflare", None)
    found = problems(rfc2136(provider={"type": "cloudflare", "zone": "example.test", "api_token": "t"}))
    assert found == [("services.shop.dns.provider.type",
                      f"the cloudflare provider needs its SDK: {CLOUDFLARE_INSTALL}")]


def test_site_problems_compare_targets_with_the_service_sites() -> None:
    """site_problems names records whose targets name unknown sites or miss one of the service's."""
    dns = parse(rfc2136())
    assert dns.site_problems(["gcp", "azure"]) == []
    assert dns.site_problems(["gcp", "aws"]) == [
        ("records[0].targets", "['azure'] are not sites of the service (['aws', 'gcp'])"),
        ("records[1].targets", "['azure'] are not sites of the service (['aws', 'gcp'])")]
    assert dns.site_problems(["gcp", "azure", "aws"])[0] == (
        "records[0].targets", "no values for site(s) ['aws']")


@pytest.mark.parametrize(("text", "expected"), [
    ("ns1", ("ns1", 53)), ("ns1:5353", ("ns1", 5353)), ("2001:db8::53", ("2001:db8::53", 53)),
    ("[2001:db8::53]:5353", ("2001:db8::53", 5353)), ("[::1]", ("::1", 53))])
def test_split_server(text: str, expected: tuple[str, int]) -> None:
    """Server strings split into host and port, with IPv6 in brackets or bare."""
    assert split_server(text, 53) == expected
