"""Runs on the tiny random Llama: the child, its events, the run folder, cancel/resume, a killed
child, one run per workspace, the multi-GPU launch, and the CLI."""

import json
import os
import subprocess
import sys

import pytest
from train_support import collect, fill_store, read_metrics

from engine import runlock
from engine.errors import ChattuneError
from engine.runfolder import list_runs, load_run, read_events
from engine.train.config import TrainConfig
from engine.train.runner import (
    RunHandle,
    attach_run,
    child_command,
    resume_run,
    start_run,
)

PLAIN = {"augment": 0, "replay": 0}  # the runner's mechanics, without generating rewordings or replay


@pytest.fixture
def filled(workspace):
    fill_store(workspace.db_path, n_facts=5)  # and 3 general answers: 8 examples, every one in train
    return workspace


def _store_state(workspace):
    from engine.store import FeedbackStore

    store = FeedbackStore(workspace.db_path)
    try:
        return store.stats(), [(r.id, r.kind, r.correction, r.split) for r in store.records()]
    finally:
        store.close()


@pytest.mark.child
def test_a_run_trains_two_steps_and_its_folder_tells_the_story(filled, tiny_model_dir):
    handle = start_run(filled, TrainConfig(epochs=1, batch_size=4, **PLAIN), str(tiny_model_dir), name="two-steps")
    events = collect(handle)
    assert handle.wait() == 0
    kinds = [e.event for e in events]
    # Training ends with done (the adapter is usable at once), then the evaluation's scorecard.
    assert kinds[-1] == "scorecard" and "done" in kinds and "error" not in kinds
    assert (handle.run_dir / "scorecard.json").is_file() and (handle.run_dir / "scorecard.md").is_file()
    start = next(e for e in events if e.event == "start")
    assert (start.examples, start.val_examples, start.max_steps) == (8, 0, 2)
    assert start.device == "cpu" and start.quantization == "none" and start.trainable_params > 0

    # The events on the pipe are the ones kept in metrics.jsonl, losses included, and every line the
    # child wrote reads back as its typed event, field for field (engine.events).
    run_dir = handle.run_dir
    assert read_events(run_dir) == events
    assert [e.model_dump(mode="json", exclude_unset=True) for e in events] == read_metrics(run_dir)
    steps = [e for e in read_metrics(run_dir) if e["event"] == "step"]
    assert [s["step"] for s in steps] == [1, 2]
    assert all(s["loss"] > 0 and s["max_steps"] == 2 and s["tokens_per_s"] > 0 for s in steps)
    assert steps[-1]["eta_s"] == 0
    assert not [e for e in events if e.event == "eval"]  # the plain recipe has no validation rows

    # The folder alone reproduces the run: config, snapshot (hash), base reference (fingerprint).
    meta = json.loads((run_dir / "config.json").read_text())
    manifest = json.loads((run_dir / "snapshot" / "manifest.json").read_text())
    assert meta["snapshot"]["hash"] == manifest["hash"]
    assert meta["base"]["path"] == str(tiny_model_dir) and len(meta["base"]["fingerprint"]) == 16
    assert meta["config"]["epochs"] == 1 and meta["config"]["lora_r"] == 16  # preset value, resolved
    assert meta["requested"]["lora_r"] is None
    assert meta["runtime"]["device"] == "cpu" and meta["runtime"]["versions"]["trl"]
    done = next(e for e in events if e.event == "done")
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((run_dir / "adapter").glob("*.bin"))
    assert done.adapter == str(run_dir / "adapter") and done.gguf == str(run_dir / "adapter.gguf")
    assert (run_dir / "adapter.gguf").read_bytes()[:4] == b"GGUF"
    assert list((run_dir / "checkpoints").glob("checkpoint-*"))
    assert (run_dir / "train.log").stat().st_size > 0

    (info,) = list_runs(filled)
    assert (info.name, info.status, info.method, info.step, info.max_steps) == ("two-steps", "done", "sft", 2, 2)
    assert info.final_loss == done.final_loss and info.eval_loss == done.eval_loss
    assert [loss for _, loss in info.losses] == [s["loss"] for s in steps]
    assert info.adapter == run_dir / "adapter" and runlock.holder_of(filled.runs_dir) is None


@pytest.mark.child
def test_cancel_keeps_a_checkpoint_and_resume_finishes(filled, tiny_model_dir):
    before = _store_state(filled)
    handle = start_run(filled, TrainConfig(epochs=2, batch_size=2, evaluate=False, **PLAIN), str(tiny_model_dir), name="stop-go")
    with pytest.raises(ChattuneError, match="run 'stop-go'"):
        start_run(filled, TrainConfig(), str(tiny_model_dir), name="second")
    assert not filled.run_dir("second").exists()

    def cancel_on_first_step(event, run):
        if event.event == "step" and event.step == 1:
            assert load_run(run.run_dir).status == "running"
            run.cancel()

    events = collect(handle, cancel_on_first_step)
    assert handle.wait() == 3
    cancelled = events[-1]
    assert cancelled.event == "cancelled" and cancelled.checkpoint
    stopped_at = cancelled.step
    assert 1 <= stopped_at < 8
    assert cancelled.checkpoint.endswith(f"checkpoint-{stopped_at}")
    info = load_run(handle.run_dir)
    assert info.status == "cancelled" and info.resumable

    again = resume_run(filled, "stop-go")
    events = collect(again)
    assert again.wait() == 0
    start = next(e for e in events if e.event == "start")
    assert start.step == stopped_at and start.resumed_from == cancelled.checkpoint
    assert [e.step for e in events if e.event == "step"] == list(range(stopped_at + 1, 9))
    assert events[-1].event == "done" and events[-1].steps == 8
    assert load_run(handle.run_dir).status == "done"
    with pytest.raises(ChattuneError, match="already finished"):
        resume_run(filled, "stop-go")
    assert _store_state(filled) == before  # training never writes the store


@pytest.mark.child
def test_a_killed_child_is_an_error_with_its_log_and_the_workspace_stays_usable(filled, tiny_model_dir):
    before = _store_state(filled)
    handle = start_run(filled, TrainConfig(epochs=2, batch_size=2, evaluate=False, **PLAIN), str(tiny_model_dir), name="killed")

    def kill_on_first_step(event, run):
        if event.event == "step":
            run.kill()

    events = collect(handle, kill_on_first_step)
    error = events[-1]
    assert error.event == "error" and "SIGKILL" in error.message
    assert error.log == str(handle.run_dir / "train.log") and os.path.isfile(error.log)
    info = load_run(handle.run_dir)
    assert info.status == "failed" and "SIGKILL" in info.message
    assert runlock.holder_of(filled.runs_dir) is None
    assert _store_state(filled) == before

    fresh = start_run(filled, TrainConfig(epochs=1, batch_size=8, evaluate=False, **PLAIN), str(tiny_model_dir), name="after")
    assert collect(fresh)[-1].event == "done"


@pytest.mark.child
def test_a_run_outlives_the_app_that_started_it_and_can_be_followed(filled, tiny_model_dir):
    # Many steps, so the run is still going when the attached reader cancels it.
    handle = start_run(filled, TrainConfig(epochs=8, batch_size=2, evaluate=False, **PLAIN), str(tiny_model_dir), name="detached")
    first = None
    for event in handle.events():
        first = first or event
        if event.event == "step":
            break
    handle.process.stdout.close()  # the app quits: nobody reads the pipe any more
    attached = attach_run(filled, "detached")
    seen = []
    for event in attached.events():
        seen.append(event)
        if event.event == "step":  # the replayed first step: cancel at once
            attached.cancel()
    assert seen[0] == first and seen[-1].event == "cancelled"  # replayed from the start
    assert attached.wait(timeout=60) == 3 and handle.wait(timeout=60) == 3
    with pytest.raises(ChattuneError, match="not training now"):
        attach_run(filled, "detached")


@pytest.mark.child
def test_a_failing_child_reports_its_error_in_one_line(filled, tiny_model_dir):
    handle = start_run(filled, TrainConfig(template="no-such-template"), str(tiny_model_dir), name="bad")
    events = collect(handle)
    assert handle.wait() == 1
    error = events[-1]
    assert error.event == "error" and "no chat template named 'no-such-template'" in error.message
    assert "\n" not in error.message and error.log.endswith("train.log")
    assert load_run(handle.run_dir).status == "failed"


def test_nothing_to_train_leaves_no_run_behind(workspace, tiny_model_dir):
    with pytest.raises(ChattuneError, match="no SFT training examples"):
        start_run(workspace, TrainConfig(), str(tiny_model_dir), name="empty")
    assert not workspace.run_dir("empty").exists() and list_runs(workspace) == []
    with pytest.raises(ChattuneError, match="invalid run name"):
        start_run(workspace, TrainConfig(), str(tiny_model_dir), name="../escape")


def test_events_end_with_an_error_when_the_child_dies_silently(tmp_path):
    """Garbage lines are skipped, and a child killed without a last word still ends the stream."""
    code = ("import json, os, signal; print(json.dumps({'event': 'step', 'step': 1}), flush=True); "
            "print('not json', flush=True); print('[1, 2]', flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    handle = RunHandle("silent", tmp_path, process)
    events = list(handle.events())
    assert [e.event for e in events] == ["step", "error"]
    assert "SIGKILL" in events[-1].message and events[-1].log == str(tmp_path / "train.log")
    assert read_events(tmp_path) == [events[-1]]  # recorded, so the run reads as failed from now on


def test_multi_gpu_launch_command_is_what_accelerate_expects(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    assert child_command(tmp_path, resume=True)[1:] == ["-m", "engine.jobs.train_and_evaluate", str(tmp_path), "--resume"]
    command = child_command(tmp_path, num_gpus=4)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(command[3:])
    assert args.multi_gpu and args.num_processes == 4 and args.num_machines == 1
    assert args.module and args.training_script == "engine.jobs.train_and_evaluate"
    assert args.training_script_args == [str(tmp_path)]


@pytest.mark.child
def test_two_processes_train_one_run_through_accelerate(filled, tiny_model_dir):
    """The real `accelerate launch --multi_gpu` path, as DDP over two CPU processes (gloo)."""
    handle = start_run(filled, TrainConfig(epochs=1, batch_size=2, num_gpus=2, evaluate=False, **PLAIN), str(tiny_model_dir), name="ddp")
    events = collect(handle)
    assert handle.wait() == 0, (handle.run_dir / "train.log").read_text()[-3000:]
    start = next(e for e in events if e.event == "start")
    assert start.world_size == 2 and start.max_steps == 2  # 8 examples / (2 per process x 2 processes)
    assert sum(e.event == "start" for e in events) == 1  # rank 0 alone speaks
    assert events[-1].event == "done" and (handle.run_dir / "adapter.gguf").is_file()


@pytest.mark.child
def test_cli_trains_and_lists_runs(filled, tiny_model_dir, capsys):
    from engine.cli import main

    assert main(["-w", str(filled.root), "train", "--model", str(tiny_model_dir), "--dry-run", "--epochs", "1"]) == 0
    plan = capsys.readouterr().out
    assert "learns all 8 of your examples (+ rewordings and replay" in plan and "1 epochs" in plan
    assert main(["-w", str(filled.root), "train", "--model", str(tiny_model_dir), "--epochs", "1",
                 "--no-augment", "--no-replay", "--freeze-lower", "0",
                 "--batch-size", "8", "--rank", "4", "--seed", "3", "--name", "cli", "--yes"]) == 0
    assert "chattune --adapter cli" in capsys.readouterr().err
    meta = json.loads((filled.run_dir("cli") / "config.json").read_text())
    assert (meta["config"]["lora_r"], meta["config"]["seed"], meta["config"]["batch_size"]) == (4, 3, 8)
    assert meta["config"]["freeze_lower"] == 0

    assert main(["-w", str(filled.root), "runs"]) == 0
    table = capsys.readouterr().out
    assert "cli" in table and "done" in table and "sft" in table
    assert main(["-w", str(filled.root), "runs", "cli", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["status"] == "done" and row["gguf"].endswith("adapter.gguf")
    assert main(["-w", str(filled.root), "runs", "nope"]) == 2
    assert "not a training run" in capsys.readouterr().err
