"""Bring your own model: which chat template a model without one gets, and the settings training
takes from the model (end-of-turn tokens, padding, attention, sliding window)."""

from __future__ import annotations

import json

import pytest

from engine.errors import ChattuneError
from engine.prompts import template_override
from engine.templates import FAMILY_TEMPLATE, TURN_TOKENS, StopText, choose_template, render_chat

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of France?"}]
SHIPPED = ["chatml", "llama3", "gemma", "mistral", "phi3", "plain"]


def vocab(*names):
    """has_token for a vocabulary holding the turn tokens of the named templates."""
    tokens = {t for name in names for t in TURN_TOKENS[name]}
    return lambda text: text in tokens


def test_the_template_follows_the_rules_in_order():
    assert choose_template("plain", "OWN", "m").name == "plain"  # --template wins
    own = choose_template(None, "OWN", "m", family="gemma3", has_token=vocab("gemma"))
    assert own.name == "own" and own.text == "OWN"
    gemma = choose_template(None, None, "g.gguf", family="gemma3", has_token=vocab("gemma", "chatml"))
    assert gemma.name == "gemma" and "gemma3" in gemma.reason and "g.gguf has none" in gemma.reason
    # the family's default needs its turn tokens; another template whose tokens are there comes next
    smol = choose_template(None, None, "smol.gguf", family="llama", has_token=vocab("chatml"))
    assert smol.name == "chatml" and "vocabulary" in smol.reason
    plain = choose_template(None, None, "b.gguf", family="llama", has_token=vocab())
    assert plain.name == "plain" and plain.stops == ("\nUser:",) and "no family" in plain.reason
    with pytest.raises(ChattuneError, match="no chat template named"):
        choose_template("nope", "OWN", "m")


def test_every_family_default_is_shipped():
    assert set(FAMILY_TEMPLATE.values()) <= set(TURN_TOKENS) <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_templates_render_and_the_prompt_is_a_prefix_of_the_answered_chat(name):
    """Training puts the loss on what the answered chat adds to the prompt: the answer and the
    end of its turn. That needs the prompt to be an exact prefix."""
    text = template_override(name)
    prompt = render_chat(text, CHAT, bos_token="<s>", eos_token="</s>")
    answered = render_chat(text, CHAT + [{"role": "assistant", "content": "Paris."}], bos_token="<s>",
                           eos_token="</s>", add_generation_prompt=False)
    assert "Be brief." in prompt and "Capital of France?" in prompt and "Hello." in prompt
    assert answered.startswith(prompt)
    completion = answered[len(prompt):]
    assert "Paris." in completion
    end = choose_template(name, None, "m").end_tokens or ("</s>",)
    assert end[0] in completion, f"{name}: the answer's turn must end with {end[0]}"


def test_stop_text_cuts_at_the_next_turn_even_across_pieces():
    stops = StopText(("\nUser:",))
    out = "".join(stops.feed(p) for p in ["Paris is", " the capital.\nUs", "er: and", " more"])
    assert out == "Paris is the capital." and stops.stopped
    held = StopText(("\nUser:",))
    assert held.feed("Paris.\nUs") == "Paris." and held.flush() == "\nUs"  # a partial match is held, then given back
    assert StopText(()).feed("anything\nUser:") == "anything\nUser:"


@pytest.fixture(scope="module")
def gemma_base_dir(tmp_path_factory, tiny_model_dir):
    """A tiny Gemma 3 *base* model: no chat template, but its turn tokens in the vocabulary."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    out = tmp_path_factory.mktemp("gemma-base")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    tokenizer.chat_template = None
    Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
        max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return out


def test_training_settings_come_from_the_model(gemma_base_dir):
    from transformers import AutoTokenizer

    from engine.train.model_fit import fit_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(gemma_base_dir)
    assert not tokenizer.chat_template
    fit = fit_tokenizer(gemma_base_dir, tokenizer, None)
    assert fit.template.name == "gemma" and tokenizer.chat_template == template_override("gemma")
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn != tokenizer.eos_token_id and set(fit.end_token_ids) == {end_of_turn, tokenizer.eos_token_id}
    assert fit.padding_side == tokenizer.padding_side == "right" and tokenizer.pad_token is not None
    assert fit.attn_implementation == "sdpa" and fit.sliding_window == 8
    assert fit.summary()["template"]["name"] == "gemma"


def test_soft_capped_attention_trains_eagerly(gemma_base_dir, tmp_path):
    """Gemma 2 soft-caps attention logits, which SDPA cannot do."""
    import shutil

    from transformers import AutoTokenizer

    from engine.train.model_fit import fit_tokenizer

    folder = tmp_path / "gemma2"
    shutil.copytree(gemma_base_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="gemma2", attn_logit_softcapping=50.0)
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(gemma_base_dir)
    fit = fit_tokenizer(folder, tokenizer, "chatml")
    assert fit.attn_implementation == "eager" and fit.template.name == "chatml"


def test_an_hf_base_folder_gets_the_template_the_chat_gets(gemma_base_dir):
    from transformers import AutoTokenizer

    from engine.templates import hf_template

    choice = hf_template(gemma_base_dir, AutoTokenizer.from_pretrained(gemma_base_dir), None, "my-gemma")
    assert choice.name == "gemma" and "my-gemma has none" in choice.reason


def test_the_modelfile_stops_at_a_family_templates_turn_end_even_without_a_template_line():
    """Gemma's template (the system prompt folded into the first user turn) has no Ollama TEMPLATE
    translation; Ollama then uses the GGUF's, and the stop words must still end the turn."""
    from engine.export.modelfile import modelfile_text

    text, _ = modelfile_text("m.gguf", name="m", template=template_override("gemma"), eos_token="<eos>",
                             system=None, others=[])
    assert 'PARAMETER stop "<end_of_turn>"' in text and 'PARAMETER stop "<start_of_turn>"' in text
