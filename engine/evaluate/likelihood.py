"""Log-likelihoods under the base and the adapter, from one transformers model with the peft adapter on top.

Switching the adapter off (`disable_adapter`) gives the base without a second copy of the weights.
Scoring a known answer needs one forward pass, so this is cheap and does not depend on sampling.
"""

from __future__ import annotations

import math
from pathlib import Path

from engine.templates import hf_template, render_chat

MAX_WINDOW = 1024  # perplexity is taken over windows of at most this many tokens


class ScoringModel:
    def __init__(self, base_dir: Path, adapter_dir: Path, template: str | None = None):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._threads = torch.get_num_threads()
        if self.device == "cpu":
            # Measured on 2 cores with one other busy process (the chat, another run): one thread
            # scored 10x faster than two, which stall on each other. The work here is a few passes.
            torch.set_num_threads(1)
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(base_dir)
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype, use_safetensors=True).to(self.device)
        self.model = PeftModel.from_pretrained(base, adapter_dir).eval()
        self._template = hf_template(base_dir, self.tokenizer, template).text  # as training chose it
        limit = getattr(base.config, "max_position_embeddings", None) or MAX_WINDOW
        self.window = min(MAX_WINDOW, limit)

    def answer_loglik(self, messages: list[dict], answer: str) -> tuple[float, float]:
        """Mean log-probability per token of `answer` (with its end-of-turn marker) as the reply to
        `messages`: (base, adapter)."""
        prompt_ids, answer_ids = self._answer_tokens(messages, answer)
        ids = prompt_ids + answer_ids
        return tuple(self._mean_logprob(ids, len(prompt_ids), adapter) for adapter in (False, True))

    def perplexity(self, text: str) -> tuple[float, float]:
        """Perplexity of plain `text`: (base, adapter)."""
        ids = self.tokenizer(text, add_special_tokens=True).input_ids
        return tuple(self._perplexity(ids, adapter) for adapter in (False, True))

    def close(self) -> None:
        self.model = None
        self._torch.set_num_threads(self._threads)
        if self.device == "cuda":
            self._torch.cuda.empty_cache()

    def _answer_tokens(self, messages: list[dict], answer: str) -> tuple[list[int], list[int]]:
        special = {"bos_token": self.tokenizer.bos_token or "", "eos_token": self.tokenizer.eos_token or ""}
        prompt = render_chat(self._template, messages, add_generation_prompt=True, **special)
        full = render_chat(self._template, messages + [{"role": "assistant", "content": answer}],
                           add_generation_prompt=False, **special)
        # The template closes the turn its own way (e.g. <|im_end|>); scoring that marker too rewards
        # a model that knows where the answer stops. A template that rewrites earlier turns gets EOS.
        target = full[len(prompt):] if full.startswith(prompt) else answer + special["eos_token"]
        encode = self.tokenizer
        return (encode(prompt, add_special_tokens=False).input_ids,
                encode(target.rstrip("\n"), add_special_tokens=False).input_ids)

    def _logprobs(self, ids: list[int], adapter: bool):
        """Log-probability of each token after the first, given the ones before it."""
        torch = self._torch
        with torch.inference_mode():
            tensor = torch.tensor([ids], device=self.device)
            if adapter:
                logits = self.model(input_ids=tensor).logits
            else:
                with self.model.disable_adapter():
                    logits = self.model(input_ids=tensor).logits
            logprobs = torch.log_softmax(logits[0, :-1].float(), dim=-1)
            return logprobs.gather(1, tensor[0, 1:, None])[:, 0]

    def _mean_logprob(self, ids: list[int], start: int, adapter: bool) -> float:
        drop = max(0, len(ids) - self.window)  # a long context loses its oldest tokens, never the answer's
        ids, start = ids[drop:], max(1, start - drop)
        picked = self._logprobs(ids, adapter)[start - 1:]
        return float(picked.mean()) if len(picked) else 0.0

    def _perplexity(self, ids: list[int], adapter: bool) -> float:
        total, count = 0.0, 0
        for begin in range(0, max(1, len(ids) - 1), self.window):
            chunk = ids[begin:begin + self.window]
            if len(chunk) < 2:
                break
            picked = self._logprobs(chunk, adapter)
            total += float(picked.sum())
            count += len(picked)
        return math.exp(-total / count) if count else float("nan")
