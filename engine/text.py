"""Text helpers shared by the CLI, the reports and the app (no heavy imports: the UI uses them)."""

from __future__ import annotations


def clip(text: str | None, width: int) -> str:
    """`text` on one line (runs of whitespace become one space), at most `width` characters."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
