"""The transformers engine: HF models (CUDA when present, else CPU), peft adapters switched in place."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

from engine.adapters import AdapterRef
from engine.engines.adapter_slots import AdapterSlots
from engine.engines.base import GenParams, ReplyStream
from engine.engines.context import common_prefix, fit_context, reply_room
from engine.engines.cores import CoreShare
from engine.errors import AdapterError, ModelNotFound
from engine.prompts import template_override
from engine.templates import StopText, hf_template, render_chat

DEFAULT_PARAMS = GenParams()


def pick_device():
    """('cuda', bf16 or fp16) when a GPU is visible, else ('cpu', fp32)."""
    import torch

    if torch.cuda.is_available():
        # Native bf16 only (compute capability 8.0+): on older GPUs torch emulates it, slowly.
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return "cpu", torch.float32


class TransformersEngine(AdapterSlots, CoreShare):
    kind = "transformers"

    def __init__(self, spec, workspace, template: str | None = None, placement: tuple | None = None):
        """`placement`: (device, torch dtype) instead of pick_device()'s (export verification's reference)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from engine.models import trainable_base

        if template:
            template_override(template)  # a bad name fails before the load
        hf_logging.disable_progress_bar()  # weight-loading bars are noise in a chat or a one-line error
        # A GGUF runs here through its cached full-precision copy (built once).
        folder = trainable_base(spec, workspace, progress=lambda msg: print(msg, file=sys.stderr))
        self.device, dtype = placement or pick_device()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True,
                                                              trust_remote_code=False)
        except (OSError, ValueError) as err:
            raise ModelNotFound(f"transformers could not load {folder}: {err}",
                                "check the folder is a complete causal-LM with safetensors weights") from err
        self.model.to(self.device).eval()
        self.name = spec.name
        self._folder = folder
        self.template_choice = hf_template(folder, self.tokenizer, template, spec.name)
        self._template = self.template_choice.text
        self._eos_ids = self._end_tokens()
        self._max_ctx = getattr(self.model.config, "max_position_embeddings", None)
        self._loaded: list[str] = []
        self._peft = None  # the PeftModel around self.model, once an adapter is loaded
        self._init_slots()
        self._init_cores(workspace.runs_dir if workspace is not None else None)
        self.last_tokens: list[int] = []  # token ids of the latest reply, without its end token
        self.last_prompt_evaluated = 0  # prompt tokens the latest reply evaluated (the rest was cached)
        self._kv: dict = {}  # side (None: base) -> (its DynamicCache, the token ids the cache holds)

    def set_template(self, template: str | None) -> None:
        """Another chat template (None: the one chosen for the model), from the next reply. No reload."""
        choice = hf_template(self._folder, self.tokenizer, template, self.name)
        with self._lock:
            self.template_choice, self._template = choice, choice.text
            self._eos_ids = self._end_tokens()

    def _end_tokens(self) -> list[int]:
        configured = self.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured])
        ids.add(self.tokenizer.eos_token_id)
        # The template's end-of-turn token (Gemma's <end_of_turn> is not its EOS)
        ids.update(self.tokenizer.convert_tokens_to_ids(t) for t in self.template_choice.end_tokens
                   if t in self.tokenizer.get_vocab())
        return sorted(i for i in ids if i is not None)

    # --- replies --------------------------------------------------------------------------------

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        """The rendered chat template as token ids. The template writes BOS itself where the model wants
        one (as apply_chat_template assumes)."""
        tok = self.tokenizer
        prompt = render_chat(self._template, messages, bos_token=tok.bos_token or "", eos_token=tok.eos_token or "")
        return tok(prompt, add_special_tokens=False)["input_ids"]

    def stream(self, messages: list[dict], params: GenParams = DEFAULT_PARAMS) -> ReplyStream:
        import torch

        encoded = {}

        def count(kept: list[dict]) -> int:
            encoded[len(kept)] = self.prompt_tokens(kept)
            return len(encoded[len(kept)])

        kept, dropped, max_new = messages, 0, params.max_tokens
        if self._max_ctx:
            kept, dropped, n_prompt = fit_context(messages, count, self._max_ctx,
                                                  reply_room(params.max_tokens, self._max_ctx))
            max_new = min(max_new, self._max_ctx - n_prompt)
        else:
            count(messages)
        ids = torch.tensor([encoded[len(kept)]], device=self.device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        self._look_at_load()
        reply = ReplyStream(iter(()), self._begin_reply(), dropped=dropped)
        reply.pieces = self._pieces(inputs, max_new, params, reply)
        return reply

    def _pieces(self, inputs, max_new: int, params: GenParams, reply: ReplyStream) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = threading.Event()
        follow_load = self._follow_load

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                follow_load()  # between two tokens, on the generating thread (torch's count is per thread)
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        # With turn markers as stops (a stand-in template), special tokens stay in the text to be seen.
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=not self.template_choice.stops)
        sampling = {"do_sample": False}
        if params.temperature > 0:
            torch.manual_seed(params.seed)
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        result: dict = {}
        cache, reused = self._cache_for(inputs["input_ids"][0].tolist())
        self.last_prompt_evaluated = inputs["input_ids"].shape[1] - reused

        def generate():
            try:
                torch.set_num_threads(self.threads)  # this new thread starts from torch's process-wide count
                with torch.inference_mode():
                    result["out"] = self.model.generate(
                        **inputs, streamer=streamer, max_new_tokens=max_new, eos_token_id=self._eos_ids,
                        pad_token_id=self.tokenizer.pad_token_id or self._eos_ids[0],
                        stopping_criteria=StoppingCriteriaList([Cancelled()]), cache=cache, **sampling,
                    )
            except BaseException as err:  # handed to the reading thread, which re-raises it
                result["error"] = err
                streamer.end()

        worker = threading.Thread(target=generate, name="chattune-generate", daemon=True)
        worker.start()
        try:
            # A stand-in's turn markers (plain's next "User:") end a base model's reply; its text shows
            # special tokens, so the end token that stopped generation is cut too.
            ends = tuple(self.tokenizer.convert_ids_to_tokens(self._eos_ids)) if self.template_choice.stops else ()
            stops = StopText(self.template_choice.stops + ends)
            for piece in streamer:
                piece = stops.feed(piece)
                if piece:
                    yield piece
                if stops.stopped:
                    stop.set()
                    break
            held = stops.flush()
            if held:
                yield held
            worker.join()
            if "error" in result:
                raise result["error"]
            self._kv[self._applied] = (cache, result["out"][0, :cache.get_seq_length()].tolist())
            new = result["out"][0, inputs["input_ids"].shape[1]:].tolist()
            ended = bool(new) and new[-1] in self._eos_ids
            reply.n_tokens = len(new) - ended
            self.last_tokens = new[:reply.n_tokens]
            reply.finish_reason = "stop" if ended or stops.stopped else "length"
        finally:
            stop.set()  # on cancel: generate() stops at its next step
            worker.join()
            self._end_reply()

    # --- adapters (peft, through transformers' adapter API: no reload of the base) ---------------

    def load_adapter(self, adapter: AdapterRef) -> None:
        if adapter.name in self._loaded:
            return
        path = adapter.need_peft()
        if not (path / "adapter_model.safetensors").is_file():
            # Pickled adapter_model.bin files can run code, so they are never loaded.
            raise AdapterError(f"adapter {adapter.name!r} has no adapter_model.safetensors in {path}",
                               "re-save it with safetensors (peft's default)")
        with self._lock:
            try:
                self._inject(path, adapter.name)
            except (OSError, ValueError, RuntimeError, KeyError) as err:
                raise AdapterError(f"peft could not load adapter {adapter.name!r} from {path}: {err}",
                                   "it must be trained on this base model") from err
            self._loaded.append(adapter.name)
            self._apply(self._applied)  # loading may switch the active adapter: restore the one in effect

    def _inject(self, path, name: str) -> None:
        """Add the adapter's LoRA layers to the live model (peft's own API: transformers' adapter
        mixin demands a newer peft than the registry has)."""
        from peft import PeftModel

        if self._peft is None:
            # torch_device: else peft loads the weights onto any GPU it sees, even for a model on the CPU.
            self._peft = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False,
                                                   torch_device=self.device)
            self._peft.eval()
        else:
            self._peft.load_adapter(str(path), adapter_name=name, is_trainable=False, torch_device=self.device)

    def _apply(self, name: str | None) -> None:
        """Make an adapter (None: none) the active one. Each side keeps its own KV cache: the one taken
        and the one left (A/B has two sides)."""
        if name != self._applied:
            self._kv = {side: kv for side, kv in self._kv.items() if side in (name, self._applied)}
        if self._peft is None:
            return
        if name is None:
            self._peft.base_model.disable_adapter_layers()
        else:
            self._peft.set_adapter(name)
            self._peft.base_model.enable_adapter_layers()

    def _cache_for(self, ids: list[int]):
        """(cache, tokens reused): the side's KV cache cut back to what it shares with the prompt `ids`
        (its last token is always read again, for the next token's logits), or a new cache."""
        from transformers import DynamicCache

        cache, held = self._kv.pop(self._applied, (None, []))
        reused = min(common_prefix(held, ids), len(ids) - 1)
        if cache is None or reused <= 0 or not cache.is_croppable:
            return DynamicCache(config=self.model.config), 0
        extra = cache.get_seq_length() - reused
        if extra:
            cache.crop(-extra)  # a negative count: that many tokens off the end
        return cache, reused

    def _use_threads(self, n: int) -> None:
        import torch

        torch.set_num_threads(n)

    def close(self) -> None:
        # The peft wrapper holds the model as well: both go, or empty_cache() has nothing to free.
        self.model = self._peft = None
        if self.device == "cuda":
            import gc

            import torch

            gc.collect()  # the model's modules refer to each other
            torch.cuda.empty_cache()
