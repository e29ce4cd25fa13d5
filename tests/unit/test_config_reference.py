"""docs/configuration.md is generated from the config model and must not go stale."""

from __future__ import annotations

from pathlib import Path

from engine.config.reference import render

ROOT = Path(__file__).resolve().parents[2]


def test_the_reference_in_docs_is_current() -> None:
    """Regenerate with: python -m engine.config.reference > docs/configuration.md"""
    assert (ROOT / "docs" / "configuration.md").read_text() == render()


def test_every_policy_key_is_documented() -> None:
    from engine.config.model import PolicyConfig

    text = render()
    for name in PolicyConfig.model_fields:
        assert f"| `{name}` |" in text, name
