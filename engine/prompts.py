"""System prompts and chat-template overrides shipped in prompts/ (data, not code)."""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import ChattuneError

ENV_VAR = "CHATTUNE_PROMPTS"


def prompts_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or Path(__file__).resolve().parent.parent / "prompts")


def _named(kind: str, suffix: str) -> dict[str, Path]:
    folder = prompts_dir() / kind
    return {p.stem: p for p in sorted(folder.glob(f"*{suffix}"))} if folder.is_dir() else {}


def system_prompts() -> dict[str, str]:
    """name -> text, from prompts/system/*.md."""
    return {name: path.read_text(encoding="utf-8").strip() for name, path in _named("system", ".md").items()}


def system_prompt(name: str = "default") -> str:
    prompts = system_prompts()
    if name not in prompts:
        raise ChattuneError(
            f"no system prompt named {name!r}",
            f"choose one of {', '.join(prompts) or '(none)'} or add prompts/system/{name}.md",
        )
    return prompts[name]


def template_override(name: str) -> str:
    """A chat template from prompts/templates/NAME.jinja, used instead of the model's own."""
    templates = _named("templates", ".jinja")
    if name not in templates:
        raise ChattuneError(
            f"no chat template named {name!r}",
            f"choose one of {', '.join(templates) or '(none)'} or add prompts/templates/{name}.jinja",
        )
    return templates[name].read_text(encoding="utf-8")
