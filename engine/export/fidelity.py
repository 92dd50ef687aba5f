"""How close an exported file's next-token choices are to the adapter's, token by token.

Exact reply agreement alone over-reports damage where the adapter itself is undecided: on a prompt
it half knows, its top two tokens can be a few tenths of a nat apart, and any rounding (even the
chat's own llama.cpp runtime LoRA) may flip them. So next to the replies, each file is scored the
way llama.cpp's `llama-perplexity --kl-divergence` scores a quantization, with the full-precision
adapter as the reference, on the adapter's own replies (teacher forcing):
  same_top_token  how often the file's most likely next token is the adapter's;
  kl              mean KL divergence (nats) from the adapter's next-token distribution.
And a reply that differs is a *near tie* when the adapter itself ranks every token of the file's
reply within NEAR_TIE_NATS of its own first choice: a reply the adapter could as well have given.
"""

from __future__ import annotations

import numpy as np

# The chat's own llama.cpp runtime LoRA moves the adapter's token log-probabilities by up to
# ~0.42 nats (99th percentile, measured on the embedded model), so closer calls than this are noise.
NEAR_TIE_NATS = 0.5


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class AdapterScorer:
    """Next-token log-probabilities of the full-precision adapter (the transformers engine's model,
    adapter active) along given token ids."""

    def __init__(self, model, device: str = "cpu"):
        self.model, self.device = model, device

    def logprobs(self, prompt: list[int], reply: list[int]) -> np.ndarray:
        """[len(reply), vocab]: row i is the distribution that predicted reply[i]."""
        import torch

        if not reply:
            return np.zeros((0, 1))
        ids = torch.tensor([prompt + reply], device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0, len(prompt) - 1:-1]
        return log_softmax(logits.float().cpu().numpy())


class GgufScorer:
    """The same for a GGUF in llama.cpp (a context that keeps every position's logits)."""

    def __init__(self, path, longest: int):
        from engine.engines.llamacpp import load_llama

        # Every position's logits are kept (n_ctx x vocabulary floats), so the context is no longer
        # than the longest prompt + reply to score.
        self._llm = load_llama(str(path), n_ctx=max(256, longest + 8), logits_all=True)

    def logprobs(self, prompt: list[int], reply: list[int]) -> np.ndarray:
        if not reply:
            return np.zeros((0, 1))
        llm = self._llm
        llm.reset()
        llm.eval(prompt + reply)
        return log_softmax(np.array(llm.scores[len(prompt) - 1:len(prompt) + len(reply) - 1]))

    def close(self) -> None:
        self._llm.close()


def distance(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, int, float]:
    """(positions, positions with the same top token, summed KL) of candidate from reference."""
    vocab = min(reference.shape[-1], candidate.shape[-1])  # HF may pad its vocabulary; llama.cpp does not
    ref, cand = reference[:, :vocab], candidate[:, :vocab]
    same = int((ref.argmax(-1) == cand.argmax(-1)).sum())
    kl = float((np.exp(ref) * (ref - cand)).sum())
    return len(ref), same, kl


def worst_shortfall(adapter_logprobs: np.ndarray, tokens: list[int]) -> float:
    """How far (nats) below the adapter's first choice its least favoured token of `tokens` was."""
    if not tokens:
        return 0.0
    chosen = adapter_logprobs[np.arange(len(tokens)), tokens]
    return float((adapter_logprobs.max(-1) - chosen).max())
