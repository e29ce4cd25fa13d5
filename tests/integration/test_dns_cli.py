"""`failover-engine dns show` against a real BIND: the table, JSON output and exit codes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from engine.cli import main
from tests.support.bind import NamedServer
from tests.support.cloudflare_fake import CloudflareFake

SITE = {"probes": [{"type": "tcp", "host": "127.0.0.1", "port": 9}]}  # a site needs at least one probe

pytestmark = pytest.mark.real


def write_config(tmp_path: Path, server: NamedServer, *, key: str = "failover-key") -> str:
    dns = {
        "provider": {"type": "rfc2136", "servers": [server.address], "zone": server.zone,
                     "tsig": {"name": key, "secret": "${DNS_TSIG_SECRET}"}, "timeout": "1s", "attempts": 1},
        "records": [
            {"name": "app", "type": "A", "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}},
            {"name": "web", "type": "CNAME",
             "targets": {"gcp": ["gcp.example.net"], "azure": ["azure.example.net"]}},
        ],
        "epoch_record": "_failover-epoch.app",
    }
    document = {"instance": {"id": "e1", "site": "gcp"},
                "services": {"shop": {"active": "gcp", "sites": {"gcp": SITE, "azure": SITE}, "dns": dns},
                             "nodns": {"active": "gcp", "sites": {"gcp": SITE, "azure": SITE}}}}
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def test_show_prints_records_site_and_epoch(
        bind_zone: NamedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`dns show` prints name, type, TTL, values and site per record, then the epoch, and exits 0."""
    monkeypatch.setenv("DNS_TSIG_SECRET", bind_zone.secret)
    assert main(["dns", "show", "--config", write_config(tmp_path, bind_zone), "shop"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "service shop: zone example.test, points to gcp"
    assert out[1].split() == ["NAME", "TYPE", "TTL", "VALUES", "POINTS", "TO"]
    assert out[2].split() == ["app.example.test", "A", "60", "192.0.2.10", "gcp"]
    assert out[3].split() == ["web.example.test", "CNAME", "60", "gcp.example.net.", "gcp"]
    assert out[4] == "epoch: 1 (site gcp, op -, record _failover-epoch.app.example.test)"


def test_show_reads_without_the_tsig_secret_or_a_peer_key(
        bind_zone: NamedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Reading needs no secret: with the TSIG and peer key variables unset, `dns show` still reads (exit 0)."""
    monkeypatch.delenv("DNS_TSIG_SECRET", raising=False)
    monkeypatch.delenv("PEER_KEY_UNSET", raising=False)
    path = Path(write_config(tmp_path, bind_zone))
    document = yaml.safe_load(path.read_text())
    document["peers"] = [{"id": "e2", "url": "http://127.0.0.1:9", "role": "engine", "site": "azure",
                          "key": "${PEER_KEY_UNSET}"}]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    assert main(["dns", "show", "--config", str(path), "shop"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "service shop: zone example.test, points to gcp"


def test_show_json(bind_zone: NamedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    """`dns show --json` prints one JSON object with the records, the site and the epoch."""
    monkeypatch.setenv("DNS_TSIG_SECRET", bind_zone.secret)
    assert main(["dns", "show", "--json", "--config", write_config(tmp_path, bind_zone), "shop"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["site"] == "gcp" and shown["epoch"]["number"] == 1
    assert shown["records"][0] == {"name": "app.example.test", "type": "A", "ttl": 60,
                                   "values": ["192.0.2.10"], "site": "gcp"}


def test_show_exit_codes(bind_zone: NamedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown service or no dns section exit 2; a key the server rejects exits 1 naming the key."""
    monkeypatch.setenv("DNS_TSIG_SECRET", bind_zone.secret)
    path = write_config(tmp_path, bind_zone)
    assert main(["dns", "show", "--config", path, "nope"]) == 2
    assert "unknown service 'nope'" in capsys.readouterr().err
    assert main(["dns", "show", "--config", path, "nodns"]) == 2
    assert "has no dns section" in capsys.readouterr().err
    assert main(["dns", "show", "--config", write_config(tmp_path, bind_zone, key="stranger"), "shop"]) == 1
    err = capsys.readouterr().err
    assert "DnsAuthError" in err and "'stranger'" in err and bind_zone.secret not in err


async def test_show_reports_a_cloudflare_refusal_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A 400 from Cloudflare's /zones makes `dns show` exit 1 with one clear line naming the zone."""
    fake = CloudflareFake(token="cf-cli-token")
    fake.add_zone("example.com")
    await fake.start()
    try:
        dns = {"provider": {"type": "cloudflare", "zone": "example.com", "api_token": "${CF_TOKEN}",
                            "base_url": fake.base_url, "timeout": "2s", "attempts": 1},
               "records": [{"name": "app", "type": "A",
                            "targets": {"gcp": ["192.0.2.10"], "azure": ["198.51.100.10"]}}]}
        document = {"instance": {"id": "e1", "site": "gcp"},
                    "services": {"shop": {"active": "gcp", "sites": {"gcp": SITE, "azure": SITE}, "dns": dns}}}
        path = tmp_path / "engine.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        monkeypatch.setenv("CF_TOKEN", fake.token)
        fake.fail(400, method="GET", path_contains="/zones")
        code = await asyncio.to_thread(main, ["dns", "show", "--config", str(path), "shop"])
    finally:
        await fake.stop()
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [
        "dns show shop: DnsRefused: Cloudflare refused the lookup of zone example.com (400 1400: injected 400)"]
    assert "Traceback" not in err and fake.token not in err
