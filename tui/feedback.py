"""Turning a verdict on a reply (approve, correct, flag) into one feedback record.

One record per reply: a new verdict on a judged reply replaces its record, so the dataset never
holds an approval and a flag for the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.api import ChattuneError
from tui.widgets.message import Reply


@dataclass(frozen=True)
class Saved:
    record_id: int
    duplicate: bool  # the store already held an equal record; the reply now points at it


def save_verdict(store, reply: Reply, kind: str, *, correction: str | None = None, reason: str | None = None,
                 model: str = "", params: dict | None = None) -> Saved:
    """Store the verdict and update `reply` to match. Raises what the store raises, leaving `reply` as it was."""
    if reply.record_id is not None and kind == reply.kind != "corrected" and reason == reply.reason:
        return Saved(reply.record_id, True)
    if reply.record_id is not None and kind == "corrected":
        store.set_correction(reply.record_id, correction)  # approved or flagged -> corrected, same record
        saved = Saved(reply.record_id, False)
    else:
        with store.transaction():  # replace the old verdict, or keep it if the new one cannot be stored
            if reply.record_id is not None:
                store.delete(reply.record_id)
            result = store.add_feedback(kind, reply.context, reply.text, correction=correction, reason=reason,
                                        model=model, adapter=reply.adapter, params=params or {})
        saved = Saved(result.id, result.duplicate)
    reply.record_id, reply.kind = saved.record_id, kind
    reply.correction = correction if kind == "corrected" else None
    reply.reason = reason if kind == "flagged" else None
    reply.unsaved = {}
    return saved


def sync_from_store(store, reply: Reply) -> None:
    """After the dataset screen edited or deleted records, show what the store now holds."""
    if reply.record_id is None:
        return
    try:
        record = store.get(reply.record_id)
    except ChattuneError:
        reply.record_id = reply.kind = reply.correction = reply.reason = None
        return
    reply.kind, reply.correction, reply.reason = record.kind, record.correction, record.reason
