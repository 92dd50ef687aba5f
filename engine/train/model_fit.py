"""Settings that come from the model being trained, not from SmolLM2's defaults.

- the chat template: the model's own, else the one the chat picks for it (engine.templates), so
  training, evaluation, the exported GGUF and the Modelfile all use the template the chat used;
- the tokens that end an assistant turn: Gemma's turns end with <end_of_turn>, which is not its
  tokenizer's EOS, so generation must stop on both;
- padding: right-side for training (TRL masks the padded tail), with EOS as pad if none is set;
- attention: eager where the config soft-caps attention logits (Gemma 2), which SDPA cannot do;
  SDPA elsewhere (Gemma 3 has no soft-capping and trains with SDPA);
- sliding window and tied embeddings are read from the config (they shape the GGUF LoRA and the
  merge, not the trainer): recorded so a run folder says what it trained.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.templates import TemplateChoice, hf_template


@dataclass(frozen=True)
class ModelFit:
    template: TemplateChoice
    end_token_ids: tuple[int, ...]  # EOS and end-of-turn ids: where generation stops
    padding_side: str
    attn_implementation: str
    sliding_window: int | None
    tied_embeddings: bool

    def summary(self) -> dict:
        fields = asdict(self)
        fields["template"] = {"name": self.template.name, "reason": self.template.reason}
        return fields


def fit_tokenizer(base_dir: Path, tokenizer, override: str | None) -> ModelFit:
    """Give `tokenizer` the chat template and padding training needs; return every model setting."""
    config = read_config(base_dir)
    text = {**config, **(config.get("text_config") or {})}
    choice = hf_template(base_dir, tokenizer, override)
    tokenizer.chat_template = choice.text
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    ends = {tokenizer.eos_token_id, *(tokenizer.convert_tokens_to_ids(t) for t in choice.end_tokens
                                      if len(tokenizer(t, add_special_tokens=False)["input_ids"]) == 1)}
    return ModelFit(
        template=choice,
        end_token_ids=tuple(sorted(i for i in ends if isinstance(i, int))),
        padding_side="right",
        attn_implementation="eager" if text.get("attn_logit_softcapping") else "sdpa",
        sliding_window=text.get("sliding_window") if text.get("use_sliding_window", True) else None,
        tied_embeddings=bool(text.get("tie_word_embeddings")),
    )


def read_config(base_dir: Path) -> dict:
    try:
        return json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
