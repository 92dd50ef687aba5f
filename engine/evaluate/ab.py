"""The blind A/B summary: how often the adapter's reply beat the base's in the compare votes."""

from __future__ import annotations

from engine.engines.base import BASE, speaker_label
from engine.store import FeedbackStore


def ab_summary(store: FeedbackStore, run: str) -> dict:
    """Votes between the base and `adapter RUN`: wins, losses, win_rate (None without votes), and how
    many of those votes were blind."""
    adapter = speaker_label(run)
    wins = losses = blind = 0
    for record in store.records(kind="preference"):
        sides = (record.meta.get("chosen_by"), record.meta.get("rejected_by"))
        if sides == (adapter, BASE):
            wins += 1
        elif sides == (BASE, adapter):
            losses += 1
        else:
            continue
        blind += bool(record.meta.get("blind"))
    votes = wins + losses
    return {"votes": votes, "wins": wins, "losses": losses, "blind": blind,
            "win_rate": wins / votes if votes else None}
