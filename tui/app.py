"""chattune's app: the screen comes up at once, the model loads in a worker thread, and every failure
ends up as a notification rather than a traceback."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace

from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from engine.api import (
    ChatEngine,
    ChattuneError,
    FeedbackStore,
    GenParams,
    Workspace,
    chat_templates,
    default_engine_for,
    listed_model,
    newest_adapter,
    open_engine,
    resolve_adapter,
    resolve_model,
    system_prompt,
    system_prompts,
)
from tui.generation import Generation
from tui.labels import adapter_of, speaker_title
from tui.messages import EngineChanged, StoreChanged
from tui.modals.confirm import ConfirmModal
from tui.modals.export import ExportModal
from tui.modals.help import HelpModal
from tui.modals.model import ModelModal
from tui.modals.system_prompt import SystemPromptModal
from tui.modals.template import AUTOMATIC, TemplateModal
from tui.modals.train import TrainModal
from tui.screens.chat import ChatScreen
from tui.screens.compare import CompareScreen
from tui.screens.dataset import DatasetScreen
from tui.screens.runs import RunsScreen
from tui.training import Trainer, swap_in, switched
from tui.widgets.status_bar import StatusBar, StatusInfo

# Loads the model (slow; runs on a worker thread): returns what the status bar shows and the engine.
EngineLoader = Callable[[], tuple[str, ChatEngine]]
ENGINE_CLOSE_WAIT_S = 30  # a reply still streaming at quit stops at its next token; this is a backstop


def open_model(args, workspace: Workspace) -> tuple[str, ChatEngine]:
    """The engine for the CLI options (--model, --engine, --template), as engine.session.open_chat does."""
    spec = resolve_model(getattr(args, "model", None))
    kind = getattr(args, "engine", None) or default_engine_for(spec)
    engine = open_engine(kind, spec, workspace, template=getattr(args, "template", None))
    return f"{spec.name} · {kind}", engine


class ChattuneApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "chattune"
    BINDINGS = [Binding("question_mark,f1", "help", "help", key_display="?")]

    def __init__(self, workspace: Workspace, load_engine: EngineLoader, *, system: str = "default",
                 adapter: str | None = None, params: GenParams | None = None, model_arg: str | None = None,
                 template: str | None = None) -> None:
        super().__init__()
        self.workspace = workspace
        self._load_engine = load_engine
        self.system_name = system
        self.system_text = system_prompt(system)
        self.startup_adapter = adapter
        self.params = params or GenParams()
        self.engine: ChatEngine | None = None
        self.model_label = ""
        self.load_error = ""
        self.store: FeedbackStore | None = None
        self.store_error = ""
        self.engine_lock = threading.Lock()  # one generation or adapter load at a time
        self.generations: set[Generation] = set()  # running now; quitting cancels them
        self.b_side: str | None = None  # the adapter that `b` and compare use
        self.blind = False
        self.rng = random.Random()  # shuffles the sides of a blind compare
        self._stats: tuple[dict | None, str] | None = None  # (store stats, store error), see status()
        self.model_arg = model_arg  # --model: what training runs train on
        self.template_name = template or AUTOMATIC  # --template or T: the chat's, training's and export's
        self.trainer = Trainer(self)

    def on_mount(self) -> None:
        self.push_screen(ChatScreen())
        self._open_store()
        self.start_worker(self._load_model, name="load-model")
        self.refresh_status()
        self.trainer.attach_running()

    def _open_store(self) -> None:
        try:
            self.store = FeedbackStore(self.workspace.db_path)
        except ChattuneError as err:
            self.store_error = str(err)
            self.notify(str(err), title="feedback store unavailable", severity="error", timeout=30, markup=False)

    # -- workers: all of them start here, so one handler sees every failure ------------------------

    def start_worker(self, work: Callable[[], object], *, name: str) -> Worker:
        return self.run_worker(work, name=name, group=name, thread=True, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        message = str(error) if isinstance(error, ChattuneError) else f"{type(error).__name__}: {error}"
        if event.worker.name == "load-model":
            self.load_error = message
            self.chat.model_failed(message)
            self.post_message(EngineChanged())
            self.notify(message, title="the model did not load", severity="error", timeout=60, markup=False)
        else:
            self.notify(message, title=f"{event.worker.name} failed", severity="error", timeout=20, markup=False)

    # -- the model -------------------------------------------------------------------------------

    def _load_model(self) -> None:
        label, engine = self._load_engine()
        adapter_error = None
        if self.startup_adapter:
            try:
                ref = resolve_adapter(self.workspace, self.startup_adapter)
                engine.load_adapter(ref)
                engine.set_adapter(ref.name)
                self.b_side = ref.name
            except ChattuneError as err:
                adapter_error = str(err)
        self.call_from_thread(self._model_ready, label, engine, adapter_error)

    async def _model_ready(self, label: str, engine: ChatEngine, adapter_error: str | None) -> None:
        self.model_label, self.engine = label, engine
        self.post_message(EngineChanged())
        await self.chat.model_loaded()
        choice = getattr(engine, "template_choice", None)
        if choice is not None and choice.name != "own":  # the model's own needs no word; a stand-in does
            self.notify(f"{choice.reason}. Another: T, or --template NAME.", title="chat template", timeout=12,
                        markup=False)
        if adapter_error:
            self.notify(f"{adapter_error}\nThe base model answers.", title="adapter not loaded", severity="error",
                        timeout=30, markup=False)
        if getattr(engine, "gpu_fallback", None):  # the chat still works, on the CPU: say why, once
            self.notify(f"{engine.gpu_fallback}. The chat runs on the CPU.", title="GPU", severity="warning",
                        timeout=20, markup=False)

    def engine_ready(self, tell: bool = False) -> bool:
        if self.engine is None and tell:
            if self.load_error:
                self.notify(f"No model: {self.load_error}", severity="error", markup=False)
            else:
                self.notify("The model is still loading.", severity="warning")
        return self.engine is not None

    # -- A/B ---------------------------------------------------------------------------------------

    def toggle_adapter(self) -> None:
        if not self.engine_ready(tell=True):
            return
        if adapter_of(self.engine.which()) is not None:
            self.use_adapter(None)
        else:
            self.with_b_side(self.use_adapter)

    def use_adapter(self, name: str | None) -> None:
        try:
            self.engine.set_adapter(name)
        except ChattuneError as err:
            self.notify(str(err), title="adapter", severity="error", markup=False)
            return
        self.post_message(EngineChanged())
        self.notify(f"{speaker_title(self.engine.which())} answers next.", markup=False)

    def with_b_side(self, then: Callable[[str], None]) -> None:
        """Call `then(adapter name)` with the loaded adapter, loading the newest trained one if needed."""
        if self.b_side is not None:
            then(self.b_side)
            return
        newest = newest_adapter(self.workspace, self.model_arg)
        if newest is None:
            self.notify("No adapter yet. Judge some replies (a / e / f), train one (t), "
                        "or start with --adapter RUN_OR_FILE.", title="base model only", timeout=10)
            return
        self.notify(f"Loading adapter {newest.name}…", markup=False)
        self.start_worker(partial(self._load_adapter, newest, then), name="adapter")

    def _load_adapter(self, ref, then: Callable[[str], None]) -> None:
        with self.engine_lock:
            self.engine.load_adapter(ref)
        self.b_side = ref.name
        self.call_from_thread(then, ref.name)

    def hot_swap(self, name: str, *, activate: bool | None = None, announce: str | None = None) -> None:
        """Load adapter `name` into the live engine (no reload); it becomes the B side, and answers next
        if `activate` (None: if an adapter is answering now)."""
        if self.engine is None:
            self.b_side = None  # `b` loads the newest adapter once the model is there
            if announce:
                self.notify(announce, title="adapter ready", timeout=15, markup=False)
            return
        self.start_worker(partial(self._hot_swap, name, activate, announce), name="adapter")

    def _hot_swap(self, name: str, activate: bool | None, announce: str | None) -> None:
        loaded = swap_in(self, name)
        self.call_from_thread(switched, self, loaded, activate, announce)

    def toggle_blind(self) -> None:
        self.blind = not self.blind
        self.refresh_status()
        self.notify("Blind compare: sides shuffled, names shown after the vote." if self.blind
                    else "Blind compare off.")

    def compare(self, context: list[dict]) -> None:
        if self.engine_ready(tell=True):
            self.with_b_side(lambda name: self.push_screen(CompareScreen(context, name, blind=self.blind, rng=self.rng)))

    # -- other screens ---------------------------------------------------------------------------

    def open_dataset(self) -> None:
        self.push_screen(DatasetScreen())

    def open_runs(self) -> None:
        self.push_screen(RunsScreen())

    def runs_changed(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, RunsScreen):
                screen.reload()

    def train(self) -> None:
        """`t`: the training dialog, or, while a run goes, the offer to cancel it."""
        trainer = self.trainer
        if trainer.state.phase == "evaluating":
            self.notify(f"Run {trainer.state.run} is being evaluated; its adapter is loaded already.",
                        markup=False)
        elif trainer.active and trainer.handle is not None:
            question = (f"Cancel training run {trainer.handle.name}? It saves a checkpoint; resume it from the "
                        "runs screen (r).")
            self.push_screen(ConfirmModal(question), self._cancel_confirmed)
        elif trainer.active:
            self.notify("The run is starting…", severity="warning")
        else:
            self.push_screen(TrainModal(self.workspace, self.model_arg), self._train_chosen)

    def _train_chosen(self, config) -> None:
        if config is not None:
            self.trainer.start(config.with_overrides(template=self.template_name))

    def _cancel_confirmed(self, yes: bool | None) -> None:
        if yes:
            self.trainer.cancel()

    def export(self) -> None:
        self.push_screen(ExportModal(self.workspace))

    def pick_system_prompt(self) -> None:
        self.push_screen(SystemPromptModal(system_prompts(), self.system_name), self._system_chosen)

    def _system_chosen(self, name: str | None) -> None:
        if name is None or name == self.system_name:
            return
        self.system_name, self.system_text = name, system_prompt(name)
        self.chat.show_system_note()
        self.notify(f"System prompt: {name}. It applies from the next reply.", markup=False)

    def pick_template(self) -> None:
        if self.engine_ready(tell=True):
            choice = getattr(self.engine, "template_choice", None)
            reason = choice.reason if choice is not None and self.template_name == AUTOMATIC else "the model's choice"
            self.push_screen(TemplateModal(chat_templates(self.workspace.root), self.template_name, reason),
                             self._template_chosen)

    def _template_chosen(self, name: str | None) -> None:
        if name is None or name == self.template_name or self.engine is None:
            return
        try:
            self.engine.set_template(name or None)  # a reply in flight keeps the template it started with
        except ChattuneError as err:
            self.notify(str(err), title="chat template", severity="error", markup=False)
            return
        self.template_name = name
        self.notify(f"{self.engine.template_choice.reason}. It applies from the next reply; training and export "
                    "use it too.", title="chat template", markup=False)

    def pick_model(self) -> None:
        self.push_screen(ModelModal(self.workspace.root, self.model_arg), self._model_chosen)

    def _model_chosen(self, path: str | None) -> None:
        if path is not None:  # "": the embedded model, as with no --model
            self.run_worker(self.switch_model(path or None), name="switch-model", group="switch-model")

    async def switch_model(self, model: str | None) -> None:
        """Load `model` in place of the chat's model. Its template is chosen afresh, and the adapters
        of the last model stay behind (the next `b` loads this model's newest)."""
        for generation in list(self.generations):
            generation.cancel()
        old, self.engine = self.engine, None
        self.model_arg, self.template_name, self.b_side, self.startup_adapter = model, AUTOMATIC, None, None
        self.model_label, self.load_error = "", ""
        self._load_engine = partial(open_model, SimpleNamespace(model=model, engine=None, template=None),
                                    self.workspace)
        self.post_message(EngineChanged())
        await self.chat.model_loading(model)
        self.start_worker(partial(self._close_then_load, old), name="load-model")

    def _close_then_load(self, old: ChatEngine | None) -> None:
        if old is not None:
            with self.engine_lock:  # a reply still streaming stops at its next token first
                old.close()
        self._load_model()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpModal):
            self.push_screen(HelpModal())

    # -- status ------------------------------------------------------------------------------------

    @property
    def chat(self) -> ChatScreen:
        return next(screen for screen in self.screen_stack if isinstance(screen, ChatScreen))

    def on_store_changed(self, _: StoreChanged) -> None:
        self.refresh_status()

    def on_engine_changed(self, _: EngineChanged) -> None:
        self.refresh_status()

    def status(self, store_changed: bool = True) -> StatusInfo:
        """`store_changed=False` (a training event) reuses the last dataset counts: no query per step."""
        if store_changed or self._stats is None:
            self._stats = self._read_stats()
        stats, store_error = self._stats
        return StatusInfo(model=self.model_label, loading=self.engine is None and not self.load_error,
                          load_error=self.load_error, speaker=self.engine.which() if self.engine else "base",
                          blind=self.blind, stats=stats, training=self.trainer.state, store_error=store_error,
                          gpu_fallback=(getattr(self.engine, "gpu_fallback", None) or "") if self.engine else "")

    def _read_stats(self) -> tuple[dict | None, str]:
        if self.store is None:
            return None, self.store_error
        try:
            return self.store.stats(), self.store_error
        except ChattuneError as err:
            return None, str(err)

    def refresh_status(self, store_changed: bool = True) -> None:
        info = self.status(store_changed)
        for screen in self.screen_stack:
            for bar in screen.query(StatusBar):
                bar.show(info)

    # -- quitting ----------------------------------------------------------------------------------

    async def action_quit(self) -> None:
        """A training run is its own process: quitting leaves it going (the next start follows it)."""
        if not self.trainer.active or isinstance(self.screen, ConfirmModal):
            self.exit()
            return
        question = (f"Quit? Run {self.trainer.state.run or ''} keeps training in the background and the app "
                    "follows it again when you reopen it.")
        self.push_screen(ConfirmModal(question), lambda yes: self.exit() if yes else None)

    def on_unmount(self) -> None:
        for generation in list(self.generations):
            generation.cancel()

    def close_resources(self) -> None:
        """After the app has exited: free the model and the store (a streaming thread stops first)."""
        if self.engine is not None and self.engine_lock.acquire(timeout=ENGINE_CLOSE_WAIT_S):
            try:
                self.engine.close()
            finally:
                self.engine_lock.release()
        if self.store is not None:
            self.store.close()


def run_app(args) -> int:
    """`chattune` / `chattune chat`: open the workspace, then the app; the model loads inside it."""
    workspace = Workspace.open(getattr(args, "workspace", None))
    args.model = listed_model(getattr(args, "model", None), workspace.root)  # --model N: `chattune models`' Nth
    app = ChattuneApp(workspace, partial(open_model, args, workspace), system=getattr(args, "system", None) or "default",
                      adapter=getattr(args, "adapter", None), model_arg=args.model,
                      template=getattr(args, "template", None))
    try:
        app.run()
    finally:
        app.close_resources()
    return app.return_code or 0
