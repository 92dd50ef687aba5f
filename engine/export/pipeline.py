"""The export, stage by stage: preflight, merge, convert, quantize, verify, package.

`run_export(plan, emit)` reports through `emit(event, **fields)`: an EventWriter of the events in
engine.export.events (start, stage, progress, warning, done, error, cancelled), which the child
writes as JSON lines, adding "t", the unix time.
Merged weights and the F16 intermediate live in <out>/.work/, which is removed however it ends.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from engine.engines.base import GenParams
from engine.errors import ChattuneError
from engine.export.events import ExportDone, ExportEvent
from engine.export.preflight import LOG_FILE, ExportPlan, check_base
from engine.export.verify import DEFAULT_MAX_TOKENS, DEFAULT_PROMPTS

STAGES = ("preflight", "merge", "convert", "quantize", "verify", "package")
_COMPENSATED = "compensated-F16.gguf"  # the error-compensated copy the k-quants are made from
# Rough share of the wall time per stage (measured on the embedded model), for one progress bar.
_WEIGHT = {"preflight": 0.08, "merge": 0.27, "convert": 0.32, "quantize": 0.11, "verify": 0.2, "package": 0.02}


class ExportCancelled(Exception):
    """Raised in the export child by its SIGTERM handler."""


class Reporter:
    def __init__(self, emit: Callable[..., ExportEvent]):
        self.emit = emit
        self.current: str | None = None
        self.seconds: dict[str, float] = {}
        self._done_share = 0.0
        self._last = (None, -1.0)

    def fraction(self, within: float = 0.0) -> float:
        return round(min(1.0, self._done_share + _WEIGHT[self.current] * max(0.0, min(1.0, within))), 4)

    @contextmanager
    def stage(self, name: str, message: str):
        self.current = name
        started = time.monotonic()
        self.emit("stage", stage=name, message=message, fraction=self.fraction())
        yield
        self.seconds[name] = round(time.monotonic() - started, 2)
        self._done_share += _WEIGHT[name]

    def progress(self, within: float, message: str = "") -> None:
        """At most one event per 2% of a stage, or when the message changes."""
        last_message, last_within = self._last
        if message == last_message and within - last_within < 0.02 and within < 1.0:
            return
        self._last = (message, within)
        self.emit("progress", stage=self.current, message=message, fraction=self.fraction(within))

    def say(self, message: str) -> None:
        self.progress(0.0, message)

    def warn(self, kind: str, message: str) -> None:
        self.emit("warning", stage=self.current, kind=kind, message=message)


def run_export(plan: ExportPlan, emit: Callable[..., ExportEvent], *, prompts: int = DEFAULT_PROMPTS,
               max_tokens: int = DEFAULT_MAX_TOKENS) -> ExportDone:
    """Do the export in this process; returns the done event. On failure the error (or cancelled)
    event is emitted, and the exception re-raised."""
    report = Reporter(emit)
    started = time.monotonic()
    emit("start", run=plan.run, out=plan.out_dir, quants=list(plan.quants), stages=list(STAGES))
    try:
        done = _stages(plan, report, prompts, max_tokens)
        done["stages"] = report.seconds
        done["elapsed_s"] = round(time.monotonic() - started, 2)
        from engine.export.package import write_manifest

        write_manifest(plan, done)
        return emit("done", **done)
    except ExportCancelled:
        emit("cancelled", stage=report.current)
        shutil.rmtree(plan.out_dir, ignore_errors=True)  # it was new or empty: nothing of the user's is lost
        raise
    except ChattuneError as err:
        emit("error", stage=report.current, message=str(err), expected=True, log=plan.out_dir / LOG_FILE)
        if report.current == "preflight":
            shutil.rmtree(plan.out_dir, ignore_errors=True)  # refused before writing: leave no empty folder
        raise
    except Exception as err:
        emit("error", stage=report.current, message=f"{type(err).__name__}: {err}", expected=False,
             log=plan.out_dir / LOG_FILE)
        raise
    finally:
        shutil.rmtree(plan.work_dir, ignore_errors=True)


def _stages(plan: ExportPlan, report: Reporter, n_prompts: int, max_tokens: int) -> dict:
    from engine.models import trainable_base
    from engine.run_inputs import read_run
    from engine.workspace import Workspace

    workspace = Workspace(plan.workspace)
    log_path = plan.out_dir / LOG_FILE
    quants = list(plan.quants)

    with report.stage("preflight", "checking the base model, the converter and the disk space"):
        inputs = read_run(plan.run_dir)
        base_dir = trainable_base(inputs.spec, workspace, progress=report.say)
        # The peft copy, and the LoRA GGUF of about the same size.
        facts = check_base(base_dir, plan, extra_bytes=2 * _size(inputs.adapter.need_peft()))
        # The template the run trained with (its --template, the model's own, or the one chosen for a
        # model without one) goes into the GGUF, so llama.cpp and Ollama prompt it as the chat did.
        from transformers import AutoTokenizer

        from engine.templates import hf_template

        template_text = hf_template(base_dir, AutoTokenizer.from_pretrained(base_dir), inputs.template).text
    plan.work_dir.mkdir(parents=True, exist_ok=True)

    with report.stage("merge", f"merging the adapter into {inputs.spec.name} (full precision, CPU)"):
        from engine.export.merge import merge_adapter

        merged = merge_adapter(base_dir, inputs.adapter.need_peft(), plan.work_dir / "merged",
                               chat_template=template_text, say=report.say)

    direct_q8 = quants == ["Q8_0"]
    first = plan.out_dir / plan.gguf_name("Q8_0" if direct_q8 else "F16")
    if not direct_q8 and "F16" not in quants:
        first = plan.work_dir / plan.gguf_name("F16")
    with report.stage("convert", f"converting to GGUF ({'Q8_0' if direct_q8 else 'F16'})"):
        from engine.export.convert import convert_to_gguf

        convert_to_gguf(plan.work_dir / "merged", first, "q8_0" if direct_q8 else "f16", name=plan.run,
                        log_path=log_path, progress=lambda f: report.progress(f, "writing the GGUF"))

    ggufs: dict[str, Path] = {}
    fallbacks: dict[str, dict] = {}
    todo = [q for q in quants if q != "F16" and not direct_q8]
    with report.stage("quantize", f"quantizing to {', '.join(todo)}" if todo else "nothing to quantize"):
        from engine.export.quantize import base_weight_type, quantize_gguf

        base_type = base_weight_type(inputs.spec.path) if inputs.spec.is_gguf and todo else None
        compensate = _compensator(plan, first, inputs.snapshot_dir, report)
        for quant in quants:
            target = plan.out_dir / plan.gguf_name(quant)
            if quant in todo:
                result = quantize_gguf(first, target, quant, log_path=log_path, base_type=base_type,
                                       compensate=compensate,
                                       progress=_quant_progress(report, todo.index(quant), len(todo), quant))
                if result["fallbacks"]:
                    fallbacks[quant] = result["fallbacks"]
                    report.warn("fallback", result["fallbacks"]["message"])
            ggufs[quant] = target
        if first.parent == plan.work_dir:
            first.unlink()
        (plan.work_dir / _COMPENSATED).unlink(missing_ok=True)
        shutil.rmtree(plan.work_dir / "merged")

    with report.stage("verify", "running the exported files next to the adapter"):
        from engine.export.verify import Reference, verification_prompts, verify_exports, write_verify

        prompts, source, available = verification_prompts(workspace.db_path, inputs.snapshot_dir, n_prompts)
        params = GenParams(max_tokens=max_tokens, temperature=0.0)
        total = len(prompts) * (1 + len(ggufs))
        answered = [0]

        def tick() -> None:
            answered[0] += 1
            report.progress(answered[0] / total, f"reply {answered[0]} of {total}")

        reference = Reference(inputs, workspace)
        try:
            adapter = reference.replies(prompts, params, tick)
            results, template = verify_exports(ggufs, prompts, adapter, reference, params, tick,
                                               lambda message: report.warn("verify", message))
        finally:
            reference.close()
        verify = write_verify(plan.out_dir, source=source, available=available, prompts=len(prompts),
                              params=params, reference=adapter, results=results)

    with report.stage("package", "writing the Modelfile, the model card and the adapters"):
        lora = inputs.adapter.gguf_path
        if lora is None:
            lora = _convert_lora(inputs, base_dir, plan.work_dir / "lora.gguf", report)
        from engine.export.package import ollama_name, package, training_system_prompt
        from engine.runfolder import load_run, read_run_config
        from engine.scorecard_format import load_scorecard, scorecard_markdown

        card = load_scorecard(plan.run_dir)
        first_checks = next(iter(results.values()))["checks"]
        files, templated = package(
            plan, ggufs=ggufs, lora=lora, peft_dir=inputs.adapter.need_peft(), meta=read_run_config(plan.run_dir),
            info=load_run(plan.run_dir), verify=verify, fallbacks=fallbacks, template=template,
            eos_token=first_checks["eos_token"], system=training_system_prompt(inputs.snapshot_dir),
            scorecard_md=scorecard_markdown(card) if card else None)
        if not templated:
            report.warn("modelfile", "the chat template could not be written as an Ollama TEMPLATE; the Modelfile "
                                     "leaves it to Ollama's detection of the template in the GGUF")

    problems = [f"{quant}: {p}" for quant, r in results.items() for p in r["problems"]]
    return {"out": plan.out_dir, "ollama_name": ollama_name(plan), "files": files,
            "ggufs": {q: p.name for q, p in ggufs.items()},
            "agreement": verify["agreement"], "agreement_with_ties": verify["agreement_with_ties"],
            "fidelity": {q: {"same_top_token": r["same_top_token"], "kl": r["kl"]} for q, r in results.items()},
            "verified": verify["ok"], "problems": problems,
            "fallbacks": fallbacks, "architecture": facts["architecture"],
            "params": facts["params"], "merge": merged}


def _compensator(plan: ExportPlan, f16: Path, snapshot_dir: Path | None, report: Reporter):
    """compensate(q5_0 tensor names, widen_except, widen_to) -> (an error-compensated copy of the F16
    GGUF, the names it rounded, the names widened), see engine.export.quantize. Calibrated on the run's
    training and validation conversations and the shipped general text (prompts/eval), so that the
    rounding follows both what the run taught and ordinary language."""
    from engine.prompt_sets import general_text
    from engine.runfolder import read_jsonl, snapshot_file

    conversations = []
    for split in ("train", "val") if snapshot_dir is not None else ():
        conversations += [row["messages"] for row in read_jsonl(snapshot_file(snapshot_dir, "sft", split))]
        conversations += [row["prompt"] + [{"role": "assistant", "content": row["chosen"]}]
                          for row in read_jsonl(snapshot_file(snapshot_dir, "dpo", split))]
    conversations = list({json.dumps(c, sort_keys=True): c for c in conversations}.values())  # SFT and DPO repeat
    try:
        texts = [general_text()]
    except ChattuneError:  # a prompts folder without it: the conversations alone
        texts = []
    if not conversations and not texts:
        return None

    def compensate(tensors: list[str], widen_except: set[str] | None, widen_to: str) -> tuple[Path, list[str], list[str]]:
        from engine.export.compensate import compensated_copy

        # One copy at a time, as preflight counted: each quant's copy replaces the last (on the
        # embedded model Q4_K_M and Q5_K_M need different ones: they widen ffn_down to different types).
        target = plan.work_dir / _COMPENSATED
        target.unlink(missing_ok=True)
        return target, *compensated_copy(f16, target, plan.work_dir / "merged", tensors, conversations, texts,
                                         widen_except=widen_except, widen_to=widen_to, say=report.say)

    return compensate


def _quant_progress(report: Reporter, index: int, count: int, quant: str) -> Callable[[float], None]:
    return lambda within: report.progress((index + within) / count, f"quantizing to {quant}")


def _convert_lora(inputs, base_dir: Path, target: Path, report: Reporter) -> Path | None:
    """The run has no GGUF LoRA (its conversion failed at training time): try once more here."""
    from engine.gguf_lora import convert_peft_to_gguf

    try:
        return convert_peft_to_gguf(inputs.adapter.need_peft(), base_dir, target)
    except ChattuneError as err:
        report.warn("lora", f"no LoRA-only GGUF in this export: {err}")
        return None


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
