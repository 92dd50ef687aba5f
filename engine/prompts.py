"""System prompts, chat-template overrides and eval sets: the ones chattune ships (the `prompts`
package data, found through importlib.resources wherever chattune is installed) and the user's own
in <workspace>/prompts/, which add to the shipped ones and win over them by name.

Every reader of prompts goes through this module.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ChattuneError
from engine.workspace import workspace_root

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

ENV_VAR = "CHATTUNE_PROMPTS"  # a folder laid out like prompts/, used instead of the shipped one


def prompts_dir() -> Traversable:
    """The shipped prompts (or $CHATTUNE_PROMPTS). Read with `/`, read_text() and iterdir()."""
    override = os.environ.get(ENV_VAR)
    return Path(override) if override else files("prompts")


def user_prompts_dir(workspace: str | os.PathLike | None = None) -> Path:
    """<workspace>/prompts: the user's own system prompts and templates (the folder may not exist)."""
    return workspace_root(workspace) / "prompts"


def _named(kind: str, suffix: str, workspace: str | os.PathLike | None) -> dict[str, Traversable]:
    """name -> file, shipped first, then the workspace's (which replace shipped ones of the same name)."""
    found: dict[str, Traversable] = {}
    for folder in (prompts_dir() / kind, user_prompts_dir(workspace) / kind):
        if folder.is_dir():
            found.update((item.name.removesuffix(suffix), item) for item in folder.iterdir()
                         if item.name.endswith(suffix) and item.is_file())
    return found


def system_prompts(workspace: str | os.PathLike | None = None) -> dict[str, str]:
    """name -> text, from prompts/system/*.md and <workspace>/prompts/system/*.md."""
    return {name: item.read_text(encoding="utf-8").strip()
            for name, item in sorted(_named("system", ".md", workspace).items())}


def system_prompt(name: str = "default", workspace: str | os.PathLike | None = None) -> str:
    prompts = system_prompts(workspace)
    if name not in prompts:
        raise ChattuneError(
            f"no system prompt named {name!r}",
            f"choose one of {', '.join(prompts) or '(none)'} or add {user_prompts_dir(workspace)}/system/{name}.md",
        )
    return prompts[name]


def template_override(name: str, workspace: str | os.PathLike | None = None) -> str:
    """A chat template from prompts/templates/NAME.jinja (the workspace's first), used instead of the model's own."""
    templates = _named("templates", ".jinja", workspace)
    if name not in templates:
        raise ChattuneError(
            f"no chat template named {name!r}",
            f"choose one of {', '.join(templates) or '(none)'} or add "
            f"{user_prompts_dir(workspace)}/templates/{name}.jinja",
        )
    return templates[name].read_text(encoding="utf-8")
