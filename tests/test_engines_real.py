"""Both engines on the embedded SmolLM2 (Q4_1 GGUF): real answers, the AMX crash guard, and a taught
LoRA swapped in and out of the live llama.cpp engine without a reload."""

from __future__ import annotations

import pytest
from teach import FACT, PARITY_TOKENS, expected_of, question_messages

from engine.adapters import resolve_adapter
from engine.engines import GenParams, open_engine
from engine.prompts import system_prompt
from engine.templates import render_chat

pytestmark = pytest.mark.slow

FRANCE = [{"role": "system", "content": system_prompt()}, {"role": "user", "content": "What is the capital of France?"}]
REPLY = GenParams(max_tokens=48)


@pytest.fixture(scope="module")
def llamacpp(embedded_spec, shared_workspace):
    engine = open_engine("llamacpp", embedded_spec, shared_workspace)
    yield engine
    engine.close()


def test_quantized_model_evaluates_a_multi_token_batch_with_the_amx_guard(embedded_spec):
    """A native build segfaults here on AMX CPUs unless weight repacking is off (FIELD-NOTES)."""
    from engine.engines.llamacpp import load_llama

    llm = load_llama(str(embedded_spec.path))
    try:
        assert llm.model_params.use_extra_bufts is False
        tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog.", add_bos=False)
        assert len(tokens) > 8
        llm.eval(tokens)  # one batch of several tokens on Q4_1 weights
        assert llm.n_tokens == len(tokens)
    finally:
        llm.close()


def test_llamacpp_knows_the_capital_of_france(llamacpp):
    reply = llamacpp.stream(FRANCE, REPLY)
    assert "Paris" in reply.collect()
    assert (reply.speaker, reply.finish_reason) == ("base", "stop")


def test_the_model_template_renders_like_transformers(llamacpp, embedded_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_base)
    expected = tokenizer.apply_chat_template(FRANCE, add_generation_prompt=True, tokenize=False)
    assert render_chat(tokenizer.chat_template, FRANCE) == expected
    assert llamacpp.prompt_tokens(FRANCE) == tokenizer(expected, add_special_tokens=False)["input_ids"]


def test_llamacpp_swaps_the_taught_adapter_at_runtime(llamacpp, shared_workspace, taught_run):
    expected = expected_of(taught_run)
    question = question_messages()
    assert llamacpp.prompt_tokens(question) == expected["prompt_ids"]
    base_answer = llamacpp.stream(question, REPLY).collect()
    assert FACT not in base_answer

    ref = resolve_adapter(shared_workspace, taught_run.name)
    llamacpp.load_adapter(ref)
    llm = llamacpp._llm
    llamacpp.set_adapter(ref.name)
    reply = llamacpp.stream(question, REPLY)
    assert FACT in reply.collect() and reply.speaker == f"adapter {ref.name}"
    # llama.cpp on the Q4_1 base + converted LoRA says what the fp32 peft model said, token for token
    peft_tokens = [t for t in expected["generated_ids"] if t != 2][:PARITY_TOKENS]
    assert llamacpp.last_tokens[: len(peft_tokens)] == peft_tokens

    llamacpp.set_adapter(None)
    reply = llamacpp.stream(question, REPLY)
    assert reply.collect() == base_answer and reply.speaker == "base"
    assert llamacpp._llm is llm  # never reloaded


def test_llamacpp_a_b_back_and_forth_keeps_each_sides_answer_without_re_reading(llamacpp, shared_workspace,
                                                                                 taught_run):
    """What a user notices in A/B: the adapter says what the base does not, switching back gives the
    base's answer again, and no switch makes a side read the conversation again (each keeps its own
    KV cache). The time a switch takes is `chattune bench swap`'s to measure."""
    ref = resolve_adapter(shared_workspace, taught_run.name)
    llamacpp.load_adapter(ref)
    question = question_messages()
    llamacpp.set_adapter(None)
    base_answer = llamacpp.stream(question, REPLY).collect()
    llamacpp.set_adapter(ref.name)
    adapter_answer = llamacpp.stream(question, REPLY).collect()
    assert FACT in adapter_answer and FACT not in base_answer
    for _ in range(2):
        for side, answer in ((None, base_answer), (ref.name, adapter_answer)):
            llamacpp.set_adapter(side)
            assert llamacpp.stream(question, REPLY).collect() == answer
            assert llamacpp.last_prompt_evaluated == 1  # its last token, read again for the next logits
    llamacpp.set_adapter(None)


def test_transformers_engine_on_the_embedded_gguf(embedded_spec, shared_workspace, embedded_base, taught_run):
    """The GGUF runs through its cached fp32 copy; peft switches the taught adapter in place."""
    engine = open_engine("transformers", embedded_spec, shared_workspace)
    try:
        assert "Paris" in engine.stream(FRANCE, REPLY).collect()
        question = question_messages()
        base_answer = engine.stream(question, REPLY).collect()
        ref = resolve_adapter(shared_workspace, taught_run.name)
        engine.load_adapter(ref)
        engine.set_adapter(ref.name)
        reply = engine.stream(question, REPLY)
        assert FACT in reply.collect() and reply.speaker == f"adapter {ref.name}"
        engine.set_adapter(None)
        assert engine.stream(question, REPLY).collect() == base_answer
    finally:
        engine.close()
