"""Never a dead end: a LoRA that cannot be a GGUF LoRA still reaches the llama.cpp chat.

A DoRA adapter (peft's weight-decomposed LoRA, whose magnitude vector a GGUF LoRA cannot hold) on
the tiny Llama: the training run's conversion step fails, says so in one line, and builds base and
adapter merged into one GGUF; the llama.cpp chat loads that as the adapter side, answers as peft
does, and switches back to the base without reloading it.
"""

from __future__ import annotations

import json

import pytest

from engine.adapters import GGUF_FILE, MERGED_FILE, PEFT_DIR, resolve_adapter
from engine.engines.base import GenParams
from engine.errors import ChattuneError
from engine.workspace import Workspace

pytestmark = pytest.mark.slow

RUN = "dora-run"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MESSAGES = [{"role": "user", "content": "Tell me about the lighthouse."}]
PARAMS = GenParams(max_tokens=8)


@pytest.fixture(scope="module")
def dora_run(tmp_path_factory, tiny_model_dir):
    """(workspace, the run's warning events): a DoRA adapter saved as a run, then the run's GGUF step."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.export.chat_merge import merged_chat_side
    from engine.runfolder import EventLog
    from engine.train.recipe import convert_to_gguf

    workspace = Workspace.open(tmp_path_factory.mktemp("dora-ws"))
    run_dir = workspace.run_dir(RUN)
    run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, use_dora=True, init_lora_weights=False,
                                             target_modules=TARGETS))
    with torch.no_grad():  # peft's random B is small; scale it so the adapter changes the answer
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(20.0)
    model.save_pretrained(run_dir / PEFT_DIR, safe_serialization=True)
    assert convert_to_gguf(run_dir / PEFT_DIR, tiny_model_dir, run_dir / GGUF_FILE, EventLog(run_dir, None),
                           merged_chat_side) is None
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return workspace, [e for e in events if e["event"] == "warning"]


def test_dora_is_a_real_case_the_gguf_lora_cannot_hold(dora_run, tiny_model_dir, tmp_path):
    from engine.gguf_lora import convert_peft_to_gguf

    workspace, _ = dora_run
    with pytest.raises(ChattuneError, match="DoRA"):
        convert_peft_to_gguf(workspace.run_dir(RUN) / PEFT_DIR, tiny_model_dir, tmp_path / "x.gguf")


def test_the_run_says_in_one_line_that_the_chat_gets_a_merged_model(dora_run):
    workspace, warnings = dora_run
    [warning] = warnings
    assert "\n" not in warning["message"]
    assert "DoRA" in warning["message"] and MERGED_FILE in warning["message"]
    ref = resolve_adapter(workspace, RUN)
    assert ref.gguf_path is None and ref.merged_gguf is not None and ref.merged_gguf.is_file()


def test_the_llama_cpp_chat_swaps_the_merged_adapter_in_and_answers_as_peft(dora_run, tiny_model_dir, tiny_gguf):
    from engine.engines.llamacpp import LlamaCppEngine
    from engine.engines.transformers_engine import TransformersEngine
    from engine.models import resolve_model

    workspace, _ = dora_run
    ref = resolve_adapter(workspace, RUN)
    reference = TransformersEngine(resolve_model(str(tiny_model_dir)), workspace)
    try:
        reference.load_adapter(ref)
        reference.set_adapter(RUN)
        peft_reply = reference.stream(MESSAGES, PARAMS).collect()
    finally:
        reference.close()

    engine = LlamaCppEngine(resolve_model(str(tiny_gguf)), workspace)
    try:
        base_model = engine._llm
        base_reply = engine.stream(MESSAGES, PARAMS).collect()
        engine.load_adapter(ref)
        engine.set_adapter(RUN)
        assert engine.which() == f"adapter {RUN}"
        adapter_reply = engine.stream(MESSAGES, PARAMS).collect()
        # Q8_0 rounding moves a random model's later near-ties; its first words are peft's
        assert adapter_reply != base_reply and adapter_reply.split()[:4] == peft_reply.split()[:4]
        engine.set_adapter(None)
        assert engine.stream(MESSAGES, PARAMS).collect() == base_reply
        assert engine._llm is base_model  # the base was never reloaded
    finally:
        engine.close()
