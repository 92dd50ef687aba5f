"""An Ollama Modelfile whose TEMPLATE (a Go template) formats chats exactly as the model's Jinja template.

Most chat templates wrap each message in a fixed prefix and suffix per role, and end with an
assistant opener. We find those pieces by rendering the Jinja template with marker messages, check
that they reproduce the Jinja rendering of several conversations, and write them as a Go template.
When the role name is part of a common prefix (ChatML), the result is Ollama's standard
`{{ .Role }}` form. A default system prompt that the Jinja template inserts becomes SYSTEM, which
Ollama sends when the user gives none. A template of another shape gets no TEMPLATE line, with a
warning: Ollama then falls back on its detection of the template embedded in the GGUF.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from engine.errors import ChattuneError

ROLES = ("system", "user", "assistant")
_S, _U, _A, _U2 = "CHATTUNE-SYS-7Q", "CHATTUNE-USER-7Q", "CHATTUNE-ASSISTANT-7Q", "CHATTUNE-AGAIN-7Q"


@dataclass(frozen=True)
class TurnFormat:
    prefix: dict[str, str]  # role -> text before the message
    suffix: dict[str, str]  # role -> text after it
    generation: str  # the assistant opener a prompt ends with
    default_system: str | None  # what the template inserts when the chat has no system message

    def render(self, messages: list[dict], system: str | None = None) -> str:
        """The prompt Ollama builds with our TEMPLATE, and SYSTEM = `system` (default: the template's)."""
        system = system if system is not None else self.default_system
        if system and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": system}, *messages]
        turns = "".join(self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]] for m in messages)
        return turns + self.generation


def turn_format(template: str, eos_token: str = "") -> TurnFormat | None:
    """The per-role wrappers of a Jinja chat template, or None when it is not of that shape."""
    from engine.templates import render_chat

    def render(messages, generation):
        return render_chat(template, [{"role": r, "content": c} for r, c in messages], bos_token="",
                           eos_token=eos_token, add_generation_prompt=generation)

    try:
        user = render([("user", _U)], False)
        prompt = render([("user", _U)], True)
        closed = render([("user", _U), ("assistant", _A)], False)
        again = render([("user", _U), ("assistant", _A), ("user", _U2)], False)
        with_system = render([("system", _S), ("user", _U)], False)
    except ChattuneError:
        return None  # e.g. a template that raises on a conversation shape
    if not (_U in user and prompt.startswith(user) and closed.startswith(user) and _A in closed
            and again.startswith(user) and _U2 in again and _S in with_system):
        return None
    head, _, user_suffix = user.partition(_U)
    generation = prompt.removeprefix(user)
    opener, _, assistant_suffix = closed.removeprefix(user).partition(_A)
    middle = again.removeprefix(user).partition(_A)[2].partition(_U2)[0]
    if not middle.startswith(assistant_suffix):
        return None
    user_prefix = middle.removeprefix(assistant_suffix)
    system_prefix, _, rest = with_system.partition(_S)
    system_suffix = rest.partition(_U)[0].removesuffix(user_prefix)
    default_system = None
    if head != user_prefix:  # the template wrote something before the first user turn: a default system
        block = head.removesuffix(user_prefix)
        if not (head.endswith(user_prefix) and block.startswith(system_prefix) and block.endswith(system_suffix)):
            return None
        default_system = block[len(system_prefix):len(block) - len(system_suffix)]
    fmt = TurnFormat({"system": system_prefix, "user": user_prefix, "assistant": opener},
                     {"system": system_suffix, "user": user_suffix, "assistant": assistant_suffix},
                     generation, default_system)
    probes = [[("user", "Hi")], [("system", "Be brief."), ("user", "Hi")],
              [("user", "Hi"), ("assistant", "Hello!"), ("user", "How are you?")],
              [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye")]]
    for messages in probes:
        if fmt.render([{"role": r, "content": c} for r, c in messages]) != render(messages, True):
            return None
    return fmt


def go_template(fmt: TurnFormat) -> str:
    """Ollama's TEMPLATE for `fmt`: `{{ .Role }}` in one shared prefix where the template allows it."""
    shared = _shared_role_prefix(fmt)
    if shared is not None and len(set(fmt.suffix.values())) == 1:
        before, after = shared
        return ("{{- range .Messages }}" + _lit(before) + "{{ .Role }}" + _lit(after) + "{{ .Content }}"
                + _lit(fmt.suffix["user"]) + "{{ end }}" + _lit(fmt.generation))
    branches = []
    for n, role in enumerate(ROLES):
        keyword = "if" if n == 0 else "else if"
        branches.append(f'{{{{ {keyword} eq .Role "{role}" }}}}' + _lit(fmt.prefix[role]) + "{{ .Content }}"
                        + _lit(fmt.suffix[role]))
    return "{{- range .Messages }}" + "".join(branches) + "{{ end }}{{ end }}" + _lit(fmt.generation)


def _shared_role_prefix(fmt: TurnFormat) -> tuple[str, str] | None:
    """(before, after) when every role's prefix is before + role + after."""
    prefix = fmt.prefix["user"]
    at = prefix.find("user")
    if at < 0:
        return None
    before, after = prefix[:at], prefix[at + len("user"):]
    return (before, after) if all(fmt.prefix[role] == before + role + after for role in ROLES) else None


def _lit(text: str) -> str:
    """Literal text in a Go template; `{{` would start an action, so such text goes in a string."""
    return text if "{{" not in text and "}}" not in text else "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


def stop_words(fmt: TurnFormat | None, eos_token: str, template: str = "") -> list[str]:
    """Where a reply ends: the assistant's end of turn, the start of any turn, the EOS token, and the
    turn tokens of a shipped family template the chat template uses (Gemma's, whose shape has no
    TEMPLATE translation, still stops at <end_of_turn>)."""
    from engine.templates import TURN_TOKENS

    words = []
    if fmt is not None:
        words.append(fmt.suffix["assistant"].strip())
        words.append(os.path.commonprefix(list(fmt.prefix.values())).strip())
    words.append(eos_token.strip())
    words += [t for tokens in TURN_TOKENS.values() if all(t in template for t in tokens)
              for t in (tokens[-1], tokens[0])]  # the end of a turn, the opening of the next
    return [w for n, w in enumerate(words) if w and '"' not in w and w not in words[:n]]


def modelfile_text(gguf_name: str, *, name: str, template: str | None, eos_token: str, system: str | None,
                   others: list[str]) -> tuple[str, TurnFormat | None]:
    """The Modelfile and the turn format it was built from (None: no TEMPLATE could be written)."""
    fmt = turn_format(template, eos_token) if template else None
    lines = [f"# Ollama Modelfile for {name}, made by chattune:",
             f"#   ollama create {name} -f Modelfile && ollama run {name}",
             f"FROM ./{gguf_name}"]
    if others:
        lines.insert(2, f"# Other quantizations in this folder: {', '.join(others)} (change FROM to use one).")
    go = go_template(fmt) if fmt is not None else None
    if go is not None and '"""' not in go:
        lines.append(f'TEMPLATE """{go}"""')
    else:
        fmt = None
        lines.append("# No TEMPLATE: the chat template is not one we can translate; Ollama uses the one in the GGUF.")
    system = system if system is not None else (fmt.default_system if fmt else None)
    if system and '"""' not in system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{word}"' for word in stop_words(fmt, eos_token, template or "")]
    return "\n".join(lines) + "\n", fmt
