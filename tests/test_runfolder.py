"""The run folder's shared pieces: the one loss-curve reader, the one event writer, the one atomic
write and the one number formatter."""

import io
import json
import math
from pathlib import Path

import pytest

from engine.childproc import EventWriter
from engine.export.events import EXPORT_EVENTS
from engine.files import write_atomic
from engine.runfolder import EventLog, load_run, loss_curves, read_events
from engine.text import number, percent


def test_a_resumed_run_s_repeated_steps_replace_the_earlier_ones(tmp_path):
    log = EventLog(tmp_path, None)
    (tmp_path / "config.json").write_text(json.dumps({"config": {"method": "sft"}}))
    log.emit("start", step=0, max_steps=4)
    for step, loss in ((1, 2.0), (2, 1.5), (3, 1.2)):
        log.emit("step", step=step, loss=loss)
    log.emit("eval", step=2, epoch=1.0, eval_loss=1.4)
    log.emit("cancelled", step=3, checkpoint=None)
    log.emit("start", step=2, max_steps=4)  # resumed from the step-2 checkpoint: step 3 comes again
    for step, loss in ((3, 1.1), (4, 0.9)):
        log.emit("step", step=step, loss=loss)
    log.emit("eval", step=4, epoch=2.0, eval_loss=1.2)
    log.emit("done", final_loss=0.9)

    curves = loss_curves(read_events(tmp_path))
    assert curves.train == [(1, 2.0), (2, 1.5), (3, 1.1), (4, 0.9)]
    assert curves.eval_by_step == [(2, 1.4), (4, 1.2)] and curves.eval_by_epoch == [(1.0, 1.4), (2.0, 1.2)]
    info = load_run(tmp_path)
    assert info.status == "done" and info.losses == curves.train


def test_events_have_no_nan_keep_six_digits_and_reach_pipe_and_file(tmp_path):
    pipe = io.StringIO()
    emit = EventWriter(EXPORT_EVENTS, pipe, tmp_path / "events.jsonl")
    record = emit("done", out=tmp_path, elapsed_s=math.inf, stages={"merge": 1.234567891e-7},
                  fidelity={"Q4_K_M": {"kl": 0.123456789, "same_top_token": math.nan}})
    assert record.elapsed_s is None and record.stages == {"merge": 1.23457e-07} and record.out == str(tmp_path)
    assert record.fidelity["Q4_K_M"].kl == 0.123457 and record.fidelity["Q4_K_M"].same_top_token is None
    line = record.model_dump(mode="json", exclude_unset=True)
    assert json.loads(pipe.getvalue()) == line == json.loads((tmp_path / "events.jsonl").read_text())


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "out.json"
    write_atomic(target, "old\n")

    class Unwritable(str):  # fails while the temporary file is open, as a full disk would
        def encode(self, _encoding):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, Unwritable())
    assert target.read_text() == "old\n" and [p.name for p in Path(tmp_path).iterdir()] == ["out.json"]
    write_atomic(target, b"new\n")
    assert target.read_text() == "new\n" and oct(target.stat().st_mode & 0o777) == "0o644"


def test_one_number_format_with_a_dash_for_nothing():
    assert (number(0.12345), number(0.12345, ".4f"), number(1234.5, ".4g")) == ("0.12", "0.1235", "1234")
    assert number(None) == number("?") == number(True) == percent(None) == "–"
    assert percent(0.256) == "26%"
