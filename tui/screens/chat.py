"""The chat: a conversation of streamed replies, each of which can be approved, corrected or flagged."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Static

from engine.api import ChattuneError, StoreError
from tui.feedback import save_verdict, sync_from_store
from tui.generation import Generation, stream_into
from tui.messages import StoreChanged
from tui.modals.correct import CorrectModal
from tui.modals.flag import FlagModal
from tui.widgets.chat_input import ChatInput
from tui.widgets.message import MARKS, Reply, ReplyMessage, UserMessage
from tui.widgets.status_bar import StatusBar

PLACEHOLDER = "Message… enter send · ctrl+j new line · tab: replies & keys · ? help"
# Plain-letter keys act on the chat, so they are off while the message box takes the typing.
LETTER_ACTIONS = {"toggle_adapter", "compare", "toggle_blind", "new_conversation", "pick_system", "dataset",
                  "train", "export", "runs", "pick_template", "pick_model"}


class Conversation(VerticalScroll):
    """Focused itself only while there is no reply to select, so the chat keys still work."""


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "escape", "stop / leave input", show=False),
        Binding("tab", "switch_focus", "input ⇄ replies", show=False),
        Binding("ctrl+up", "select_reply(-1)", "select reply", show=False),
        Binding("ctrl+down", "select_reply(1)", "select reply", show=False),
        Binding("b", "toggle_adapter", "A/B"),
        Binding("c", "compare", "compare"),
        Binding("B", "toggle_blind", "blind", show=False),
        Binding("d", "dataset", "data"),
        Binding("n", "new_conversation", "new", show=False),
        Binding("s", "pick_system", "system", show=False),
        Binding("T", "pick_template", "template", show=False),
        Binding("m", "pick_model", "model", show=False),
        Binding("t", "train", "train"),
        Binding("r", "runs", "runs"),
        Binding("x", "export", "export"),
    ]

    def __init__(self) -> None:
        super().__init__(id="chat")
        self.generation: Generation | None = None
        self.waiting: str | None = None  # sent while the model was loading

    def compose(self) -> ComposeResult:
        yield StatusBar()
        with Conversation(id="conversation"):
            yield Static(id="system-note")
            yield Static(Text("Loading the model… you can type already; d opens the dataset.", style="italic"),
                         id="loading-note")
        yield ChatInput(id="chat-input", placeholder=PLACEHOLDER)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(ChatInput).focus()
        self.show_system_note()

    async def on_screen_resume(self) -> None:
        await self.refresh_marks()

    # -- state the app asks about ----------------------------------------------------------------

    @property
    def replies(self) -> list[ReplyMessage]:
        return list(self.query(ReplyMessage))

    @property
    def streaming(self) -> bool:
        return self.generation is not None

    def context(self) -> list[dict]:
        """The conversation so far as chat messages, system first; corrected replies as corrected."""
        messages = [{"role": "system", "content": self.app.system_text}] if self.app.system_text else []
        for widget in self.query_one(Conversation).children:
            if isinstance(widget, UserMessage):
                messages.append({"role": "user", "content": widget.text})
            elif isinstance(widget, ReplyMessage) and not widget.reply.streaming and widget.reply.shown:
                messages.append({"role": "assistant", "content": widget.reply.shown})
        return messages

    def last_prompt(self) -> list[dict] | None:
        """What the last reply answered (system .. last user message), for compare."""
        replies = self.replies
        return replies[-1].reply.context if replies else None

    async def model_loaded(self) -> None:
        await self.query("#loading-note").remove()
        await self.send_waiting()

    async def model_loading(self, name: str) -> None:
        """Another model is loading in place of the last one (m)."""
        await self.query("#loading-note").remove()
        await self.query_one(Conversation).mount(Static(Text(f"Loading {name}…", style="italic"), id="loading-note"))

    def model_failed(self, error: str) -> None:
        if self.waiting is not None:
            self.query_one(ChatInput).give_back(self.waiting)
            self.waiting = None
        self.query_one("#loading-note", Static).update(Text(
            f"The model did not load: {error}\nYou can still browse the dataset (d). Quit with ctrl+q.",
            style="bold red"))

    def show_system_note(self) -> None:
        flat = " ".join(self.app.system_text.split()) or "(none)"
        note = Text(f"system prompt · {self.app.system_name}: ", style="dim bold")
        note.append(flat, style="dim italic")
        self.query_one("#system-note", Static).update(note)

    # -- sending and streaming -------------------------------------------------------------------

    async def on_chat_input_submitted(self, event: ChatInput.Submitted) -> None:
        if self.app.load_error:
            event.chat_input.give_back(event.text)
            self.notify(f"No model: {self.app.load_error}", severity="error", markup=False)
            return
        if self.streaming or self.waiting is not None:
            event.chat_input.give_back(event.text)
            self.notify("A reply is still streaming: esc stops it.", severity="warning")
            return
        if self.app.engine is None:
            self.waiting = event.text
            self.notify("The model is still loading: your message goes out when it is ready.")
            return
        await self.send(event.text)

    async def send_waiting(self) -> None:
        """The model is ready: send what the user typed while it loaded."""
        text, self.waiting = self.waiting, None
        if text is not None:
            await self.send(text)

    async def send(self, text: str) -> None:
        conversation = self.query_one(Conversation)
        context = self.context() + [{"role": "user", "content": text}]
        view = ReplyMessage(Reply(context=context))
        await conversation.mount_all([UserMessage(text), view])
        conversation.anchor()
        self.generation = Generation()
        self.app.start_worker(partial(self._generate, view, self.generation), name="reply")

    def _generate(self, view: ReplyMessage, generation: Generation) -> None:
        """Worker thread: one reply. Errors reach the app's worker handler after the view is closed."""
        app = self.app
        finish = "error"
        try:
            with app.engine_lock:
                finish = stream_into(app, view.reply.context, view, generation, partial(self._context_trimmed, view))
        finally:
            app.call_from_thread(self._reply_done, view, generation, finish)

    async def _reply_done(self, view: ReplyMessage, generation: Generation, finish: str) -> None:
        if self.generation is generation:
            self.generation = None
        if not view.reply.speaker:
            view.reply.speaker = self.app.engine.which()
        await view.finish(finish)

    async def _context_trimmed(self, view: ReplyMessage, dropped: int) -> None:
        """One quiet line per conversation, where it first happened: the oldest messages no longer reach
        the model. The replies keep their whole context, so what is judged is stored whole."""
        text = Text(f"⋯ the {dropped} oldest messages no longer fit the model's context and are left out",
                    style="dim italic")
        try:
            self.query_one("#context-note", Static).update(text)
        except NoMatches:
            await self.query_one(Conversation).mount(Static(text, id="context-note"), before=view)

    def stop(self) -> bool:
        if self.generation is None:
            return False
        self.generation.cancel()
        return True

    # -- selecting replies -----------------------------------------------------------------------

    def on_key(self, event: events.Key) -> None:
        """A printable key that no binding wants, typed while the replies have the focus, starts a
        message, so typing never needs a Tab first (key events reach us before the bindings)."""
        if (isinstance(self.focused, ChatInput) or not event.is_printable or not event.character
                or event.key in self.active_bindings or event.key in self.app.active_bindings):
            return
        chat_input = self.query_one(ChatInput)
        chat_input.focus()
        chat_input.insert(event.character)
        event.stop()

    def action_escape(self) -> None:
        if self.stop():
            return
        if isinstance(self.focused, ChatInput):
            self.action_select_reply(-1)
        else:
            self.query_one(ChatInput).focus()

    def action_switch_focus(self) -> None:
        if isinstance(self.focused, ChatInput):
            self.action_select_reply(-1)
        else:
            self.query_one(ChatInput).focus()

    def action_select_reply(self, step: int) -> None:
        replies = self.replies
        if not replies:
            self.query_one(Conversation).focus()
        elif isinstance(self.focused, ReplyMessage):
            self.on_reply_message_moved(ReplyMessage.Moved(self.focused, step))
        else:
            replies[-1].focus()

    def on_reply_message_moved(self, event: ReplyMessage.Moved) -> None:
        replies = self.replies
        index = replies.index(event.view) + event.step
        if index >= len(replies):
            self.query_one(ChatInput).focus()
        else:
            replies[max(0, index)].focus()

    async def refresh_marks(self) -> None:
        """The dataset screen may have edited or deleted records: show what the store holds now."""
        store = self.app.store
        if store is None:
            return
        for view in self.replies:
            if view.reply.record_id is not None:
                sync_from_store(store, view.reply)
                await view.show_verdict()

    # -- judging replies -------------------------------------------------------------------------

    async def on_reply_message_judged(self, event: ReplyMessage.Judged) -> None:
        view, kind = event.view, event.kind
        reply = view.reply
        if reply.streaming:
            self.notify("Wait for the reply to finish, or press esc to stop it.", severity="warning")
            return
        if self.app.store is None:
            self.notify(f"Feedback cannot be saved: {self.app.store_error}", severity="error", markup=False)
            return
        if kind == "approved":
            await self.save(view, "approved")
        elif kind == "flagged":
            draft = reply.unsaved.get("reason") or reply.reason or ""
            self.app.push_screen(FlagModal(draft), partial(self._flag_chosen, view))
        else:
            draft = reply.unsaved.get("correction") or reply.correction or reply.text
            self.app.push_screen(CorrectModal(reply.context[-1]["content"], draft),
                                 partial(self._correction_chosen, view))

    async def _flag_chosen(self, view: ReplyMessage, reason: str | None) -> None:
        if reason is not None:
            await self.save(view, "flagged", reason=reason or None)

    async def _correction_chosen(self, view: ReplyMessage, text: str | None) -> None:
        if text is not None:
            await self.save(view, "corrected", correction=text)

    async def save(self, view: ReplyMessage, kind: str, *, correction: str | None = None,
                   reason: str | None = None) -> None:
        reply = view.reply
        app = self.app
        try:
            saved = save_verdict(app.store, reply, kind, correction=correction, reason=reason,
                                 model=app.model_label, params=app.params.as_dict())
        except ChattuneError as err:
            failed = isinstance(err, StoreError)  # a full disk, a locked or broken file: worth a retry
            reply.unsaved = {"kind": kind, "correction": correction, "reason": reason, "failed": failed}
            await view.show_verdict()
            self.notify(f"{err}" + ("\nYour feedback is kept here: press the key again to retry." if failed else ""),
                        title="feedback not saved", severity="error" if failed else "warning", markup=False)
            return
        await view.show_verdict()
        mark, word = MARKS[kind]
        if saved.duplicate:
            self.notify(f"{mark} already in the dataset as #{saved.record_id}", markup=False)
        else:
            self.notify(f"{mark} {word}: saved as #{saved.record_id}", markup=False)
        app.post_message(StoreChanged())

    # -- chat-wide keys --------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in LETTER_ACTIONS and isinstance(self.focused, ChatInput):
            return False
        return True

    def action_toggle_adapter(self) -> None:
        self.app.toggle_adapter()

    def action_toggle_blind(self) -> None:
        self.app.toggle_blind()

    def action_compare(self) -> None:
        if self.streaming:
            self.notify("Wait for the reply to finish (or esc), then compare.", severity="warning")
            return
        context = self.last_prompt()
        if context is None:
            self.notify("Ask something first: compare answers your last prompt with base and adapter.")
            return
        self.app.compare(context)

    async def action_new_conversation(self) -> None:
        self.stop()
        await self.query(UserMessage).remove()
        await self.query(ReplyMessage).remove()
        await self.query("#context-note").remove()
        self.query_one(ChatInput).focus()
        self.notify("New conversation.")

    def action_pick_system(self) -> None:
        self.app.pick_system_prompt()

    def action_pick_template(self) -> None:
        self.app.pick_template()

    def action_pick_model(self) -> None:
        self.app.pick_model()

    def action_dataset(self) -> None:
        self.app.open_dataset()

    def action_train(self) -> None:
        self.app.train()

    def action_runs(self) -> None:
        self.app.open_runs()

    def action_export(self) -> None:
        self.app.export()
