"""Hostile or careless configs: nonsense numbers, YAML tricks, odd secret files and parts that contradict each
other are each one problem with its path, never accepted and never a crash."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from engine.config import ConfigError, EngineConfig, load_config, parse_config
from engine.config.base import MAX_SECRET_FILE
from engine.http.auth import hash_token

MINIMAL = """
instance: {id: gcp-1, site: gcp}
services:
  api:
    active: gcp
    sites:
      gcp:
        probes:
          - {type: http, url: "http://127.0.0.1:9/health"}
      azure:
        probes:
          - {type: tcp, host: 127.0.0.1, port: 9}
""".lstrip()
PEER = "peers: [{id: azure-1, site: azure, url: 'http://127.0.0.1:9', key: %s}]\n"
BOMB = "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9) if p.strip() else ', '.join(['lol'] * 9)}]\n"
               for p, n in zip(" abcdefgh", "abcdefghi", strict=True))


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return [f"{p.path}: {p.message}" for p in info.value.problems]


PROBE = 'url: "http://127.0.0.1:9/health"}'


@pytest.mark.parametrize(("change", "expected"), [
    ((PROBE, PROBE[:-1] + ", timeout: .nan}"), "services.api.sites.gcp.probes[0].timeout: a duration must be a finite"),
    ((PROBE, PROBE[:-1] + ", timeout: nan}"), "services.api.sites.gcp.probes[0].timeout: a duration must be a finite"),
    ((PROBE, PROBE[:-1] + ", interval: .inf}"), "services.api.sites.gcp.probes[0].interval: a duration must be"),
    ((PROBE, PROBE[:-1] + ", interval: 1e400}"), "services.api.sites.gcp.probes[0].interval: a duration must be"),
    ((PROBE, PROBE[:-1] + ", interval: 0s}"), "services.api.sites.gcp.probes[0].interval: must be at least 50ms"),
    ((PROBE, PROBE[:-1] + ", timeout: 0s}"), "services.api.sites.gcp.probes[0].timeout: must be more than 0s"),
    ((PROBE, PROBE[:-1] + ", interval: 99999d}"), "services.api.sites.gcp.probes[0].interval: must be at most 366d"),
    (("site: gcp}", "site: gcp, tick: 0s}"), "instance.tick: must be at least 50ms"),
    (("site: gcp}", "site: gcp, tick: nan}"), "instance.tick: a duration must be a finite number"),
    (("    active: gcp\n", "    active: gcp\n    policy: {lease: 0s}\n"),
     "services.api.policy.lease: must be more than 0s"),
    (("    active: gcp\n", "    active: gcp\n    policy: {lease: .nan}\n"),
     "services.api.policy.lease: a duration must be a finite number"),
    (("    active: gcp\n", "    active: gcp\n    policy: {runbook_deadline: 0s}\n"),
     "services.api.policy.runbook_deadline: must be more than 0s"),
    (("    active: gcp\n", "    active: gcp\n    policy: {failure_threshold: 100000000000000000000000}\n"),
     "services.api.policy.failure_threshold: Input should be less than or equal to 100"),
    ((PROBE, PROBE[:-1] + ", json: {path: a, less_than: .nan}}"),
     "services.api.sites.gcp.probes[0].json.less_than: Input should be a finite number"),
])
def test_nonsense_numbers_are_refused_with_their_path(change: tuple[str, str], expected: str) -> None:
    """NaN, infinity, zero where zero means nothing, and numbers beyond their range are refused at their path."""
    found = problems(MINIMAL.replace(*change))
    assert any(p.startswith(expected) for p in found), found


def test_replay_window_and_dns_deadline_are_ranged() -> None:
    """A zero or NaN replay window and a zero DNS verification deadline are refused."""
    assert problems(MINIMAL + "peering: {replay_window: 0s}\n") == ["peering.replay_window: must be at least 1s"]
    assert problems(MINIMAL + "peering: {replay_window: .nan}\n") == [
        "peering.replay_window: a duration must be a finite number"]
    dns = ("    dns:\n      provider: {type: rfc2136, servers: [127.0.0.1], zone: example.com,\n"
           "                 tsig: {name: k, secret: c2VjcmV0}}\n"
           "      records: [{name: app, targets: {gcp: [192.0.2.1], azure: [192.0.2.2]}}]\n"
           "      verify: {deadline: 0s}\n")
    assert problems(MINIMAL + dns) == ["services.api.dns.verify.deadline: must be more than 0s"]


def test_every_number_in_the_schema_is_bounded() -> None:
    """Each number and integer the JSON Schema describes states a minimum and a maximum."""
    schema = EngineConfig.model_json_schema()
    unbounded: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("number", "integer") and (
                    "maximum" not in node or not ({"minimum", "exclusiveMinimum"} & node.keys())):
                unbounded.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}")

    walk(schema, "")
    allowed = {"threshold", "less_than", "greater_than", "equals", "not_equals"}  # conditions: any finite value
    assert [p for p in unbounded if not (set(p.split("/")) & allowed)] == []


def test_duplicate_keys_are_an_error_with_both_lines() -> None:
    """A key given twice is refused (YAML would silently keep the last), naming where the first one was."""
    text = MINIMAL.replace("    active: gcp\n", "    active: gcp\n    active: azure\n")
    assert problems(text) == ["services.api.active: duplicate key 'active' (first on line 4): YAML would silently "
                              "keep only the last"]


def test_merge_keys_may_still_be_overridden() -> None:
    """``<<: *defaults`` followed by an explicit key is YAML's override, not a duplicate."""
    text = ("x-probe: &probe {type: tcp, host: 127.0.0.1, port: 9, interval: 10s}\n" + MINIMAL.replace(
        "          - {type: tcp, host: 127.0.0.1, port: 9}", "          - {<<: *probe, port: 10}"))
    found = problems(text)
    assert found == ["x-probe: unknown key"]  # the anchor's home is not a config key; no duplicate reported


def test_an_alias_bomb_is_refused_small() -> None:
    """A few hundred bytes naming a billion strings are refused before any expansion, in well under 50 MB."""
    assert len(BOMB.encode()) < 400
    tracemalloc.start()
    try:
        found = problems(BOMB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(found) == 1 and "values once aliases are expanded (an alias bomb?)" in found[0]
    assert peak < 50 * 1024 * 1024


@pytest.mark.parametrize(("text", "expected"), [
    ("a: &a [*a]\n", "a[0]: an alias refers to a node that contains it (circular alias)"),
    ("a: &a {b: *a}\n", "a.b: an alias refers to a node that contains it (circular alias)"),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nested deeper than"),
    ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper than"),  # libyaml's C composer would crash
    ("a:\n" + "".join(" " * i + "-\n" for i in range(1, 3000)), "nested deeper than"),
    ("instance: {id: x, site: gcp, tick: 1" + "0" * 5000 + "}\n", "instance.tick: cannot read"),
    ("instance: {id: x, site: gcp}\nwhen: 2001-13-45\n", "when: cannot read '2001-13-45'"),
    ("instance: [\n", "not valid YAML"),
    ("\x00", "not valid YAML"),
])
def test_yaml_tricks_are_one_problem(text: str, expected: str) -> None:
    """Circular aliases, deep nesting, giant integers and impossible dates are one problem, not a crash."""
    found = problems(text)
    assert any(expected in p for p in found), found


def test_non_utf8_and_oversized_files(tmp_path: Path) -> None:
    """A file that is not UTF-8, or is larger than the cap, is one problem with exit from the loader."""
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"instance: {id: \xff\xfe}\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xff at offset 15\)"):
        load_config(bad)
    with pytest.raises(ConfigError, match="larger than 16 MB"):
        load_config("/dev/zero")


def test_file_secrets_must_be_small_regular_files(tmp_path: Path) -> None:
    """/dev/zero, a directory, a FIFO, an oversized, empty or non-UTF-8 file are refused at the secret's path."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"k" * (MAX_SECRET_FILE + 1))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff" * 20)
    cases = {"/dev/zero": "not a regular file", str(tmp_path): "not a regular file", str(fifo): "not a regular file",
             str(big): f"larger than {MAX_SECRET_FILE} bytes", str(empty): "the file is empty",
             str(binary): "not UTF-8 text"}
    for path, reason in cases.items():
        assert problems(MINIMAL + PEER % f"'file:{path}'") == [
            f"peers[0].key: cannot read secret file {path}: {reason}"]


@pytest.mark.parametrize(("value", "expected"), [
    ("'${PEER_KEY'", "'${' must start ${NAME} or ${NAME:-default}, closed by '}'"),
    ("'${1KEY}'", "'${' must start ${NAME} or ${NAME:-default}, closed by '}'"),
    ("'${PEER_KEY}'", "environment variable PEER_KEY is not set"),
])
def test_unset_or_malformed_variables_are_errors(value: str, expected: str) -> None:
    """``${VAR`` unterminated, a malformed name and an unset variable are refused where they are used."""
    found = problems(MINIMAL + PEER % value)
    assert len(found) == 1 and found[0].startswith(f"peers[0].key: {expected}"), found


def test_the_shared_peer_key_is_gone_with_a_reason() -> None:
    """``peering.hmac_key`` (one key for every voter) is refused, pointing at per-link keys."""
    found = problems(MINIMAL + "peering: {hmac_key: kkkkkkkkkkkkkkkkkkkk}\n")
    assert len(found) == 1 and found[0].startswith("peering.hmac_key: one key shared by every voter")


def test_cross_file_contradictions_are_each_reported() -> None:
    """Same database twice, one token in two roles, a site without probes, one voter listed twice and a reused
    link key are all listed at once, each at its path."""
    token = hash_token("t" * 20)
    text = MINIMAL.replace("      azure:\n        probes:\n          - {type: tcp, host: 127.0.0.1, port: 9}\n",
                           "      azure: {}\n") + f"""    database:
      sites:
        gcp: {{host: db.example, dbname: app, user: u}}
        azure: {{host: DB.example., dbname: app, user: u}}
api:
  tokens:
    - {{name: alice, role: operator, sha256: {token}}}
    - {{name: bob, role: viewer, sha256: {token}}}
peers:
  - {{id: azure-1, site: azure, url: "http://10.0.0.2:8080", key: kkkkkkkkkkkkkkkkkkkk}}
  - {{id: witness, site: witness, role: witness, url: "http://10.0.0.2:8080/", key: kkkkkkkkkkkkkkkkkkkk}}
  - {{id: aws-1, site: aws, url: "http://10.0.0.3:8080", key: aaaaaaaaaaaaaaaaaaaa}}
"""
    found = problems(text)
    assert found == [
        "services.api.sites.azure.probes: no probe: the site's health would stay unknown, so it could never be "
        "failed over from or to",
        "services.api.database.sites.azure: the same database as site 'gcp' (DB.example.:5432/app): a failover would "
        "promote the primary onto itself",
        "api.tokens[1].sha256: the same token as tokens[0] (alice, operator): one token, one name and one role",
        "peers[1].url: the same address as peers[0]: one process would count as two voters towards a majority",
        "peers[1].key: the same key as peers[0]: each link needs its own key, or either peer could sign as the other",
        "peers[2].site: engine 'aws-1' runs in 'aws', not a site of service 'api' (azure, gcp)",
    ]
