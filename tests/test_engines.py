"""Fast engine tests on the tiny random Llama: chat templates, both engines' streaming, cancel, and
adapter load / switch / clear without a reload."""

from __future__ import annotations

import threading

import pytest

from engine.adapters import AdapterRef, resolve_adapter
from engine.engines import ChatEngine, GenParams, open_engine
from engine.errors import AdapterError, ChattuneError
from engine.models import resolve_model
from engine.prompts import template_override
from engine.templates import choose_template, render_chat

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there!"}]
SHORT = GenParams(max_tokens=8)

# --- templates ---------------------------------------------------------------------------------


def test_render_chatml_override():
    text = render_chat(template_override("chatml"), MESSAGES)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello there!<|im_end|>\n"
                    "<|im_start|>assistant\n")


def test_render_gives_hf_helpers():
    template = ("{{ bos_token }}{% for m in messages %}{{ m['content'] | tojson }}{% endfor %}"
                "{% if add_generation_prompt %}>{% endif %}{{ eos_token }}{{ strftime_now('%Y') | length }}")
    assert render_chat(template, MESSAGES, bos_token="<s>", eos_token="</s>") == '<s>"Be brief.""Hello there!">' "</s>4"
    # HF renders with trim_blocks and lstrip_blocks, and supports {% generation %} and loop controls
    template = "{% for m in messages %}\n  {% if loop.first %}{% continue %}{% endif %}{% generation %}{{ m.role }}{% endgeneration %}\n{% endfor %}"
    assert render_chat(template, MESSAGES) == "user"


def test_template_errors_are_user_errors():
    refuse = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    with pytest.raises(ChattuneError, match="System role not supported"):
        render_chat(refuse, MESSAGES)
    with pytest.raises(ChattuneError, match="syntax error"):
        render_chat("{% for m in messages %}", MESSAGES)
    with pytest.raises(ChattuneError, match="no chat template named"):
        choose_template("does-not-exist", "own", "m")
    assert choose_template(None, "own", "m").text == "own"


def test_templates_run_in_the_immutable_sandbox():
    with pytest.raises(ChattuneError):
        render_chat("{{ messages.append({'role': 'x'}) }}", MESSAGES)  # no mutation of our data
    with pytest.raises(ChattuneError):
        render_chat("{{ ''.__class__.__mro__[1].__subclasses__() }}", MESSAGES)  # no escape to Python


# --- engines on the tiny model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llamacpp(tiny_gguf):
    engine = open_engine("llamacpp", resolve_model(str(tiny_gguf)), None)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tiny_transformers(tiny_model_dir):
    engine = open_engine("transformers", resolve_model(str(tiny_model_dir)), None)
    yield engine
    engine.close()


@pytest.fixture(params=["llamacpp", "transformers"])
def engine(request):
    engine = request.getfixturevalue(f"tiny_{request.param}")
    engine.set_adapter(None)
    return engine


def test_engines_follow_the_protocol(engine):
    assert isinstance(engine, ChatEngine) and engine.kind in ("llamacpp", "transformers")


def test_stream_yields_pieces_and_reports_how_it_ended(engine):
    reply = engine.stream(MESSAGES, SHORT)
    assert reply.speaker == "base"
    pieces = list(reply)
    assert pieces and reply.text == "".join(pieces)
    assert reply.finish_reason in ("stop", "length")
    assert 0 < reply.n_tokens <= SHORT.max_tokens
    assert (reply.finish_reason == "length") == (reply.n_tokens == SHORT.max_tokens)


def test_greedy_replies_repeat(engine):
    assert engine.stream(MESSAGES, SHORT).collect() == engine.stream(MESSAGES, SHORT).collect()


def test_sampling_follows_the_seed(engine):
    hot = GenParams(max_tokens=8, temperature=1.0, seed=7)
    assert engine.stream(MESSAGES, hot).collect() == engine.stream(MESSAGES, hot).collect()


def test_cancel_from_another_thread_stops_the_reply(engine):
    reply = engine.stream(MESSAGES, GenParams(max_tokens=400))
    pieces = iter(reply)
    next(pieces)
    threading.Thread(target=reply.cancel).start()
    rest = list(pieces)
    assert reply.finish_reason == "cancelled"
    assert len(rest) < 50
    # the engine is free again right away
    assert engine.stream(MESSAGES, SHORT).collect() == engine.stream(MESSAGES, SHORT).collect()


def test_adapters_load_switch_and_clear_without_reload(engine, tiny_runs):
    base = engine.stream(MESSAGES, SHORT).collect()
    model_before = getattr(engine, "_llm", None) or engine.model
    for name in ("rand-a", "rand-b"):
        engine.load_adapter(resolve_adapter(tiny_runs, name))
    assert engine.adapters() == ["rand-a", "rand-b"]
    assert engine.which() == "base"  # loading does not activate
    assert engine.stream(MESSAGES, SHORT).collect() == base

    answers = {}
    for name in ("rand-a", "rand-b", "rand-a"):
        engine.set_adapter(name)
        assert engine.which() == f"adapter {name}"
        reply = engine.stream(MESSAGES, SHORT)
        answers.setdefault(name, reply.collect())
        assert reply.speaker == f"adapter {name}"
        assert reply.text == answers[name]
    assert len({base, answers["rand-a"], answers["rand-b"]}) == 3

    engine.set_adapter(None)
    reply = engine.stream(MESSAGES, SHORT)
    assert (reply.collect(), reply.speaker) == (base, "base")
    assert (getattr(engine, "_llm", None) or engine.model) is model_before  # the base was never reloaded


def test_a_swap_during_a_reply_waits_for_the_next_one(engine, tiny_runs):
    engine.load_adapter(resolve_adapter(tiny_runs, "rand-a"))
    base = engine.stream(MESSAGES, SHORT).collect()
    reply = engine.stream(MESSAGES, SHORT)
    pieces = iter(reply)
    first = next(pieces)
    engine.set_adapter("rand-a")
    assert engine.which() == "adapter rand-a"
    assert first + "".join(pieces) == base and reply.speaker == "base"
    assert engine.stream(MESSAGES, SHORT).speaker == "adapter rand-a"


def test_unknown_adapter_names_are_refused(engine):
    with pytest.raises(AdapterError, match="not loaded"):
        engine.set_adapter("never-loaded")


def test_each_engine_needs_its_adapter_format(tiny_llamacpp, tiny_transformers, tiny_runs):
    peft_only = AdapterRef("p", tiny_runs.run_dir("rand-a") / "adapter", None)
    gguf_only = AdapterRef("g", None, tiny_runs.run_dir("rand-a") / "adapter.gguf")
    with pytest.raises(AdapterError, match="no GGUF LoRA"):
        tiny_llamacpp.load_adapter(peft_only)
    with pytest.raises(AdapterError, match="no peft folder"):
        tiny_transformers.load_adapter(gguf_only)


def test_llamacpp_refuses_a_file_that_is_not_a_lora(tiny_llamacpp, tiny_gguf):
    with pytest.raises(AdapterError, match="could not load the GGUF LoRA"):
        tiny_llamacpp.load_adapter(AdapterRef("model-not-lora", None, tiny_gguf))


def test_llamacpp_engine_refuses_an_hf_folder(tiny_model_dir):
    with pytest.raises(ChattuneError, match="--engine transformers"):
        open_engine("llamacpp", resolve_model(str(tiny_model_dir)), None)


def test_a_too_long_conversation_is_a_user_error(engine):
    long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(ChattuneError, match="more than the model's context"):
        engine.stream(long, SHORT)
