"""``drill run --wait`` prints one line per change of a check, not one per round of the hold."""

from __future__ import annotations

from typing import Any

from engine.cli.drill_cmd import new_check_lines


def hold(round_: int, ok: bool = True) -> dict[str, Any]:
    return {"check": f"hold:{round_}:serving", "ok": ok, "detail": "azure serves shop"}


def test_ninety_identical_hold_rounds_print_one_line() -> None:
    """Ninety passing rounds of the same hold check, fed over several polls, print a single line."""
    last: dict[str, bool] = {}
    lines = new_check_lines([{"check": "baseline", "ok": True, "detail": "fine"}, hold(1), hold(2)], last)
    for start in range(3, 91, 11):
        lines += new_check_lines([hold(r) for r in range(start, min(start + 11, 91))], last)
    assert lines == ["  ok     baseline: fine", "  ok     hold:serving (from round 1): azure serves shop"]


def test_a_change_of_result_prints_again() -> None:
    """A round that fails after passing ones is printed, with its round."""
    last: dict[str, bool] = {}
    lines = new_check_lines([hold(1), hold(2), hold(3, ok=False)], last)
    assert lines[-1] == "  FAILED hold:serving (from round 3): azure serves shop" and len(lines) == 2
