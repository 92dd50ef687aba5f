"""The child processes' events as typed data (engine.events, engine.export.events): a writer's typo
fails, and a reader keeps working when a newer child writes kinds or fields it does not know."""

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from engine.childproc import ChildHandle
from engine.events import TRAINING_EVENTS, DataCounts, Done, Failed, Start, Step, TrainWarning
from engine.export.events import EXPORT_EVENTS, ExportDone, ExportProgress, ExportStage
from engine.runfolder import EventLog, load_run, read_events


def test_every_documented_kind_reads_back_as_its_model(tmp_path):
    log = EventLog(tmp_path, None)
    written = [
        log.emit("status", phase="data", message="rewording 3 examples"),
        log.emit("data", **{"example-train": 3, "rewording-val": 4}),
        log.emit("start", run="r", method="sft", examples=3, rows=20, val_examples=4, tokens=900, epochs=2,
                 device="cpu", quantization="none", precision="bf16", world_size=1, quantized_layers=0, step=0,
                 max_steps=10, trainable_params=10, total_params=100, resumed_from=None),
        log.emit("step", step=1, max_steps=10, epoch=0.1, loss=2.5, lr=1e-4, grad_norm=1.0, tokens_per_s=50.0,
                 eta_s=9.0, peak_mem_mb=300.0, reward_margins=0.1, reward_accuracies=0.5),
        log.emit("epoch", step=5, epoch=1, train_loss=2.0),
        log.emit("eval", step=5, epoch=1.0, eval_loss=1.9),
        log.emit("checkpoint", step=5, path=tmp_path / "checkpoints" / "checkpoint-5"),
        log.warn("overfitting", "validation loss rose"),
        log.emit("done", adapter=tmp_path / "adapter", gguf=None, final_loss=1.0, eval_loss=1.9, steps=10,
                 tokens_per_s=50.0, elapsed_s=12.0, cpu_s=20.0),
        log.emit("scorecard", path=tmp_path / "scorecard.json", verdict="good", reason="it learned", heldout_n=0,
                 base_f1=None, adapter_f1=None, taught=3, taught_n=3, reworded=2, reworded_n=3, kept=9,
                 general_n=10, forgetting_score=0.9, elapsed_s=30.0),
        log.emit("cancelled", step=3, checkpoint=None, log=tmp_path / "train.log"),
        log.emit("error", message="out of memory", log=tmp_path / "train.log", returncode=-9),
    ]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == [e.event for e in written]
    assert read_events(tmp_path) == written  # each line parses to the model it was built from
    assert [type(e) for e in written] == list(TRAINING_EVENTS.models.values())
    assert written[1].counts == {"example-train": 3, "rewording-val": 4}
    assert written[8].adapter == str(tmp_path / "adapter")  # paths travel as strings


def test_a_writer_s_typo_fails_instead_of_shipping(tmp_path):
    log = EventLog(tmp_path, None)
    with pytest.raises(ValueError, match="no field los"):
        log.emit("step", step=1, los=2.5)
    with pytest.raises(ValueError, match="no event kind 'stpe'"):
        log.emit("stpe", step=1)
    with pytest.raises(ValidationError):
        log.emit("step", step="one")
    assert not (tmp_path / "metrics.jsonl").exists()  # nothing half-written


def test_kinds_and_fields_from_a_newer_child_are_ignored(tmp_path):
    newer = TRAINING_EVENTS.parse('{"event": "step", "t": 1.5, "step": 2, "loss": 1.25, "grad_clip": {"x": 1}}')
    assert isinstance(newer, Step) and (newer.step, newer.loss, newer.t) == (2, 1.25, 1.5)
    assert TRAINING_EVENTS.parse('{"event": "heartbeat", "t": 2}') is None
    assert EXPORT_EVENTS.parse('{"event": "step", "step": 1}') is None  # each stream knows its own kinds
    progress = EXPORT_EVENTS.parse('{"event": "progress", "stage": "merge", "fraction": 0.5, "eta_s": 3}')
    assert isinstance(progress, ExportProgress) and isinstance(progress, ExportStage) and progress.fraction == 0.5

    # A run folder a newer child wrote still lists with its status and curve.
    (tmp_path / "config.json").write_text(json.dumps({"config": {"method": "sft"}}))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in (
        {"event": "start", "t": 1, "max_steps": 2, "examples": 4, "new_field": True},
        {"event": "heartbeat", "t": 2},
        {"event": "step", "t": 3, "step": 1, "loss": 2.0},
        {"event": "step", "t": 4, "step": 2, "loss": 1.0, "max_steps": 2},
        {"event": "done", "t": 5, "final_loss": 1.0, "steps": 2, "adapter_sha": "abc"})))
    info = load_run(tmp_path)
    assert (info.status, info.examples, info.step, info.max_steps, info.losses) == ("done", 4, 2, 2, [(1, 2.0), (2, 1.0)])


def test_a_malformed_line_is_skipped_as_a_torn_one_is():
    for line in ('{"event": "step", "step": "not a number"}', '{"event": "done"', "loading weights...", "[1, 2]",
                 '{"step": 1}', ""):
        assert TRAINING_EVENTS.parse(line) is None, line
    assert isinstance(TRAINING_EVENTS.parse('{"event": "done"}'), Done)  # every field has a default


class _Child(ChildHandle):
    kinds = TRAINING_EVENTS

    def silent_exit(self, code: int) -> Failed:
        return Failed(message=f"exit {code}")


def test_a_child_s_stream_yields_typed_events_and_skips_the_rest():
    lines = ['{"event": "start", "t": 1, "step": 0, "max_steps": 1}', "a stray print",
             '{"event": "sparkle", "t": 2}', '{"event": "warning", "t": 3, "kind": "too_long", "message": "cut"}',
             '{"event": "done", "t": 4, "steps": 1, "gguf": null}']
    code = f"import sys; sys.stdout.write({chr(10).join(lines) + chr(10)!r})"
    handle = _Child(subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True))
    events = list(handle.events())
    assert [type(e) for e in events] == [Start, TrainWarning, Done]
    assert events[1].message == "cut" and handle.outcome is events[-1] and handle.wait() == 0


def test_an_export_done_event_carries_its_files_typed():
    done = EXPORT_EVENTS.build({"event": "done", "out": "/x", "files": [{"name": "m.gguf", "bytes": 5, "what": "m"}],
                                "ggufs": {"Q4_K_M": "m.gguf"}, "fallbacks": {"Q4_K_M": {"message": "wider", "n": 2}},
                                "verified": True})
    assert isinstance(done, ExportDone) and done.files[0].bytes == 5 and done.fallbacks["Q4_K_M"].message == "wider"
    with pytest.raises(ValueError, match="no field verifed"):
        EXPORT_EVENTS.build({"event": "done", "verifed": True})
    assert isinstance(EXPORT_EVENTS.parse(json.dumps(done.model_dump(mode="json"))), ExportDone)
    assert DataCounts().counts == {}
