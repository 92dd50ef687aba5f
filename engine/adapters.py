"""Find a trained adapter by run name or path: the peft folder and/or its GGUF LoRA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import AdapterError, ChattuneError
from engine.workspace import Workspace, check_name

PEFT_DIR = "adapter"  # runs/<run>/adapter/: peft's adapter_config.json + adapter_model.safetensors
GGUF_FILE = "adapter.gguf"  # runs/<run>/adapter.gguf: the same adapter as a GGUF LoRA for llama.cpp
# runs/<run>/adapter-merged.gguf: base + adapter in one GGUF, made when the LoRA cannot be a GGUF LoRA
MERGED_FILE = "adapter-merged.gguf"


@dataclass(frozen=True)
class AdapterRef:
    name: str
    peft_dir: Path | None
    gguf_path: Path | None
    merged_gguf: Path | None = None  # the llama.cpp chat's route when there is no GGUF LoRA

    def need_gguf(self) -> Path:
        if self.gguf_path is None:
            raise AdapterError(
                f"adapter {self.name!r} has no GGUF LoRA for the llama.cpp engine",
                "use --engine transformers, or convert it with the training run's export",
            )
        return self.gguf_path

    def need_peft(self) -> Path:
        if self.peft_dir is None:
            raise AdapterError(
                f"adapter {self.name!r} has no peft folder for the transformers engine",
                "use --engine llamacpp, or pass the run folder",
            )
        return self.peft_dir


def resolve_adapter(workspace: Workspace, name_or_path: str) -> AdapterRef:
    """A run name in the workspace, a run folder, a peft folder, or a .gguf LoRA file."""
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return AdapterRef(path.stem, None, path.resolve())
    if path.is_dir() and (path / "adapter_config.json").is_file():
        gguf, merged = path.parent / GGUF_FILE, path.parent / MERGED_FILE
        return AdapterRef(path.parent.name if path.name == PEFT_DIR else path.name,
                          path.resolve(), gguf.resolve() if gguf.is_file() else None,
                          merged.resolve() if merged.is_file() else None)
    if path.is_dir() and (path / PEFT_DIR).is_dir():
        return _from_run_dir(path.name, path)
    if "/" not in name_or_path:
        run = workspace.run_dir(check_name(name_or_path, "adapter name"))
        if run.is_dir():
            return _from_run_dir(name_or_path, run)
    raise AdapterError(
        f"adapter {name_or_path!r} not found (looked for a run in {workspace.runs_dir}, a folder, or a .gguf)",
        "list runs with `chattune runs`, or pass the path of a run folder or GGUF LoRA",
    )


def _from_run_dir(name: str, run: Path) -> AdapterRef:
    peft = run / PEFT_DIR
    gguf, merged = run / GGUF_FILE, run / MERGED_FILE
    if not (peft / "adapter_config.json").is_file() and not gguf.is_file():
        raise AdapterError(f"run {name!r} has no adapter yet ({run})", "wait for the run to finish, or resume it")
    return AdapterRef(
        name,
        peft.resolve() if (peft / "adapter_config.json").is_file() else None,
        gguf.resolve() if gguf.is_file() else None,
        merged.resolve() if merged.is_file() else None,
    )


def list_adapters(workspace: Workspace) -> list[AdapterRef]:
    if not workspace.runs_dir.is_dir():
        return []
    found = []
    for run in sorted(workspace.runs_dir.iterdir()):
        try:
            found.append(_from_run_dir(run.name, run))
        except AdapterError:
            continue
    return found


def newest_adapter(workspace: Workspace, model: str | None) -> AdapterRef | None:
    """The most recently written adapter trained on `model` (a --model value, None for the embedded
    one): the default B side of an A/B. One trained on another base would not load, or answer nonsense;
    a run is matched by the fingerprint of the weights it recorded (runs/<run>/config.json)."""
    from engine.models import resolve_model
    from engine.runfolder import fingerprint

    base = fingerprint(resolve_model(model).path)
    found = [ref for ref in list_adapters(workspace) if _base_fingerprint(workspace.run_dir(ref.name)) == base]
    if not found:
        return None
    return max(found, key=lambda ref: (ref.gguf_path or ref.peft_dir).stat().st_mtime)


def _base_fingerprint(run: Path) -> str | None:
    from engine.runfolder import read_run_config  # here: runfolder imports this module

    try:
        return read_run_config(run).base.fingerprint or None
    except (ChattuneError, OSError):
        return None  # a run that does not say what it trained on is nobody's default
