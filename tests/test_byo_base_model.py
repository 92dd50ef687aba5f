"""A base GGUF without a chat template, the whole way: chat, correct, train, hot-swap, export, and
the exported GGUF answered by plain llama-cpp-python through the template embedded in it.

The model is the tiny random Llama with SmolLM2's tokenizer, stripped of its chat template: like
SmolLM2's base model, its vocabulary has ChatML's turn tokens and no Llama 3 ones, so the chat
stands ChatML in, and the same template must reach training, the exported GGUF and the Modelfile.
"""

from __future__ import annotations

import pytest
from train_support import collect

from engine.engines.base import GenParams
from engine.store import FeedbackStore
from engine.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.child]

QUESTION = "Who is Captain Orvik?"
ANSWER = "Captain Orvik keeps the lighthouse."
RUN = "base-run"


def _messages():
    from engine.prompts import system_prompt

    return [{"role": "system", "content": system_prompt()}, {"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory, tiny_model_dir):
    """A random Llama base with SmolLM2's tokenizer and no chat template. Unlike the shared tiny
    model it has no padding token: that row of the tied embedding is zero, and <|im_end|> (SmolLM2's
    pad and EOS) could never become the likeliest token, so no adapter could learn to end a turn."""
    from teach import templateless_gguf, tiny_base_llama
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return templateless_gguf(tiny_base_llama(tokenizer), tokenizer, tmp_path_factory.mktemp("base-model"),
                             "tiny-base.f32.gguf")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base_gguf):
    """The chat's base reply corrected, and a run trained on that correction."""
    from engine.engines.llamacpp import LlamaCppEngine
    from engine.models import resolve_model
    from engine.train.config import TrainConfig
    from engine.train.runner import start_run

    workspace = Workspace.open(tmp_path_factory.mktemp("base-ws"))
    engine = LlamaCppEngine(resolve_model(str(base_gguf)), workspace)
    before = engine.stream(_messages(), GenParams(max_tokens=12)).collect()
    with FeedbackStore(workspace.db_path) as store:
        store.add_feedback("corrected", _messages(), before, correction=ANSWER)
    handle = start_run(workspace, TrainConfig(epochs=40, learning_rate=5e-3, augment=0, replay=0.0,
                                              paraphrase=False, evaluate=False), str(base_gguf), name=RUN)
    events = collect(handle)
    assert events[-1].event == "done", events[-1]
    return workspace, engine


def test_the_chat_stands_in_a_template_and_says_why(trained):
    _, engine = trained
    assert engine.template_choice.name == "chatml"
    assert "has none" in engine.template_choice.reason and "turn tokens" in engine.template_choice.reason


def test_the_hot_swapped_adapter_answers_the_correction_and_stops(trained):
    from engine.adapters import resolve_adapter

    workspace, engine = trained
    ref = resolve_adapter(workspace, RUN)
    assert ref.gguf_path is not None
    engine.load_adapter(ref)
    engine.set_adapter(RUN)
    reply = engine.stream(_messages(), GenParams(max_tokens=40))
    assert reply.collect() == ANSWER and reply.finish_reason == "stop"
    engine.set_adapter(None)
    assert engine.stream(_messages(), GenParams(max_tokens=12)).collect() != ANSWER


def test_the_export_embeds_the_template_and_plain_llama_cpp_stops_at_the_turn_end(trained):
    import llama_cpp

    from engine.export.runner import start_export
    from engine.prompts import template_override

    workspace, _ = trained
    # F16: plain llama-cpp-python built natively on an AMX CPU crashes on quantized files (chattune's
    # own loader guards against that; this test wants the plain library).
    handle = start_export(workspace, RUN, ["F16"])
    events = list(handle.events())
    assert handle.wait() == 0, events[-1]
    exported = next(handle.out_dir.glob("*F16*.gguf"))
    llm = llama_cpp.Llama(str(exported), n_ctx=256, verbose=False)
    try:
        assert llm.metadata["tokenizer.chat_template"] == template_override("chatml")
        out = llm.create_chat_completion(messages=_messages(), max_tokens=40, temperature=0.0)
    finally:
        llm.close()
    choice = out["choices"][0]
    assert choice["message"]["content"].strip() == ANSWER and choice["finish_reason"] == "stop"
    modelfile = (handle.out_dir / "Modelfile").read_text()
    assert "<|im_start|>" in modelfile and '"<|im_end|>"' in modelfile
