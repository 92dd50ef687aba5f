"""How the UI names the voices: the engine says 'base' or 'adapter NAME'."""

from __future__ import annotations

from engine.api import BASE

ADAPTER_PREFIX = "adapter "


def adapter_of(speaker: str) -> str | None:
    """The adapter name in a speaker label, or None for the base model."""
    return speaker[len(ADAPTER_PREFIX):] if speaker.startswith(ADAPTER_PREFIX) else None


def speaker_title(speaker: str) -> str:
    """'BASE' for the base model, else the label as the engine gave it."""
    return "BASE" if speaker in ("", BASE) else speaker
