"""The example configs: every ``config/*.yaml`` passes ``failover-engine check-config`` with dummy values for
the variables it references, a missing variable is named, and the three instance files (GCP engine, Azure
engine, witness) agree with each other and with the setup they describe (the source article's: detection
in 3 x 10 s, replication checked every 30 s, reconciliation every 5 minutes, TTL 60 s public / 30 s
internal). New files under config/ are picked up by the glob."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from actions.dns import propagation_worst_s
from engine.config import ConfigError, EngineConfig, load_config
from engine.core.rto import worst_case_rtos

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
INSTANCES = ("gcp.yaml", "azure.yaml", "witness.yaml")  # one instance each of the same deployment
DUMMY_ENV = {  # one dummy per variable the example configs may reference
    "FAILOVER_PEER_KEY_GCP_AZURE": "dummy-peer-key-gcp-azure",  # 16+ characters: shorter keys are refused
    "FAILOVER_PEER_KEY_GCP_WITNESS": "dummy-peer-key-gcp-witness",  # each link its own key
    "FAILOVER_PEER_KEY_AZURE_WITNESS": "dummy-peer-key-azure-witness",
    "CLOUDFLARE_API_TOKEN": "dummy-cloudflare-token",
    "PGPASSWORD": "dummy-postgres-password",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.example/services/T000/B000/dummy",
    "PAGER_WEBHOOK_URL": "https://pager.example/hooks/dummy",
    "TSIG_SECRET": "ZHVtbXktdHNpZy1zZWNyZXQ=",  # base64, for an RFC 2136 provider
    "FAILOVER_API_ONCALL_SHA256": "a" * 64,  # the api tokens' hashes (failover-engine hash-token)
    "FAILOVER_API_VIEWER_SHA256": "b" * 64,
}
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
SECRET_KEYS = {"key", "api_token", "password", "secret"}


def _strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, value) of every string in parsed YAML: comments are not part of the config."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{path}[{index}]")


def referenced(path: Path) -> set[str]:
    """The variables ``path`` needs: every ``${VAR}`` without a ``:-default``."""
    data = yaml.safe_load(path.read_text())
    return {m.group(1) for _, text in _strings(data) for m in _REFERENCE.finditer(text) if m.group(2) is None}


def dummy_env(path: Path) -> dict[str, str]:
    """The dummy values for what ``path`` references; fails, naming them, when some have none."""
    needed = referenced(path)
    unknown = sorted(needed - DUMMY_ENV.keys())
    if unknown:
        pytest.fail(f"config/{path.name} references {', '.join('${' + v + '}' for v in unknown)}, which "
                    f"{Path(__file__).name} has no dummy value for: add one to DUMMY_ENV (and to the README's list "
                    "of variables the example configs read)", pytrace=False)
    return {name: DUMMY_ENV[name] for name in needed}


def check_config(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m engine check-config config/NAME`` with only ``env`` of the variables the test knows."""
    base = {k: v for k, v in os.environ.items() if k not in DUMMY_ENV}  # a developer's real secrets stay out
    return subprocess.run([sys.executable, "-m", "engine", "check-config", f"config/{path.name}"], cwd=ROOT,
                          env={**base, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True,
                          timeout=120, check=False)


def load(name: str) -> EngineConfig:
    path = ROOT / "config" / name
    return load_config(path, env=dummy_env(path))


def test_the_instance_configs_exist() -> None:
    """The three instance files are there (a demo config may join them; the glob finds it)."""
    assert {p.name for p in CONFIGS} >= set(INSTANCES)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_passes_check_config(path: Path) -> None:
    """`failover-engine check-config` accepts the file with dummy values for the variables it references."""
    result = check_config(path, dummy_env(path))
    assert result.returncode == 0, f"check-config config/{path.name} exited {result.returncode}:\n{result.stderr}"
    assert result.stdout.startswith(f"config/{path.name}: ok ("), result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_meets_its_own_rto_slo(path: Path) -> None:
    """Every service's worst-case RTO (DNS propagation of its provider included) is within its rto_slo, and
    the SLO is a real promise (at most 10 minutes), so `check-config --strict` passes."""
    for estimate in worst_case_rtos(load(path.name), dns_propagation=propagation_worst_s):
        assert estimate.rto_slo_s is not None and estimate.rto_slo_s <= 600, f"config/{path.name}: SLO too loose"
        assert estimate.total_s <= estimate.rto_slo_s, f"config/{path.name}: {estimate.line()}; {estimate.notes}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_check_config_names_every_missing_variable(path: Path) -> None:
    """Without its variables the file is refused (exit 2), each variable named, no traceback."""
    needed = referenced(path)
    if not needed:
        pytest.skip(f"config/{path.name} references no variable")
    result = check_config(path, {})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for name in needed:
        assert f"environment variable {name} is not set" in result.stderr, result.stderr


@pytest.mark.parametrize(("path", "variable"), [(p, v) for p in CONFIGS for v in sorted(referenced(p))],
                         ids=lambda x: x.name if isinstance(x, Path) else x)
def test_one_missing_variable_is_the_only_problem(path: Path, variable: str) -> None:
    """A single unset variable is reported where it is used, and nothing else is (not its empty value)."""
    env = {k: v for k, v in dummy_env(path).items() if k != variable}
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    messages = [p.message for p in info.value.problems]
    assert messages and set(messages) == {f"environment variable {variable} is not set"}, messages
    uses = sum(f"${{{variable}}}" in text for _, text in _strings(yaml.safe_load(path.read_text())))
    assert len(messages) == uses


@pytest.mark.parametrize("name", INSTANCES)
def test_secrets_are_never_inline(name: str) -> None:
    """Keys, tokens, passwords and webhook URLs come from ${VAR} or file:/path, never the file itself."""
    data = yaml.safe_load((ROOT / "config" / name).read_text())
    webhook = re.compile(r"notifications\.webhooks\[\d+\]\.url")
    secrets = [(where, text) for where, text in _strings(data)
               if where.rsplit(".", 1)[-1] in SECRET_KEYS or webhook.fullmatch(where)]
    assert secrets, f"config/{name} holds no secret at all?"
    for where, text in secrets:
        assert text.startswith(("${", "file:")), f"config/{name}: {where} is inline: use ${{VAR}} or file:/path"


# -- the three instances of one deployment ---------------------------------------------------------
def test_instances_agree_on_the_voters() -> None:
    """Each file names the same three voters; each peer URL reaches that instance's listen port and scheme."""
    configs = {name: load(name) for name in INSTANCES}
    by_id = {c.instance.id: c for c in configs.values()}
    assert len(by_id) == len(INSTANCES), "every file is a different instance"
    for name, config in configs.items():
        voters = {(config.instance.id, config.instance.site, config.instance.role)}
        voters |= {(p.id, p.site, p.role) for p in config.peers}
        assert voters == {(c.instance.id, c.instance.site, c.instance.role) for c in by_id.values()}, name
        for peer in config.peers:
            target = by_id[peer.id].instance
            url = urlsplit(peer.url)
            assert str(url.port) == target.listen.rpartition(":")[2], f"config/{name}: {peer.id} listens elsewhere"
            scheme = "https" if target.tls is not None else "http"
            assert url.scheme == scheme, f"config/{name}: {peer.id} serves {scheme}, the URL says {url.scheme}"
    roles = sorted(c.instance.role for c in configs.values())
    assert roles == ["engine", "engine", "witness"]


def test_engines_watch_the_same_services() -> None:
    """The two engines must judge and act on identical services (probes, policy, DNS, database)."""
    assert load("gcp.yaml").services == load("azure.yaml").services


def test_witness_judges_like_the_engines() -> None:
    """The witness has the engines' sites, probes, home site and policy, every shared dependency, and
    nothing to act on (no DNS, no database)."""
    engine, witness = load("gcp.yaml"), load("witness.yaml")
    assert witness.services.keys() == engine.services.keys()
    for name, svc in witness.services.items():
        mine = engine.services[name]
        assert (svc.active, svc.sites, svc.policy) == (mine.active, mine.sites, mine.policy), name
        assert svc.dns is None and svc.database is None
        shared = {d.name: d for d in mine.dependencies if d.scope == "shared"}
        assert {d.name: d for d in svc.dependencies if d.scope == "shared"} == shared, \
            "the witness must probe every shared dependency: with one site gone it is part of the majority"


@pytest.mark.parametrize("name", ["gcp.yaml", "azure.yaml"])
def test_engines_follow_the_article(name: str) -> None:
    """Detection in 3 x 10 s, lag every 30 s within the RPO, reconciliation every 5 min, TTL 60 s / 30 s."""
    for svc in load(name).services.values():
        assert svc.policy.failure_threshold == 3
        for site in svc.sites.values():
            assert {p.interval for p in site.probes} == {10.0}
        assert any(d.scope == "shared" for d in svc.dependencies), "an upstream both sites need"
        assert svc.dns is not None and svc.database is not None
        assert svc.dns.provider.type in ("cloudflare", "rfc2136")
        for record in svc.dns.records:
            expected = 30.0 if "internal" in record.name else 60.0
            assert record.ttl == expected, f"{record.name}: TTL {record.ttl:g}s, the article advises {expected:g}s"
        db = svc.database
        assert set(db.sites) == set(svc.sites)
        assert db.lag_probe.interval == 30.0 and db.lag_probe.max_lag <= svc.policy.rpo
        assert db.reconcile.schedule == 300.0
