"""Text helpers shared by the CLI, the reports and the app (no heavy imports: the UI uses them)."""

from __future__ import annotations


def clip(text: str | None, width: int) -> str:
    """`text` on one line (runs of whitespace become one space), at most `width` characters."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def number(value: float | None, spec: str = ".2f") -> str:
    """`value` in the format `spec`, or "–" when there is none (not measured, not a number)."""
    return f"{value:{spec}}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def percent(value: float | None) -> str:
    """A rate (0.25) as "25%", or "–"."""
    return "–" if value is None else f"{100 * value:.0f}%"
