"""What can be opened here with no download: the embedded model, GGUF files in the workspace and in
the usual local places (the Hugging Face cache, Ollama's blobs, LM Studio's models folder) and HF
model folders in the Hugging Face cache; each with what chattune can do with it. GGUF files are
known by their headers alone (engine.gguf_header).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.errors import ChattuneError, ModelNotFound
from engine.gguf_header import read_gguf_header
from engine.models import embedded_model
from engine.templates import FAMILY_TEMPLATE, TURN_TOKENS

LIST_TIMEOUT_S = 300  # listing by a child: the Hugging Face cache can be large
_SKIP_DIRS = {"runs", "cache", ".git", "node_modules", "__pycache__", ".venv"}


@dataclass
class ModelEntry:
    name: str
    path: str  # what to pass to --model
    source: str  # embedded, workspace, hf-cache, ollama, lm-studio
    kind: str  # gguf or hf
    architecture: str
    params: int | None
    size_bytes: int
    quantization: str
    template: str  # "own", "none → gemma" (what the chat would use), ...
    train: bool
    hot_swap: str  # "tested", "converter" or "no"
    export: bool
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def quantization_name(file_type: int | None) -> str:
    import gguf

    try:
        return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (ValueError, TypeError):
        return "?"


def template_label(own: bool, family: str | None, has_token) -> str:
    """'own', or 'none → NAME': the template the chat picks (engine.templates.choose_template's rules)."""
    if own:
        return "own"
    fits = [name for name, tokens in TURN_TOKENS.items() if all(has_token(t) for t in tokens)]
    default = FAMILY_TEMPLATE.get((family or "").lower())
    return f"none → {default if default in fits else (fits[0] if fits else 'plain')}"


def converter_archs() -> tuple[dict[str, str], set[str]]:
    """(GGUF architecture name -> an HF architecture the GGUF converter writes it from, HF names it knows)."""
    import gguf
    from conversion import ModelBase, ModelType, load_all_models

    load_all_models()
    by_gguf, known = {}, set()
    for hf_name, cls in ModelBase._model_classes[ModelType.TEXT].items():
        known.add(hf_name)
        arch = getattr(cls, "model_arch", None)
        if arch is not None:
            by_gguf.setdefault(gguf.MODEL_ARCH_NAMES[arch], hf_name)
    return by_gguf, known


def gguf_entry(path: Path, source: str, name: str | None = None, archs=None) -> ModelEntry | None:
    try:
        header = read_gguf_header(path)
    except (OSError, ValueError, struct.error):
        return None
    fields = header.fields
    if fields.get("general.type") == "adapter":
        return None  # a LoRA, not a model
    arch = str(fields.get("general.architecture", "?"))
    by_gguf, _ = archs or converter_archs()
    hf_arch = by_gguf.get(arch)
    trainable = arch in _transformers_gguf_archs()
    hot_swap = "no" if not (trainable and hf_arch) else ("tested" if _tested(arch) else "converter")
    return ModelEntry(
        name=name or str(fields.get("general.name") or path.stem), path=str(path), source=source, kind="gguf",
        architecture=arch, params=header.params, size_bytes=path.stat().st_size,
        quantization=quantization_name(fields.get("general.file_type")),
        template=template_label(bool(fields.get("tokenizer.chat_template")), arch, header.turn_tokens.__contains__),
        train=trainable, hot_swap=hot_swap, export=trainable and hf_arch is not None,
        note="" if trainable else "transformers cannot dequantize this architecture for training")


def _tested(gguf_arch: str) -> bool:
    """Whether an architecture with a parity test writes this GGUF architecture."""
    import gguf
    from conversion import ModelBase, ModelType

    from engine.gguf_lora import HOT_SWAP_TESTED

    classes = ModelBase._model_classes[ModelType.TEXT]
    return any(gguf.MODEL_ARCH_NAMES[classes[name].model_arch] == gguf_arch for name in HOT_SWAP_TESTED
               if name in classes)


def hf_entry(folder: Path, source: str, name: str, archs=None) -> ModelEntry | None:
    from engine.gguf_lora import HOT_SWAP_TESTED

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    weights = list(folder.glob("*.safetensors"))
    hf_arch = ((config.get("text_config") or {}).get("architectures") or config.get("architectures") or ["?"])[0]
    family = (config.get("text_config") or {}).get("model_type") or config.get("model_type")
    _, known = archs or converter_archs()
    vocab_text = _read_text(folder / "tokenizer.json")
    own = bool(_read_json(folder / "tokenizer_config.json").get("chat_template")) or \
        (folder / "chat_template.jinja").is_file()
    trainable = bool(weights) and hf_arch.endswith(("ForCausalLM", "ForConditionalGeneration"))
    converts = hf_arch in known
    return ModelEntry(
        name=name, path=str(folder), source=source, kind="hf", architecture=hf_arch, params=None,
        size_bytes=sum(p.stat().st_size for p in weights), quantization=str(config.get("torch_dtype") or
                                                                          config.get("dtype") or "?"),
        template=template_label(own, family, lambda t: json.dumps(t) in vocab_text),
        train=trainable, hot_swap="no" if not (trainable and converts) else
        ("tested" if hf_arch in HOT_SWAP_TESTED else "converter"),
        export=trainable and converts,
        note="" if weights else "no *.safetensors weights (pickled .bin files are never loaded)")


def _transformers_gguf_archs() -> set[str]:
    """GGUF architectures transformers can dequantize into a trainable model."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    return set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# --- where models are ---------------------------------------------------------------------------


def local_models(workspace_root: Path) -> list[ModelEntry]:
    """Every model found, the embedded one first."""
    archs = converter_archs()
    found: list[ModelEntry] = []
    try:
        spec = embedded_model()
        entry = gguf_entry(spec.path, "embedded", spec.name, archs)
        if entry:
            entry.path = "(default: no --model)"
            found.append(entry)
    except ModelNotFound:
        pass
    for path in _gguf_files(workspace_root):
        found += filter(None, [gguf_entry(path, "workspace", None, archs)])
    for kind, path, name in _hf_cache():
        entry = gguf_entry(path, "hf-cache", name, archs) if kind == "gguf" else hf_entry(path, "hf-cache", name, archs)
        found += [entry] if entry else []
    for path, name in _ollama_blobs():
        found += filter(None, [gguf_entry(path, "ollama", name, archs)])
    for folder in _lm_studio_dirs():
        for path in _gguf_files(folder):
            found += filter(None, [gguf_entry(path, "lm-studio", None, archs)])
    return found


def listed_by_child(workspace_root: Path) -> list[dict]:
    """Every model `chattune models` lists for this workspace, numbered as it numbers them (from 1), from
    a `chattune models --json` child: reading the architectures the GGUF converter knows loads torch,
    which the app's process never does."""
    cmd = [sys.executable, "-m", "engine.cli", "--workspace", str(workspace_root), "models", "--json"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=LIST_TIMEOUT_S, stdin=subprocess.DEVNULL)
        entries = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        entries = None
    if not isinstance(entries, list):
        raise ChattuneError("could not list the models here", "run `chattune models` to see why")
    return entries


def listed_model(model: str | None, entries) -> str | None:
    """`--model N` (every front end): the Nth model `chattune models` lists, numbered from 1, as the
    path to open (None for the embedded one, the default); any other value is left as it is.
    `entries()` gives the list as dicts (ModelEntry.as_dict()); it is called only for a number."""
    if model is None or not model.isdigit() or Path(model).exists():
        return model
    listed = entries()
    if not 1 <= int(model) <= len(listed):
        raise ModelNotFound(f"--model {model}: `chattune models` lists {len(listed)} model(s) here",
                            "pass a number from its first column, or a path")
    entry = listed[int(model) - 1]
    return None if entry["source"] == "embedded" else entry["path"]


def listed_here(model: str | None, workspace_root: Path) -> str | None:
    """listed_model, listing the models in this process (the CLI's commands; the app lists through a
    child, as it never loads torch)."""
    return listed_model(model, lambda: [entry.as_dict() for entry in local_models(workspace_root)])


def _gguf_files(root: Path, depth: int = 4) -> list[Path]:
    if not root.is_dir():
        return []
    found = []
    for current, dirs, files in os.walk(root):
        level = len(Path(current).relative_to(root).parts)
        dirs[:] = [] if level >= depth else [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".")]
        found += [Path(current) / f for f in sorted(files) if f.endswith(".gguf")]
    return found


def _hf_cache():
    """(kind, path, hub id) of each cached snapshot: an HF folder, or each GGUF file in it."""
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    for repo in sorted(cache.glob("models--*")) if cache.is_dir() else []:
        hub_id = repo.name.removeprefix("models--").replace("--", "/")
        for snapshot in sorted((repo / "snapshots").glob("*")):
            if (snapshot / "config.json").is_file():
                yield "hf", snapshot, hub_id
            for path in sorted(snapshot.glob("*.gguf")):
                yield "gguf", path, f"{hub_id}/{path.name}"


def _ollama_blobs():
    """(blob path, model:tag) for each model layer named in Ollama's manifests."""
    root = Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")
    manifests = root / "manifests"
    for manifest in sorted(manifests.rglob("*")) if manifests.is_dir() else []:
        if not manifest.is_file():
            continue
        layers = _read_json(manifest).get("layers") or []
        for layer in layers:
            if layer.get("mediaType") == "application/vnd.ollama.image.model":
                blob = root / "blobs" / str(layer.get("digest", "")).replace(":", "-")
                if blob.is_file():
                    yield blob, f"{manifest.parent.name}:{manifest.name}"


def _lm_studio_dirs() -> list[Path]:
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]
