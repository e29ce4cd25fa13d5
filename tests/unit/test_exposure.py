"""check-config warns about an API listener off loopback without tokens (engine.core.exposure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main
from engine.core.exposure import is_loopback, listener_warnings

CONFIG = """
instance: {{id: gcp-1, site: gcp, listen: "{listen}"}}
{api}
services:
  api:
    active: gcp
    sites:
      gcp: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}}
      azure: {{probes: [{{type: tcp, host: 127.0.0.1, port: 9}}]}}
"""
TOKENS = "api: {tokens: [{name: oncall, role: operator, sha256: " + "a" * 64 + "}]}"


def test_loopback_addresses_are_recognised() -> None:
    """127.x, ::1 and localhost are loopback; 0.0.0.0 and a routable address are not."""
    assert all(is_loopback(a) for a in ("127.0.0.1:8080", "[::1]:8080", "localhost:80", "127.0.0.53:1"))
    assert not any(is_loopback(a) for a in ("0.0.0.0:8080", "[::]:8080", "10.0.0.5:8080"))


def test_warnings_name_the_missing_tokens_and_plain_http() -> None:
    """Off loopback: one warning without tokens, one without TLS; none on loopback or when both are given."""
    assert listener_warnings("127.0.0.1:8080", tokens=0, tls=False) == []
    both = listener_warnings("0.0.0.0:8080", tokens=0, tls=False)
    assert len(both) == 2 and "api.tokens is empty" in both[0] and "plain HTTP" in both[1]
    assert listener_warnings("0.0.0.0:8080", tokens=2, tls=True) == []


@pytest.mark.parametrize(("listen", "api", "warned"), [
    ("0.0.0.0:8080", "", True), ("127.0.0.1:8080", "", False), ("0.0.0.0:8080", TOKENS, False)])
def test_check_config_prints_the_token_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str], listen: str,
                                               api: str, warned: bool) -> None:
    """check-config (exit 0) warns about a non-loopback listener only when it has no tokens."""
    path = tmp_path / "engine.yaml"
    path.write_text(CONFIG.format(listen=listen, api=api))
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("warning: instance.listen 0.0.0.0:8080 is not loopback and api.tokens is empty" in out) is warned, out
