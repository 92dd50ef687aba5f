"""What lands next to the GGUF files: the LoRA alone, the peft adapter, the Modelfile, the model card,
and export.json (the machine-readable summary the TUI and CLI read)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from engine import __version__
from engine.export.card import CardFacts, model_card
from engine.export.modelfile import modelfile_text
from engine.export.preflight import ExportPlan
from engine.runfolder import RunConfig

EXPORT_JSON = "export.json"
MODELFILE = "Modelfile"
README = "README.md"
PEFT_COPY = "adapter"


def lora_name(plan: ExportPlan) -> str:
    return f"{plan.run}-lora.gguf"


def ollama_name(plan: ExportPlan) -> str:
    return plan.run.lower()  # Ollama model names are lower case


def training_system_prompt(snapshot_dir: Path | None) -> str | None:
    """The system prompt every training example shared, if they all had the same one: Ollama then
    sends it when the user gives none, so the model sees the context it was tuned in."""
    if snapshot_dir is None:
        return None
    from engine.runfolder import read_jsonl, snapshot_file

    prompts = [row["messages"] for row in read_jsonl(snapshot_file(snapshot_dir, "sft", "train"))]
    prompts += [row["prompt"] for row in read_jsonl(snapshot_file(snapshot_dir, "dpo", "train"))]
    systems = {messages[0]["content"] if messages and messages[0]["role"] == "system" else None for messages in prompts}
    return systems.pop() if len(systems) == 1 else None


def package(plan: ExportPlan, *, ggufs: dict[str, Path], lora: Path | None, peft_dir: Path, meta: RunConfig, info,
            verify: dict, fallbacks: dict[str, dict], template: str | None, eos_token: str,
            system: str | None, scorecard_md: str | None) -> tuple[list[dict], bool]:
    """Write everything beside the GGUF files. Returns (files, whether the Modelfile got a TEMPLATE)."""
    out = plan.out_dir
    shutil.copytree(peft_dir, out / PEFT_COPY)
    lora_file = None
    if lora is not None:
        lora_file = lora_name(plan)
        shutil.copyfile(lora, out / lora_file)

    names = [path.name for path in ggufs.values()]
    text, fmt = modelfile_text(names[0], name=ollama_name(plan), template=template, eos_token=eos_token, system=system,
                               others=names[1:])
    (out / MODELFILE).write_text(text, encoding="utf-8")

    files = [{"name": path.name, "bytes": path.stat().st_size, "what": f"merged model, {quant}"}
             for quant, path in ggufs.items()]
    if lora_file:
        files.append({"name": lora_file, "bytes": (out / lora_file).stat().st_size,
                      "what": "the LoRA alone, for llama.cpp `--lora` on the base model"})
    files += [
        {"name": f"{PEFT_COPY}/", "bytes": sum(p.stat().st_size for p in (out / PEFT_COPY).rglob("*") if p.is_file()),
         "what": "the peft adapter (safetensors)"},
        {"name": MODELFILE, "bytes": (out / MODELFILE).stat().st_size,
         "what": "Ollama: template, stop words" + (", system prompt" if "SYSTEM" in text else "")},
        {"name": "verify.json", "bytes": (out / "verify.json").stat().st_size, "what": "the verification results"},
        {"name": README, "bytes": None, "what": "this card"},
    ]
    card = model_card(CardFacts(plan.run, meta, info, files, {q: p.name for q, p in ggufs.items()}, lora_file,
                                verify, fallbacks, scorecard_md, ollama_name(plan)))
    (out / README).write_text(card, encoding="utf-8")
    files[-1]["bytes"] = (out / README).stat().st_size
    return files, fmt is not None


def write_manifest(plan: ExportPlan, summary: dict) -> None:
    manifest = {"run": plan.run, "quants": list(plan.quants), "created_at": datetime.now(timezone.utc)
                .isoformat(timespec="seconds"), "chattune": __version__, **summary}
    (plan.out_dir / EXPORT_JSON).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
