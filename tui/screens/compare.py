"""Compare: the last prompt answered by the base model and the adapter, side by side; one key votes."""

from __future__ import annotations

import random

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from engine.api import ChattuneError, StoreError, speaker_label
from tui.generation import Generation, stream_into
from tui.labels import adapter_of, speaker_title
from tui.messages import StoreChanged
from tui.widgets.compare import CompareView
from tui.widgets.status_bar import StatusBar

BLIND_LABELS = ("Reply 1", "Reply 2")


class CompareScreen(Screen):
    BINDINGS = [
        Binding("1,left_square_bracket,left", "vote(0)", "left is better"),
        Binding("2,right_square_bracket,right", "vote(1)", "right is better"),
        Binding("up", "scroll(-1)", "scroll", show=False),
        Binding("down", "scroll(1)", "scroll", show=False),
        Binding("escape", "close", "back to chat"),
    ]

    def __init__(self, context: list[dict], adapter: str, *, blind: bool, rng: random.Random) -> None:
        super().__init__(id="compare")
        self.context = context
        self.blind = blind
        self.sides: list[str | None] = [None, adapter]  # None: the base model
        if blind:
            rng.shuffle(self.sides)
        self.generation = Generation()
        self.voted: int | None = None
        self.done = False

    def compose(self) -> ComposeResult:
        yield StatusBar()
        prompt = Text("prompt: ", style="bold")
        prompt.append(" ".join(self.context[-1]["content"].split()))
        yield Static(prompt, id="compare-prompt")
        labels = BLIND_LABELS if self.blind else tuple(speaker_title(speaker_label(a)) for a in self.sides)
        yield CompareView(*labels)
        yield Static(id="compare-hint")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.panes = self.query_one(CompareView).panes
        self._hint("Both answer in turn… esc stops" + (" · blind: names are shown after your vote" if self.blind
                                                        else ""))
        self.app.start_worker(self._generate, name="compare")

    # -- generation --------------------------------------------------------------------------------

    def _generate(self) -> None:
        """Worker thread: both sides in turn on the one engine, then the active adapter is restored."""
        app = self.app
        with app.engine_lock:
            before = adapter_of(app.engine.which())
            try:
                for pane, adapter in zip(self.panes, self.sides, strict=True):
                    if self.generation.cancelled:
                        break
                    app.engine.set_adapter(adapter)
                    finish = "error"
                    try:
                        finish = stream_into(app, self.context, pane, self.generation)
                    finally:
                        app.call_from_thread(pane.finish, finish)
            finally:
                app.engine.set_adapter(before)
                app.call_from_thread(self._generated)

    def _generated(self) -> None:
        self.done = True
        if not self.is_attached:  # esc closed the view while the replies were being generated
            return
        if self._complete():
            self._hint("Which is better? 1 / [ / ← left · 2 / ] / → right · esc back")
        else:
            self._hint("Stopped before both replies were complete: esc back, then c to compare again.")

    def _complete(self) -> bool:
        return self.done and all(pane.finish_reason in ("stop", "length") for pane in self.panes)

    # -- voting ------------------------------------------------------------------------------------

    def action_vote(self, side: int) -> None:
        if self.voted is not None:
            self.notify("Already voted: esc goes back to the chat.")
            return
        if not self._complete():
            self.notify("Wait until both replies are complete.", severity="warning")
            return
        app = self.app
        if app.store is None:
            self.notify(f"The vote cannot be saved: {app.store_error}", severity="error", markup=False)
            return
        chosen, rejected = self.panes[side], self.panes[1 - side]
        try:
            result = app.store.add_preference(self.context, chosen.text, rejected.text, model=app.model_label,
                                              chosen_by=chosen.speaker, rejected_by=rejected.speaker,
                                              blind=self.blind)
        except StoreError as err:
            self.notify(f"{err}\nPress the key again to retry.", title="vote not saved", severity="error",
                        markup=False)
            return
        except ChattuneError as err:
            self.notify(str(err), title="vote not saved", severity="warning", markup=False)
            return
        self.voted = side
        self._reveal(side)
        app.post_message(StoreChanged())
        where = "already in the dataset as" if result.duplicate else "saved as"
        self.notify(f"⇄ {speaker_title(chosen.speaker)} preferred: {where} #{result.id}", markup=False)

    def _reveal(self, side: int) -> None:
        for index, pane in enumerate(self.panes):
            label = Text(f"{pane.label} · {speaker_title(pane.speaker)}" if self.blind else pane.label, style="bold")
            if index == side:
                label.append("  ✓ chosen", style="bold green")
            pane.set_label(label)
            pane.set_class(index == side, "chosen")
        self._hint("Vote stored. esc back to the chat.")

    # -- keys --------------------------------------------------------------------------------------

    def action_scroll(self, step: int) -> None:
        for pane in self.panes:
            pane.scroll_relative(y=step * 3, animate=False)

    def action_close(self) -> None:
        self.generation.cancel()
        self.dismiss()

    def _hint(self, text: str) -> None:
        self.query_one("#compare-hint", Static).update(Text(text, style="italic"))

