"""The llama.cpp engine: GGUF models on CPU (or a GPU build), GGUF LoRA adapters swapped at runtime."""

from __future__ import annotations

import codecs
import ctypes
import os
import threading
from collections.abc import Iterator

from engine.adapters import AdapterRef
from engine.engines.adapter_slots import AdapterSlots
from engine.engines.base import GenParams, ReplyStream
from engine.engines.context import fit_context, reply_room
from engine.engines.cores import CoreShare
from engine.errors import AdapterError, ChattuneError, ModelNotFound
from engine.hardware import GPU_LAYERS_ENV, gpu_layers
from engine.prompts import template_override
from engine.templates import StopText, choose_template, render_chat

MAX_CTX = 4096
DEFAULT_PARAMS = GenParams()
_DEFAULT_PARAMS_LOCK = threading.Lock()  # load_llama swaps llama_cpp's default-params function


def load_llama(path: str, n_ctx: int = MAX_CTX, logits_all: bool = False):
    """llama_cpp.Llama with weight repacking ("extra buffer types") switched off.

    A native build on a CPU with AMX segfaults as soon as a quantized model evaluates a batch of
    more than one token through the repacked AMX buffers. Llama() does not expose
    `use_extra_bufts`, so it gets model params whose default has it off while it builds them.
    """
    import llama_cpp
    from llama_cpp import llama_cpp as lib

    from engine.quiet import quiet_llama_cpp, verbose

    quiet_llama_cpp()  # verbose=False alone lets some of llama.cpp's lines through; -v shows them all
    default_params = lib.llama_model_default_params

    def guarded_params():
        params = default_params()
        params.use_extra_bufts = False
        return params

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # Half the logical cores: the physical ones on SMT machines, and room for the UI and a training
    # child. ggml's threads spin-wait on each other, so oversubscribed they run ~10x slower than one.
    threads = max(1, cores // 2)
    layers, _why = gpu_layers(os.environ.get(GPU_LAYERS_ENV), bool(llama_cpp.llama_supports_gpu_offload()))
    with _DEFAULT_PARAMS_LOCK:
        lib.llama_model_default_params = guarded_params
        try:
            llm, fallback = load_placed(llama_cpp.Llama, path, layers, n_ctx=n_ctx, n_threads=threads,
                                        n_threads_batch=threads, logits_all=logits_all, verbose=verbose())
        finally:
            lib.llama_model_default_params = default_params
    llm.gpu_fallback = fallback  # for the UI's status bar: why the GPU was meant but the CPU runs it
    if llm.model_params.use_extra_bufts:  # the guard must never silently stop working
        llm.close()
        raise RuntimeError("llama-cpp-python ignored use_extra_bufts=False; the AMX crash guard is not active")
    return llm


def load_placed(make, path: str, layers: int, **kwargs):
    """(make(path, n_gpu_layers=layers), None); on the CPU when that fails on the GPU: (model, why).
    llama.cpp cannot tell why a load failed, and on a GPU the usual cause is its memory."""
    try:
        return make(path, n_gpu_layers=layers, **kwargs), None
    except ValueError:
        if layers == 0:
            raise  # the file itself: the caller says so
    why = "loading onto the GPU failed, most likely for lack of free GPU memory (a training run may hold it)"
    return make(path, n_gpu_layers=0, **kwargs), f"{why}: llama.cpp runs on the CPU"


class ParkedSide:
    """The KV cache of a side (base or an adapter) that is not in effect: its tokens and llama.cpp's copy
    of their keys and values (sequence 0), so that switching back re-reads only what is new."""

    def __init__(self, tokens, state):
        self.tokens = tokens
        self.state = state


class MergedSide:
    """An adapter that llama.cpp cannot apply as a LoRA, as base and adapter merged into one GGUF
    (engine.export.chat_merge): a second model with its own KV cache, so a switch re-reads nothing."""

    def __init__(self, llm):
        self.llm = llm


class LlamaCppEngine(AdapterSlots, CoreShare):
    kind = "llamacpp"

    def __init__(self, spec, workspace=None, template: str | None = None, n_ctx: int = MAX_CTX):
        if not spec.is_gguf:
            raise ChattuneError(
                f"the llama.cpp engine needs a GGUF model, and {spec.name} is a Hugging Face folder",
                "use --engine transformers, or export the model to GGUF with `chattune export`",
            )
        if template:
            template_override(template)  # a bad name fails before the load
        try:
            self._llm = load_llama(str(spec.path), n_ctx=n_ctx)
        except ValueError as err:
            raise ModelNotFound(
                f"llama.cpp could not load {spec.path}: {err}",
                "the file may be corrupt, or of an architecture this llama-cpp-python does not know; "
                "try upgrading llama-cpp-python",
            ) from err
        import llama_cpp

        self._lib = llama_cpp
        self.name = spec.name
        self.gpu_fallback = self._llm.gpu_fallback  # None, or why the CPU runs what the GPU was meant to
        llm = self._llm
        self.template_choice = self._choose_template(template)
        self._template = self.template_choice.text
        self._bos_text = self._token_text(llm.token_bos())
        self._eos_text = self._token_text(llm.token_eos())
        # Past the training context the model degrades, so that is the limit even if n_ctx is larger.
        self._n_ctx = min(llm.n_ctx(), llm._model.n_ctx_train())
        self._base_llm = self._llm
        self._lora_side: str | None = None  # the LoRA on the base model's context (None: none)
        self._loaded: dict[str, object] = {}  # name -> llama_adapter_lora pointer, or a MergedSide
        self._parked: dict[str | None, ParkedSide] = {}  # the side last left (one: A/B has two sides)
        self._init_slots()
        self._init_cores(workspace.runs_dir if workspace is not None else None)
        self.last_tokens: list[int] = []  # token ids of the latest reply (parity checks, benchmarks)
        self.last_prompt_evaluated = 0  # prompt tokens the latest reply evaluated (the rest was cached)

    def _choose_template(self, template: str | None):
        llm = self._llm
        return choose_template(
            template, llm.metadata.get("tokenizer.chat_template"), self.name,
            family=llm.metadata.get("general.architecture"),
            has_token=lambda text: len(llm.tokenize(text.encode(), add_bos=False, special=True)) == 1)

    def set_template(self, template: str | None) -> None:
        """Another chat template (None: the one chosen for the model), from the next reply. No reload:
        the prompt's tokens change, and the KV cache keeps what they still share."""
        choice = self._choose_template(template)
        with self._lock:
            self.template_choice, self._template = choice, choice.text

    def _token_text(self, token: int) -> str:
        return self._llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

    # --- replies --------------------------------------------------------------------------------

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        """The rendered chat template as tokens, with BOS added when the model wants one and the
        template did not write it itself."""
        prompt = render_chat(self._template, messages, bos_token=self._bos_text, eos_token=self._eos_text)
        add_bos = self._llm._model.add_bos_token() and not (self._bos_text and prompt.startswith(self._bos_text))
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    def stream(self, messages: list[dict], params: GenParams = DEFAULT_PARAMS) -> ReplyStream:
        rendered = {}

        def count(kept: list[dict]) -> int:
            rendered[len(kept)] = self.prompt_tokens(kept)
            return len(rendered[len(kept)])

        kept, dropped, n_prompt = fit_context(messages, count, self._n_ctx, reply_room(params.max_tokens, self._n_ctx))
        tokens = rendered[len(kept)]
        self._look_at_load()
        reply = ReplyStream(iter(()), self._begin_reply(), dropped=dropped)
        reply.pieces = self._pieces(tokens, min(params.max_tokens, self._n_ctx - n_prompt), params, reply)
        return reply

    def _pieces(self, tokens: list[int], max_tokens: int, params: GenParams, reply: ReplyStream) -> Iterator[str]:
        llm = self._llm
        vocab = llm._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
        stops = StopText(self.template_choice.stops)  # a stand-in template: the next turn ends the reply
        self.last_tokens = []
        try:
            self._follow_load()
            if params.temperature > 0:
                llm.set_seed(params.seed)
            self._lib.llama_perf_context_reset(llm.ctx)  # counts the prompt tokens evaluated, not reused
            for i, token in enumerate(llm.generate(tokens, temp=params.temperature, top_p=params.top_p, top_k=0,
                                                   min_p=0.0, repeat_penalty=1.0)):
                if i == 0:  # the prompt is in: llama.cpp's counters say how much of it was not cached
                    perf = self._lib.llama_perf_context(llm.ctx)
                    self.last_prompt_evaluated = perf.n_p_eval + perf.n_eval - 1  # each reads at least 1
                self._follow_load()  # a child started: the next token already leaves it its cores
                # EOS or the template's end-of-turn; with a stand-in template (a base model), any control
                # token: the base never learned its turn tokens, and a young adapter writes a neighbour.
                if self._lib.llama_vocab_is_eog(vocab, token) or (
                        stops.stops and self._lib.llama_vocab_is_control(vocab, token)):
                    reply.finish_reason = "stop"
                    break
                self.last_tokens.append(token)
                reply.n_tokens += 1
                # With turn markers as stops, special tokens are text here so that they can be seen.
                piece = stops.feed(decoder.decode(llm.detokenize([token], special=bool(stops.stops))))
                if piece:
                    yield piece
                if stops.stopped:
                    reply.finish_reason = "stop"
                    break
                if reply.n_tokens >= max_tokens:
                    reply.finish_reason = "length"
                    break
            tail = stops.feed(decoder.decode(b"", final=True)) + stops.flush()
            if tail:
                yield tail
        finally:
            self._end_reply()

    # --- adapters -------------------------------------------------------------------------------

    def load_adapter(self, adapter: AdapterRef) -> None:
        if adapter.name in self._loaded:
            return
        if adapter.gguf_path is None and adapter.merged_gguf is not None:
            self._load_merged(adapter)
            return
        path = adapter.need_gguf()
        handle = self._lib.llama_adapter_lora_init(self._base_llm.model, str(path).encode("utf-8"))
        if not handle:
            raise AdapterError(
                f"llama.cpp could not load the GGUF LoRA {path}",
                "it must be converted for this base model (same architecture and sizes)",
            )
        with self._lock:
            self._loaded[adapter.name] = handle

    def _load_merged(self, adapter: AdapterRef) -> None:
        try:
            llm = load_llama(str(adapter.merged_gguf), n_ctx=self._base_llm.n_ctx())
        except ValueError as err:
            raise AdapterError(f"llama.cpp could not load the merged adapter model {adapter.merged_gguf}: {err}",
                               "use --engine transformers for this adapter") from err
        n = self.threads or self._wanted_threads
        self._lib.llama_set_n_threads(llm.ctx, n, n)
        with self._lock:
            self._loaded[adapter.name] = MergedSide(llm)

    def _apply(self, name: str | None) -> None:
        """Make `name` (None: the base) answer. A merged side is its own model; the others share the base."""
        side = self._loaded.get(name) if name is not None else None
        if isinstance(side, MergedSide):
            self._llm = side.llm
            return
        self._llm = self._base_llm
        if name != self._lora_side:
            self._set_lora(name)
            self._lora_side = name

    def _set_lora(self, name: str | None) -> None:
        """Put a LoRA (None: none) on the base's context. No reload of the base. The KV cache holds keys and
        values computed with the other weights: the side left keeps them parked, and the side taken gets
        back its own, so a reply re-reads only what it has not seen."""
        lib = self._lib
        leaving = self._park()
        if name is None:
            failed = lib.llama_set_adapters_lora(self._llm.ctx, None, 0, None)
        else:
            adapters = (lib.llama_adapter_lora_p_ctypes * 1)(self._loaded[name])
            failed = lib.llama_set_adapters_lora(self._llm.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
        if failed:
            raise AdapterError(f"llama.cpp refused to apply adapter {name!r}", "reload the model")
        self._llm.reset()  # n_tokens 0, and the next reply evaluates at least its last token
        self._clear_kv()
        back = self._parked.pop(name, None)
        if back is not None:
            self._unpark(back)
        self._parked = {} if leaving is None else {self._lora_side: leaving}

    def _park(self) -> ParkedSide | None:
        llm, lib = self._llm, self._lib
        n = llm.n_tokens
        if n == 0:
            return None
        size = lib.llama_state_seq_get_size(llm.ctx, 0)
        state = (ctypes.c_uint8 * size)()
        if lib.llama_state_seq_get_data(llm.ctx, state, size, 0) != size:
            return None
        return ParkedSide(llm.input_ids[:n].copy(), state)

    def _unpark(self, side: ParkedSide) -> None:
        llm = self._llm
        if not self._lib.llama_state_seq_set_data(llm.ctx, side.state, len(side.state), 0):
            self._clear_kv()  # a partial restore must not pass for a cache
            return
        n = len(side.tokens)
        llm.input_ids[:n] = side.tokens
        llm.n_tokens = n

    def _clear_kv(self) -> None:
        self._lib.llama_memory_seq_rm(self._lib.llama_get_memory(self._llm.ctx), 0, -1, -1)

    def _use_threads(self, n: int) -> None:
        for llm in self._models():
            self._lib.llama_set_n_threads(llm.ctx, n, n)

    def _models(self) -> list:
        return [self._base_llm, *(side.llm for side in self._loaded.values() if isinstance(side, MergedSide))]

    def close(self) -> None:
        with self._lock:
            if self._llm is None:
                return
            base = self._base_llm
            self._lib.llama_set_adapters_lora(base.ctx, None, 0, None)
            for side in self._loaded.values():
                if isinstance(side, MergedSide):
                    side.llm.close()
                else:
                    self._lib.llama_adapter_lora_free(side)
            self._loaded.clear()
            self._parked.clear()
            base.close()
            self._llm = self._base_llm = None
