"""deploy/systemd/failover-engine.service: accepted without a single warning by `systemd-analyze verify`, rated
OK by `systemd-analyze security` (offline), hardened as documented, and running the CLI the way it parses."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.cli import build_parser
from tests.support import require_binary

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "failover-engine.service"
NAME = UNIT.name
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 is locked down, 10 unprotected; below 2 rates "OK"


def systemd_analyze() -> str:
    return require_binary("systemd-analyze", hint="apt-get install -y systemd")


def directives() -> dict[str, list[str]]:
    """Every key of the [Service] section with all its values, in order (systemd keys may repeat)."""
    values: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A file system root holding the unit, the system's own units, and the executables the unit names."""
    units = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)
    assert units is not None, "no systemd unit directory on this machine"
    shutil.copytree(units, tmp_path / "usr/lib/systemd/system", symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system" / NAME)
    for key in ("ExecStart", "ExecStartPre"):
        for value in directives()[key]:
            binary = tmp_path / shlex.split(value)[0].lstrip("/")
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_text('#!/bin/sh\nexec failover-engine "$@"\n')  # where the venv's console script goes
            binary.chmod(0o755)
    return tmp_path


def test_systemd_analyze_verify_accepts_the_unit_without_warnings(root: Path) -> None:
    """`systemd-analyze verify` exits 0 and prints nothing: every directive is known and every value parses."""
    result = subprocess.run([systemd_analyze(), "verify", f"--root={root}", NAME], capture_output=True, text=True,
                            timeout=120, check=False, cwd=root)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_systemd_analyze_security_rates_the_unit_ok(root: Path) -> None:
    """The offline security review rates the unit's exposure below 2 (of 10)."""
    result = subprocess.run([systemd_analyze(), "security", "--offline=true", f"--root={root}", "--no-pager", NAME],
                            capture_output=True, text=True, timeout=120, check=False, cwd=root)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) < MAX_EXPOSURE, result.stdout


def test_unit_is_hardened_and_keeps_the_journal_private() -> None:
    """The hardening the header promises is there: no privileges, a read-only OS, a private 0700 state dir."""
    d = directives()
    expected = {"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "", "UMask": "0077",
                "StateDirectory": "failover-engine", "StateDirectoryMode": "0700",
                "WorkingDirectory": "/var/lib/failover-engine", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
                "SystemCallArchitectures": "native", "Restart": "on-failure"}
    assert {k: d.get(k, [None])[-1] for k in expected} == expected
    assert "User" not in d and "ReadWritePaths" not in d, "the dynamic user writes only its StateDirectory"


def test_exec_lines_run_the_cli_as_it_parses_them() -> None:
    """ExecStartPre checks the config, ExecStart runs it; both parse with the real CLI, on the same file."""
    d = directives()
    (pre,), (start,) = d["ExecStartPre"], d["ExecStart"]
    parser = build_parser()
    pre_args = parser.parse_args(shlex.split(pre)[1:])
    run_args = parser.parse_args(shlex.split(start)[1:])
    assert pre_args.command == "check-config" and run_args.command == "run"
    assert pre_args.file == run_args.config == "/etc/failover-engine/engine.yaml"
    assert shlex.split(pre)[0] == shlex.split(start)[0] == "/opt/failover-engine/bin/failover-engine"


def test_unit_has_an_install_section() -> None:
    """`systemctl enable` has a target to hook the service into."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string("\n".join(line for line in UNIT.read_text().splitlines() if not line.startswith("#")))
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    assert parser["Unit"]["After"] == "network-online.target"
