"""Render a chat template the way Hugging Face does, inside Jinja's immutable sandbox.

Templates come from model files and prompts/ and are untrusted code: the sandbox blocks attribute
tricks, and templates only get the few helpers HF templates expect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from engine.errors import ChattuneError

TEMPLATE_HINT = "choose another with --template (see prompts/templates/)"


def render_chat(template: str, messages: list[dict], *, bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True) -> str:
    """The prompt text for `messages`, ending with the assistant's turn opener when asked."""
    import jinja2

    compiled = _compile(template)
    try:
        return compiled.render(messages=[dict(m) for m in messages], bos_token=bos_token, eos_token=eos_token,
                               add_generation_prompt=add_generation_prompt)
    except jinja2.TemplateError as err:
        raise ChattuneError(f"the chat template could not render this conversation: {err}", TEMPLATE_HINT) from err


@lru_cache(maxsize=16)
def _compile(template: str):
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """HF's `{% generation %}` marks assistant text for training masks; rendering keeps its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters, which HF templates do not expect.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, "jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as err:
        raise ChattuneError(f"the chat template has a syntax error (line {err.lineno}): {err.message}",
                            TEMPLATE_HINT) from err


# Turn tokens of each shipped family template: a template fits a model when all of them are single
# tokens of its vocabulary (base models carry them too, unused: Gemma's <start_of_turn>, Llama 3's
# <|eot_id|>). Without them the markers are plain text and a model never learns to stop.
TURN_TOKENS = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    "gemma": ("<start_of_turn>", "<end_of_turn>"),
    "phi3": ("<|user|>", "<|assistant|>", "<|end|>"),
    "mistral": ("[INST]", "[/INST]"),
}
# GGUF general.architecture or HF model_type -> the template its family's instruct models use.
FAMILY_TEMPLATE = {
    "llama": "llama3", "gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3_text": "gemma",
    "gemma3n": "gemma", "gemma3n_text": "gemma", "mistral": "mistral", "mistral3": "mistral", "phi3": "phi3",
    "phimoe": "phi3", "qwen2": "chatml", "qwen2_moe": "chatml", "qwen2moe": "chatml", "qwen3": "chatml",
    "qwen3_moe": "chatml", "qwen3moe": "chatml", "smollm3": "chatml",
}
PLAIN = "plain"
PLAIN_STOPS = ("\nUser:",)  # a base model that has not learned EOS yet goes on with the next turn


@dataclass(frozen=True)
class TemplateChoice:
    name: str  # "own" (the model's), or a prompts/templates/ name
    text: str
    reason: str  # one line for the user: which template and why
    stops: tuple[str, ...] = ()  # text that ends a reply: a base model goes on with the next turn
    end_tokens: tuple[str, ...] = ()  # tokens that close an assistant turn besides EOS


def choose_template(override: str | None, own: str | None, model_name: str, *, family: str | None = None,
                    has_token=None) -> TemplateChoice:
    """The template the chat, training, evaluation and export all use for this model.

    `--template` wins; else the model's own; else its family's default (by GGUF architecture or HF
    model_type) if its turn tokens are in the vocabulary; else any shipped template whose turn
    tokens are; else the plain "User:/Assistant:" one. `has_token(text)` says whether `text` is one
    token of the model's vocabulary.
    """
    from engine.prompts import template_override

    if override:
        return _choice(override, template_override(override),
                       f"chat template: {override}, chosen by you (--template, or T in the chat)")
    if own:
        return TemplateChoice("own", own, "chat template: the model's own")
    has_token = has_token or (lambda _text: False)
    default = FAMILY_TEMPLATE.get((family or "").lower())
    fits = [name for name, tokens in TURN_TOKENS.items() if all(has_token(t) for t in tokens)]
    if default in fits:
        return _choice(default, template_override(default),
                       f"chat template: {default}, {model_name} has none; {default} is the {family} "
                       "family's and its turn tokens are in the vocabulary")
    if fits:
        return _choice(fits[0], template_override(fits[0]),
                       f"chat template: {fits[0]}, {model_name} has none; its vocabulary has {fits[0]}'s turn tokens")
    return _choice(PLAIN, template_override(PLAIN),
                   f"chat template: plain (User:/Assistant:), {model_name} has none and its vocabulary has no "
                   "family's turn tokens")


def chat_templates(workspace=None) -> dict[str, str]:
    """name -> text of every template --template accepts: prompts/templates/ and the workspace's own."""
    from engine.prompts import prompts_dir, template_override, user_prompts_dir

    names = set()
    for folder in (prompts_dir() / "templates", user_prompts_dir(workspace) / "templates"):
        if folder.is_dir():
            names.update(item.name.removesuffix(".jinja") for item in folder.iterdir() if item.name.endswith(".jinja"))
    return {name: template_override(name, workspace) for name in sorted(names)}


def hf_template(model_dir, tokenizer, override: str | None, model_name: str | None = None) -> TemplateChoice:
    """choose_template for a Hugging Face model folder: its family is the config's model_type (a
    multimodal config keeps the language model's under text_config)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    family = (config.get("text_config") or {}).get("model_type") or config.get("model_type")
    return choose_template(override, tokenizer.chat_template, model_name or Path(model_dir).name, family=family,
                           has_token=lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1)


def _choice(name: str, text: str, reason: str) -> TemplateChoice:
    tokens = TURN_TOKENS.get(name, ())
    # Any turn marker ends the reply: a base model that has not learned the template yet writes the
    # next turn's opener (<start_of_turn>, "\nUser:") instead of the end of its own.
    return TemplateChoice(name, text, reason, stops=PLAIN_STOPS if name == PLAIN else tokens,
                          end_tokens=tokens[-1:] if name != "mistral" else ())


class StopText:
    """Cuts streamed text at the first stop string, holding back a tail that may begin one."""

    def __init__(self, stops=()):
        self.stops = tuple(s for s in stops if s)
        self.stopped = False
        self._held = ""

    def feed(self, piece: str) -> str:
        if not self.stops or self.stopped:
            return "" if self.stopped else piece
        text = self._held + piece
        hits = [i for i in (text.find(stop) for stop in self.stops) if i >= 0]
        if hits:
            self.stopped, self._held = True, ""
            return text[:min(hits)].rstrip()
        keep = max((k for stop in self.stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held
