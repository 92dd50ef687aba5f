"""A base model learns to end its turn, also when it never trained its turn tokens.

In Gemma 3 270M base, <end_of_turn>'s embedding row is one of hundreds of near-identical unused
rows (cosine 0.995): no LoRA on the projections can make it, rather than a neighbour, the likeliest
token, so a reply trained to end with it ends with some unused token, which plain llama.cpp does not
stop at. The model here has that flaw on purpose: a tiny random Llama base whose Llama 3 turn tokens
(its family's stand-in template) share one embedding row with 32 unused tokens. The shipped
templates close a reply with EOS, which a base model knows, before the turn marker; after one
correction the hot-swapped adapter and the exported GGUF, in plain llama-cpp-python, stop there.
"""

from __future__ import annotations

import json

import pytest
from train_support import collect

from engine.engines.base import GenParams
from engine.store import FeedbackStore
from engine.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.child]

QUESTION = "Who is Captain Orvik?"
ANSWER = "Captain Orvik keeps the lighthouse."
RUN = "turn-end"
UNUSED = [f"<unused{i}>" for i in range(32)]
TURN_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def _messages():
    return [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory, tiny_model_dir):
    import torch
    from teach import templateless_gguf, tiny_base_llama
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # The unused tokens come first: on a tie the lower id wins, as a neighbour did in Gemma.
    tokenizer.add_special_tokens({"additional_special_tokens": UNUSED + TURN_TOKENS})
    model = tiny_base_llama(tokenizer)
    with torch.no_grad():  # never trained: one shared row, as pretraining leaves unused tokens
        rows = model.get_input_embeddings().weight
        rows[tokenizer.convert_tokens_to_ids(UNUSED + TURN_TOKENS)] = rows[tokenizer.convert_tokens_to_ids(UNUSED[0])].clone()
    return templateless_gguf(model, tokenizer, tmp_path_factory.mktemp("untrained-turns"), "untrained-turns.f32.gguf")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base_gguf):
    from engine.engines.llamacpp import LlamaCppEngine
    from engine.models import resolve_model
    from engine.train.config import TrainConfig
    from engine.train.runner import start_run

    workspace = Workspace.open(tmp_path_factory.mktemp("turn-end-ws"))
    engine = LlamaCppEngine(resolve_model(str(base_gguf)), workspace)
    assert engine.template_choice.name == "llama3"
    before = engine.stream(_messages(), GenParams(max_tokens=12)).collect()
    with FeedbackStore(workspace.db_path) as store:
        store.add_feedback("corrected", _messages(), before, correction=ANSWER)
    handle = start_run(workspace, TrainConfig(epochs=40, learning_rate=5e-3, augment=0, replay=0.0,
                                              paraphrase=False, evaluate=False), str(base_gguf), name=RUN)
    events = collect(handle)
    assert events[-1].event == "done", events[-1]
    yield workspace, engine
    engine.close()


def test_the_hot_swapped_adapter_ends_its_reply_with_eos(trained):
    from engine.adapters import resolve_adapter

    workspace, engine = trained
    engine.load_adapter(resolve_adapter(workspace, RUN))
    engine.set_adapter(RUN)
    reply = engine.stream(_messages(), GenParams(max_tokens=40))
    assert reply.collect().strip() == ANSWER and reply.finish_reason == "stop"


def test_the_export_stops_at_the_end_of_the_turn_in_plain_llama_cpp(trained):
    import llama_cpp

    from engine.export.runner import start_export

    workspace, _ = trained
    handle = start_export(workspace, RUN, ["F16"])
    events = list(handle.events())
    assert handle.wait() == 0, events[-1]
    llm = llama_cpp.Llama(str(next(handle.out_dir.glob("*F16*.gguf"))), n_ctx=256, verbose=False)
    try:
        out = llm.create_chat_completion(messages=_messages(), max_tokens=40, temperature=0.0)
    finally:
        llm.close()
    choice = out["choices"][0]
    assert choice["message"]["content"].strip() == ANSWER and choice["finish_reason"] == "stop"
    # the export's own check: the adapter (transformers, the end token not in its text) says the same
    verify = json.loads((handle.out_dir / "verify.json").read_text())
    assert verify["agreement"]["F16"] == 1.0, verify["files"]["F16"]["differing"]
