"""Number formatting shared by the report's tables."""

from __future__ import annotations

import math
from typing import Any

NA = "—"


def seconds(value: float | None) -> str:
    """A duration with a unit that keeps three significant digits (µs to s)."""
    if value is None or not math.isfinite(value):
        return NA
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if abs(value) >= scale or unit == "ns":
            return f"{value / scale:.3g} {unit}"
    return NA  # pragma: no cover


def timing(t: dict[str, Any] | None) -> str:
    """``median (min–max)`` of a Timing dict; just the value when it was measured once."""
    if not t:
        return NA
    if t.get("n", 1) <= 1 or t["min"] == t["max"]:
        return seconds(t["median"])
    return f"{seconds(t['median'])} ({seconds(t['min'])}–{seconds(t['max'])})"


def nbytes(value: float | None) -> str:
    """Bytes in decimal units (MB = 10^6 B).

    The units in which the published figures of the original sensor-caching implementation quote sizes.
    """
    if value is None or not math.isfinite(value):
        return NA
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


def ratio(value: float | None, suffix: str = "×") -> str:
    if value is None or not math.isfinite(value):
        return NA
    if value >= 100:
        return f"{value:,.0f}{suffix}"
    if value >= 10:
        return f"{value:.1f}{suffix}"
    return f"{value:.2f}{suffix}"


def percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return NA
    return f"{value * 100:+.0f}%"


def safe_div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b


def table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)
