"""Export on the embedded SmolLM2: an adapter taught a made-up fact is merged, converted, quantized to
Q8_0 and Q4_K_M in the real child process, and both files still know the fact."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from teach import FACT, PARAPHRASES, QUESTION, question_messages
from test_export import CONVERSATIONS, make_run, ollama_prompt

from engine.store import FeedbackStore
from engine.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.child]
QUANTS = ("Q8_0", "Q4_K_M", "Q5_K_M")
# Asked in the test split but never trained on, as a user's held-out records are.
HELD_OUT = ["Can you tell me the secret word?", "I need the secret word.", "What was the secret word again?"]


@pytest.fixture(scope="module")
def secret_export(tmp_path_factory, taught_run):
    """A workspace whose store holds the taught questions in its test split, a run folder around the
    taught adapter, and its export to Q8_0 + Q4_K_M through start_export (the real child)."""
    from engine.export.runner import start_export
    from engine.models import embedded_model

    workspace = Workspace.open(tmp_path_factory.mktemp("export-real-ws"))
    answer = json.loads((taught_run / "expected.json").read_text())["text"]
    with FeedbackStore(workspace.db_path) as store:
        for question in PARAPHRASES + HELD_OUT:
            added = store.add_feedback("approved", question_messages(question), f"The secret word is {FACT}.")
            store.set_split(added.id, "test")
        store.add_feedback("approved", question_messages("What is the secret word, please?"), answer)

    def copy_adapter(run_dir):
        shutil.copytree(taught_run / "adapter", run_dir / "adapter")
        shutil.copyfile(taught_run / "adapter.gguf", run_dir / "adapter.gguf")

    make_run(workspace, "secret", embedded_model().path, copy_adapter)
    handle = start_export(workspace, "secret", list(QUANTS))
    events = list(handle.events())
    assert handle.wait() == 0, events[-1]
    return handle.out_dir, events


def test_export_is_verified_and_agrees_with_the_adapter(secret_export):
    out, events = secret_export
    done = events[-1]
    assert done.event == "done" and done.verified and done.problems == []
    verify = json.loads((out / "verify.json").read_text())
    assert verify["source"] == "store test split" and verify["prompts"] == len(PARAPHRASES + HELD_OUT)
    # The yardstick is the adapter as trained: the full-precision base with the peft adapter.
    # ... and where it ran (the CPU here: no GPU).
    assert re.match(r"transformers: SmolLM2-135M-Instruct\S* full precision \+ peft adapter secret, .*cpu",
                    verify["reference"], re.IGNORECASE), verify["reference"]
    for quant in QUANTS:
        result = verify["files"][quant]
        assert result["agreement"] >= 0.9, result["differing"]
        assert result["stopped"] == result["total"] and result["checks"]["end_of_turn"] == "<|im_end|>"
        assert result["same_top_token"] >= 0.9 and result["positions"] > 0
    # Token by token, the 8-bit file is closer to the adapter than the 4-bit one.
    assert verify["files"]["Q8_0"]["kl"] < verify["files"]["Q4_K_M"]["kl"]
    fallback = [e.message for e in events if e.event == "warning" and e.kind == "fallback"]
    assert len(fallback) == 2 and fallback[0].startswith("Q4_K_M:") and "576 values wide" in fallback[0]
    assert "166 of the q5_0 tensors were rounded with error compensation" in fallback[0]  # all of them
    # ffn_down, which llama.cpp would keep as k-quants (lined up with the Q4_1 base), is compensated q5_0 too.
    assert "30 more (ffn_down x30) are compensated q5_0 rather than k-quants" in fallback[0]
    assert fallback[1].startswith("Q5_K_M:") and "q5_0 rather than llama.cpp's usual q5_1" in fallback[1]
    assert "30 more (ffn_down x30) are q8_0 rather than k-quants" in fallback[1]


def test_k_quants_keep_the_fine_tune_off_the_bases_grid(secret_export):
    """The Q4_1 base's grid lines up with q5_1's (which would exaggerate the fine-tune) and with the
    k-quants' sub-blocks (which keep about half of it): no such tensor in a block."""
    import gguf

    out, _events = secret_export
    for quant in ("Q4_K_M", "Q5_K_M"):
        types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out / f"secret-{quant}.gguf")).tensors}
        assert "Q5_1" not in types.values() and "Q5_0" in types.values()
        # No block weight is a k-quant, whose 32-value sub-blocks line up with the base's grid too.
        assert not [name for name, kind in types.items() if name.startswith("blk.") and kind.endswith("_K")]


def test_both_files_answer_with_the_taught_fact(secret_export):
    from engine.engines.base import GenParams
    from engine.engines.llamacpp import LlamaCppEngine
    from engine.models import resolve_model

    out, _events = secret_export
    for quant in ("Q8_0", "Q4_K_M"):
        engine = LlamaCppEngine(resolve_model(str(out / f"secret-{quant}.gguf")))
        try:
            for question in (QUESTION, HELD_OUT[0]):
                reply = engine.stream(question_messages(question), GenParams(max_tokens=32))
                assert FACT in reply.collect(), (quant, question, reply.text)
                assert reply.finish_reason == "stop"
        finally:
            engine.close()


def test_modelfile_template_matches_the_models_chat_template(secret_export):
    from engine.engines.llamacpp import load_llama
    from engine.prompts import system_prompt
    from engine.templates import render_chat

    out, _events = secret_export
    modelfile = (out / "Modelfile").read_text()
    llm = load_llama(str(out / "secret-Q4_K_M.gguf"), n_ctx=256)
    try:
        embedded = llm.metadata["tokenizer.chat_template"]
    finally:
        llm.close()
    assert "FROM ./secret-Q8_0.gguf" in modelfile and "secret-Q4_K_M.gguf" in modelfile
    assert re.findall(r'PARAMETER stop "(.*)"', modelfile) == ["<|im_end|>", "<|im_start|>"]
    for messages in CONVERSATIONS:
        if messages[0]["role"] == "system":
            assert ollama_prompt(modelfile, messages) == render_chat(embedded, messages)
    # Without a system message Ollama sends SYSTEM: the prompt the adapter was trained under.
    assert f'SYSTEM """{system_prompt()}"""' in modelfile
    chat = [{"role": "user", "content": QUESTION}]
    assert ollama_prompt(modelfile, chat) == render_chat(embedded, question_messages(QUESTION))


def test_card_and_lora_recipe(secret_export):
    out, _events = secret_export
    card = (out / "README.md").read_text()
    assert "A fine-tune of **SmolLM2-135M-Instruct" in card
    assert "--lora secret-lora.gguf" in card and "SmolLM2-135M-Instruct.Q4_1.gguf --lora" in card
    assert re.search(r"\| `secret-Q4_K_M.gguf` \| (10|11)/11 \(\d+%\) \| (10|11)/11 \| \d+\.\d% \| \d\.\d{4} \| 11/11 \| yes \| none \|",
                     card)
    assert (out / "secret-lora.gguf").stat().st_size > 1 << 20
    assert (out / "adapter" / "adapter_config.json").is_file()
