"""Render a chat template the way Hugging Face does, inside Jinja's immutable sandbox.

Templates come from model files and prompts/ and are untrusted code: the sandbox blocks attribute
tricks, and templates only get the few helpers HF templates expect.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

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


def model_template(own: str | None, model_name: str) -> str:
    """The model's own chat template, or a clear error for a model without one."""
    if not own:
        raise ChattuneError(f"model {model_name} carries no chat template",
                            "pass --template NAME, e.g. --template chatml (see prompts/templates/)")
    return own


def pick_template(override: str | None, own: str | None, model_name: str) -> str:
    """The prompts/templates override named by the user, else the model's own template."""
    if override:
        from engine.prompts import template_override

        return template_override(override)
    return model_template(own, model_name)
