"""The chat's model and chat template, chosen in the app (m, T) and with `chattune --model N`, on the
real llama.cpp engine with the tiny model; the model list comes from a real `chattune models` child."""

from __future__ import annotations

import pytest
from test_tui import Notices, replies, running, send, wait_until
from textual.widgets import OptionList

from engine.api import listed_model, listed_models
from engine.engines import GenParams, open_engine
from engine.errors import ChattuneError
from engine.models import resolve_model
from engine.prompts import template_override
from tui.modals.model import ModelModal
from tui.modals.template import TemplateModal

pytestmark = pytest.mark.anyio

SHORT = GenParams(max_tokens=8)


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_t_picks_another_template_for_the_chat_and_training(workspace, tiny_gguf):
    notices = Notices()
    engine = open_engine("llamacpp", resolve_model(str(tiny_gguf)), workspace)
    try:
        async with running(workspace, engine, notices=notices, params=SHORT) as (app, pilot):
            assert engine.template_choice.name == "own"
            await pilot.press("tab", "T")
            assert isinstance(app.screen, TemplateModal)
            await pilot.press("end", "enter")  # the last one: plain
            await wait_until(pilot, lambda: app.template_name == "plain", "the pick")
            assert engine.template_choice.name == "plain" and notices.any("chat template: plain", "chosen by you")
            view = await send(pilot, "Hello")
            assert view.reply.finish in ("stop", "length") and "User:" not in view.reply.text
            assert engine._template == template_override("plain")
            await pilot.press("tab", "T")
            await pilot.press("home", "enter")  # back to the model's own
            await wait_until(pilot, lambda: app.template_name == "", "automatic again")
            assert engine.template_choice.name == "own"
    finally:
        engine.close()


async def test_m_loads_another_model_from_the_models_list(workspace, tiny_gguf, second_model):
    engine = open_engine("llamacpp", resolve_model(str(tiny_gguf)), workspace)
    async with running(workspace, engine, params=SHORT) as (app, pilot):
        await send(pilot, "Hello")
        await pilot.press("tab", "m")
        assert isinstance(app.screen, ModelModal)
        modal = app.screen
        await wait_until(pilot, lambda: modal.entries, "the models list")
        sources = {e["source"] for e in modal.entries}
        assert sources == {"embedded", "workspace"}, modal.entries
        target = next(i for i, e in enumerate(modal.entries) if e["path"] == str(second_model))
        modal.query_one(OptionList).highlighted = target
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.engine is not None and app.engine is not engine, "the other model")
        assert app.model_arg == str(second_model) and "other-model" in app.model_label
        view = await send(pilot, "Hello again")
        assert view.reply.finish in ("stop", "length") and len(replies(app)) == 2
        # Back to the embedded model, listed first: opened as with no --model at all.
        other = app.engine
        await pilot.press("tab", "m")
        modal = app.screen
        await wait_until(pilot, lambda: modal.entries, "the models list")
        modal.query_one(OptionList).highlighted = next(i for i, e in enumerate(modal.entries)
                                                       if e["source"] == "embedded")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.engine is not None and app.engine is not other, "the embedded model")
        assert app.model_arg is None and "SmolLM2" in app.model_label, app.model_label
    app.engine.close()


def test_model_n_is_the_nth_model_chattune_models_lists(workspace, second_model):
    assert listed_model(str(second_model), workspace.root) == str(second_model)  # a path stays a path
    assert listed_model(None, workspace.root) is None
    paths = [e["path"] for e in listed_models(workspace.root)]
    assert listed_model(str(paths.index(str(second_model)) + 1), workspace.root) == str(second_model)
    with pytest.raises(ChattuneError, match="lists 2 model"):
        listed_model("9", workspace.root)
