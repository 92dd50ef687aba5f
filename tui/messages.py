"""App-wide messages. Whoever changes shared state posts one to the app, which refreshes what shows it."""

from __future__ import annotations

from textual.message import Message


class StoreChanged(Message):
    """The feedback store was written: counts and reply marks need a refresh."""


class EngineChanged(Message):
    """The model finished loading (or failed), or who answers next changed."""
