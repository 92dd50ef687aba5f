"""Export: seconds per stage and the files written, read from the export child's own events.

The export needs a finished training run, so the bench makes one first (untimed): a short real run
through engine.train.runner on a few of the bench examples, in a scratch workspace that shares the
user's cache of full-precision weights. The user's workspace gets no run and no export.
"""

from __future__ import annotations

import time

from engine.bench.common import Context, PartResult, Row, summarize

RUN_EXAMPLES = 8  # enough for a real adapter; the export's cost does not depend on it
VERIFY_PROMPTS = 4  # the export's verify stage: prompts answered by the adapter and by each GGUF
VERIFY_TOKENS = 32


def export_part(ctx: Context) -> PartResult:
    from engine.export.events import ExportDone
    from engine.export.runner import start_export

    part = PartResult("export")
    workspace, run = _finished_run(ctx)
    ctx.progress(f"export: merge, convert, quantize, verify and package run {run!r} (export child process)")
    started = time.perf_counter()
    handle = start_export(workspace, run=run, prompts=VERIFY_PROMPTS, max_tokens=VERIFY_TOKENS)
    events = list(handle.events())
    wall = time.perf_counter() - started
    handle.wait()
    done = handle.outcome
    if not isinstance(done, ExportDone):
        raise RuntimeError(f"the export failed: {done!r}")  # the error event, with its message

    part.rows = [Row(f"stage: {stage}", "s", summarize([seconds]), better="lower")
                 for stage, seconds in done.stages.items()]
    part.rows.append(Row("whole export (process start to done)", "s", summarize([wall]), better="lower"))
    base_mb = ctx.spec.path.stat().st_size / 2**20 if ctx.spec.path.is_file() else None
    if base_mb:
        part.rows.append(Row(f"size: base model ({ctx.spec.path.name})", "MB", summarize([base_mb]), better=""))
    for item in done.files:
        if item.bytes and item.name.endswith((".gguf", "/")):
            part.rows.append(Row(f"size: {item.name} ({item.what})", "MB", summarize([item.bytes / 2**20]), better=""))
    part.ours = ("engine.export.runner.start_export (child process): preflight, merge in full precision, "
                 "convert to GGUF, quantize, verify by running the files, package")
    part.notes = [f"quantization {', '.join(done.ggufs)}; verify answered {VERIFY_PROMPTS} prompts "
                  f"of at most {VERIFY_TOKENS} tokens with the adapter and with each GGUF "
                  f"(agreement {done.agreement}, verified {done.verified})",
                  "no baseline: the usual route (merge_and_unload, llama.cpp's convert script and the "
                  "compiled llama-quantize) has no single comparable command",
                  *(fallback.message for fallback in done.fallbacks.values())]
    part.details = {"stages_s": done.stages, "elapsed_s": done.elapsed_s, "wall_s": wall,
                    "files": [item.model_dump() for item in done.files], "agreement": done.agreement,
                    "verified": done.verified,
                    "events": len(events)}
    return part


def _finished_run(ctx: Context):
    """A scratch workspace holding one finished run trained on a few bench examples."""
    from engine.bench.examples import bench_rows
    from engine.events import Done
    from engine.models import trainable_base
    from engine.store import FeedbackStore
    from engine.train.config import TrainConfig
    from engine.train.runner import start_run
    from engine.workspace import Workspace

    trainable_base(ctx.spec, ctx.workspace, progress=ctx.progress)  # built once, in the user's cache
    workspace = Workspace.open(ctx.scratch / "export-ws")
    workspace.cache_dir.mkdir(parents=True, exist_ok=True)
    (workspace.cache_dir / "base").symlink_to(ctx.workspace.cache_dir / "base", target_is_directory=True)
    store = FeedbackStore(workspace.db_path)
    try:
        for row in bench_rows()[:RUN_EXAMPLES]:
            store.add_feedback("approved", row["prompt"], row["completion"][0]["content"])
    finally:
        store.close()
    model_arg = None if ctx.spec.source == "embedded" else str(ctx.spec.path)
    ctx.progress(f"export: training a short run to export ({RUN_EXAMPLES} examples, 1 epoch; not timed)")
    handle = start_run(workspace, TrainConfig(epochs=1, evaluate=False), model_arg=model_arg, name="bench")
    for _event in handle.events():
        pass
    handle.wait()
    outcome = handle.outcome
    if not isinstance(outcome, Done):
        raise RuntimeError(f"the training run to export failed: {outcome!r}")
    return workspace, "bench"
