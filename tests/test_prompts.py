"""Where prompts come from: the package's own (importlib.resources), then the workspace's, which win by name."""

from __future__ import annotations

from importlib.resources import files

import pytest

from engine.cli import main
from engine.errors import ChattuneError
from engine.prompts import prompts_dir, system_prompt, system_prompts, template_override


def test_shipped_prompts_are_package_data():
    assert prompts_dir() == files("prompts")
    assert {"default", "concise"} <= set(system_prompts())
    assert "<|im_start|>" in template_override("chatml")
    assert (prompts_dir() / "eval" / "general.jsonl").read_text(encoding="utf-8").count("\n") >= 50


def test_the_workspace_adds_prompts_and_overrides_shipped_ones(workspace):
    shipped_concise = system_prompt("concise")
    (workspace.root / "prompts" / "system").mkdir(parents=True)
    (workspace.root / "prompts" / "templates").mkdir()
    (workspace.root / "prompts" / "system" / "default.md").write_text("You are a pirate.\n")
    (workspace.root / "prompts" / "system" / "mine.md").write_text("You are mine.")
    (workspace.root / "prompts" / "templates" / "chatml.jinja").write_text("{{ messages[0]['content'] }}")

    assert system_prompt("default") == "You are a pirate."  # $CHATTUNE_WORKSPACE, set by the fixture
    assert system_prompt("mine", workspace.root) == "You are mine."
    assert system_prompt("concise") == shipped_concise
    assert template_override("chatml") == "{{ messages[0]['content'] }}"


def test_a_missing_prompt_says_where_to_add_it(workspace):
    with pytest.raises(ChattuneError) as err:
        system_prompt("nope")
    assert f"{workspace.root / 'prompts' / 'system' / 'nope.md'}" in str(err.value)
    assert "default" in str(err.value)


def test_chattune_prompts_replaces_the_shipped_set(workspace, tmp_path, monkeypatch):
    (tmp_path / "mine" / "system").mkdir(parents=True)
    (tmp_path / "mine" / "system" / "only.md").write_text("Only this.")
    monkeypatch.setenv("CHATTUNE_PROMPTS", str(tmp_path / "mine"))
    assert system_prompts() == {"only": "Only this."}


def test_the_cli_workspace_option_is_where_prompts_are_looked_up(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CHATTUNE_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    ws = tmp_path / "elsewhere-ws"
    assert main(["--workspace", str(ws), "ask", "--system", "nope", "hi"]) == 2
    assert str(ws / "prompts" / "system" / "nope.md") in capsys.readouterr().err
