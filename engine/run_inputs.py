"""What evaluation and export need from a finished run's folder: the base model (checked unchanged), the
adapter, the curves and the data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.adapters import GGUF_FILE, PEFT_DIR, AdapterRef
from engine.errors import ChattuneError
from engine.events import Start
from engine.models import ModelSpec, resolve_model
from engine.runfolder import SNAPSHOT_DIR, fingerprint, loss_curves, read_events, read_run_config


@dataclass
class RunInputs:
    name: str
    run_dir: Path
    spec: ModelSpec
    adapter: AdapterRef
    template: str | None  # the prompts/templates override the run trained with, if any
    method: str
    examples: int  # training examples
    train_curve: list[tuple[float, float]] = field(default_factory=list)  # (step, loss)
    eval_curve: list[tuple[float, float]] = field(default_factory=list)  # (epoch, eval_loss)

    @property
    def snapshot_dir(self) -> Path | None:
        folder = self.run_dir / SNAPSHOT_DIR
        return folder if folder.is_dir() else None


def read_run(run_dir: Path) -> RunInputs:
    run_dir = Path(run_dir)
    meta = read_run_config(run_dir)
    base, config = meta.base, meta.config
    if not base.path:
        raise ChattuneError(f"run {run_dir.name!r} does not record its base model (config.json has no base.path)",
                            "evaluate a run made by `chattune train`")
    spec = resolve_model(base.path)
    if base.fingerprint and fingerprint(spec.path) != base.fingerprint:
        raise ChattuneError(f"the base model {spec.path} changed since run {run_dir.name!r} was trained",
                            "restore the original model file; an adapter only fits the weights it was trained on")
    spec = ModelSpec(spec.kind, spec.path, base.name or spec.name, spec.source)
    peft, gguf = run_dir / PEFT_DIR, run_dir / GGUF_FILE
    has_peft = (peft / "adapter_config.json").is_file()
    if not has_peft and not gguf.is_file():
        raise ChattuneError(f"run {run_dir.name!r} has no adapter yet", "wait for it to finish, or resume it")
    adapter = AdapterRef(run_dir.name, peft if has_peft else None, gguf if gguf.is_file() else None)
    method = config.get("method", "sft")
    counts = meta.snapshot.counts
    inputs = RunInputs(run_dir.name, run_dir, spec, adapter, config.get("template"), method,
                       counts.get(f"{method}-train", 0))
    events = read_events(run_dir)
    for event in events:
        if isinstance(event, Start) and event.examples is not None:
            inputs.examples = event.examples
    curves = loss_curves(events)
    inputs.train_curve, inputs.eval_curve = curves.train, curves.eval_by_epoch
    return inputs
