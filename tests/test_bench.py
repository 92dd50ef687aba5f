"""`chattune bench`: it runs and writes well-formed results. Timings are never asserted: they
depend on the machine and its load."""

from __future__ import annotations

import json

import pytest

from engine.bench.common import Budget, Row, paired, summarize
from engine.cli import main

PART_NAMES = {"chat": ["chat-llamacpp", "chat-transformers"], "swap": ["swap-llamacpp", "swap-transformers"],
              "train": ["train"], "export": ["export"]}
STATS_KEYS = {"median": float, "p5": float, "p95": float, "min": float, "max": float, "n": int, "samples": list}


def check_stats(stats) -> None:
    if stats is None:
        return
    assert set(stats) == set(STATS_KEYS)
    for key, kind in STATS_KEYS.items():
        assert isinstance(stats[key], (int, float) if kind is float else kind), key
    assert stats["n"] == len(stats["samples"]) >= 1
    assert stats["min"] <= stats["p5"] <= stats["median"] <= stats["p95"] <= stats["max"]


def check_report(data: dict, parts: list[str]) -> None:
    """The JSON schema chattune-bench/1, checked field by field."""
    assert data["schema"] == "chattune-bench/1"
    assert isinstance(data["command"], str) and data["command"].startswith("chattune bench")
    assert isinstance(data["wall_s"], (int, float)) and data["wall_s"] > 0
    assert {"name", "path", "kind", "source"} <= set(data["model"])
    assert {"trials", "fast_trials", "slow_trials", "chat_tokens", "hf_chat_tokens", "train_epochs", "train_examples"} <= set(
        data["budget"])
    machine = data["machine"]
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert isinstance(machine["cores"], int) and isinstance(machine["usable_cores"], int)
    assert "gpu" in machine and isinstance(machine["cpu_flags"], list)
    assert machine["libraries"]["torch"] and machine["libraries"]["llama-cpp-python"]
    assert [p["part"] for p in data["parts"]] == [name for part in parts for name in PART_NAMES[part]]
    for part in data["parts"]:
        assert part["status"] in ("ok", "skipped", "failed")
        assert isinstance(part["reason"], str) and isinstance(part["notes"], list)
        assert isinstance(part["wall_s"], (int, float)) and isinstance(part["details"], dict)
        if part["status"] != "ok":
            assert part["reason"] and not part["rows"]
            continue
        assert part["ours"] and part["rows"]
        for row in part["rows"]:
            assert {"name", "unit", "better", "ours", "baseline", "ratio", "target", "met", "note"} == set(row)
            assert row["better"] in ("higher", "lower", "")
            check_stats(row["ours"])
            check_stats(row["baseline"])
            if row["ours"] and row["baseline"] and row["better"] and row["ours"]["median"] > 0:
                assert isinstance(row["ratio"], float) and row["ratio"] > 0, row["name"]
            if row["target"] is not None and row["ratio"] is not None:
                assert row["met"] == (row["ratio"] >= row["target"])


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the statistics (no model) ------------------------------------------------------------------


def test_summary_has_median_and_nearest_rank_percentiles():
    stats = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats["median"], stats["p5"], stats["p95"], stats["min"], stats["max"], stats["n"]) == (3.0, 1.0, 5.0,
                                                                                                     1.0, 5.0, 5)
    assert stats["samples"] == [5.0, 1.0, 3.0, 2.0, 4.0]  # in the order measured
    assert summarize([]) is None


def test_ratio_says_how_many_times_better_ours_is():
    faster = Row("speed", "tok/s", summarize([50.0]), summarize([40.0]), better="higher", target=0.95)
    quicker = Row("latency", "ms", summarize([1.0]), summarize([100.0]), better="lower")
    assert faster.ratio == pytest.approx(1.25) and faster.to_dict()["met"] is True
    assert quicker.ratio == pytest.approx(100.0) and quicker.to_dict()["met"] is None
    assert Row("loss", "loss", summarize([1.0]), summarize([1.1]), better="").ratio is None
    assert Row("alone", "s", summarize([1.0])).ratio is None


def test_paired_trials_warm_up_then_alternate_who_goes_first():
    calls = []
    ours, base = paired(lambda i: calls.append(("ours", i)) or {"i": i},
                        lambda i: calls.append(("base", i)) or {"i": i}, trials=3)
    assert calls == [("ours", -1), ("base", -1), ("ours", 0), ("base", 0), ("base", 1), ("ours", 1), ("ours", 2),
                     ("base", 2)]
    assert [r["i"] for r in ours] == [r["i"] for r in base] == [0, 1, 2]


def test_chat_settings_take_turns_within_each_trial_and_every_call_gets_the_next_prompt():
    from engine.bench.chat import interleaved

    calls, now = [], {}
    runs = interleaved(["idle", "busy"], lambda s: now.update(s=s),
                       lambda n: calls.append(("ours", now["s"], n)) or {"n": n},
                       lambda n: calls.append(("base", now["s"], n)) or {"n": n}, trials=2)
    assert calls == [("ours", "idle", 0), ("base", "idle", 0), ("ours", "busy", 1), ("base", "busy", 1),  # warm-up
                     ("ours", "idle", 2), ("base", "idle", 2), ("ours", "busy", 3), ("base", "busy", 3),
                     ("base", "busy", 4), ("ours", "busy", 4), ("base", "idle", 5), ("ours", "idle", 5)]
    assert {s: ([r["n"] for r in o], [r["n"] for r in b]) for s, (o, b) in runs.items()} == \
        {"idle": ([2, 5], [2, 5]), "busy": ([3, 4], [3, 4])}


def test_budget_keeps_fast_and_slow_trials_in_proportion():
    assert Budget(trials=1).fast_trials == 30 and Budget(trials=1).slow_trials == 1
    assert Budget(trials=10).fast_trials == 60 and Budget(trials=10).slow_trials == 3
    assert Budget().trials % 3 == 0  # the chat prompts come up equally often


# --- on the tiny model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_workspace(tmp_path_factory):
    """Shared by this module's tests: it caches the tiny GGUF's full-precision copy once."""
    from engine.workspace import Workspace

    return Workspace.open(tmp_path_factory.mktemp("bench-ws"))


def test_bench_chat_command_prints_the_table_and_writes_json(tiny_gguf, bench_workspace, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, stdout, stderr = run_cli(["--workspace", str(bench_workspace.root), "bench", "chat", "--model",
                                    str(tiny_gguf), "--json", str(out), "--trials", "2", "--tokens", "8"], capsys)
    data = json.loads(out.read_text())
    assert code == 0, [(p["part"], p["reason"]) for p in data["parts"] if p["status"] != "ok"]
    check_report(data, ["chat"])
    assert all(part["status"] == "ok" for part in data["parts"])
    assert data["command"] == f"chattune bench chat --model {tiny_gguf} --trials 2 --tokens 8"
    assert data["budget"]["trials"] == 2 and data["budget"]["chat_tokens"] == 8
    for name in ("ratio", "time to first token", "decode speed", "machine:", "libraries:", str(out)):
        assert name in stdout
    assert "Traceback" not in stderr


@pytest.mark.child
def test_bench_all_parts_on_the_tiny_model(tiny_gguf, bench_workspace):
    from engine.bench.suite import run_bench
    from engine.models import resolve_model

    budget = Budget(trials=1, chat_tokens=8, train_epochs=1, train_examples=8)
    report = run_bench(["chat", "swap", "train", "export"], bench_workspace, resolve_model(str(tiny_gguf)), budget,
                       "chattune bench all", progress=lambda _m: None)
    data = json.loads(json.dumps(report.to_dict()))  # what --json writes
    assert all(part["status"] == "ok" for part in data["parts"]), [(p["part"], p["reason"]) for p in data["parts"]]
    check_report(data, ["chat", "swap", "train", "export"])
    train = next(p for p in data["parts"] if p["part"] == "train")
    assert train["details"]["ours"]["tokens"] == train["details"]["baseline"]["tokens"]  # counted alike
    assert train["details"]["ours"]["steps"] == train["details"]["baseline"]["steps"] == 2
    assert train["details"]["baseline"]["positions"] >= train["details"]["baseline"]["tokens"]  # it pads
    # Against the recipe before (fp32, every layer), on the same examples; and, on a CPU with bf16, against fp32.
    before = train["details"]["before"]
    assert before["precision"] == "fp32" and before["tokens"] == train["details"]["ours"]["tokens"]
    assert not before["head_on_answers_only"] and train["details"]["ours"]["head_on_answers_only"]
    assert any(row["name"].endswith("vs before (fp32, every layer, head everywhere)") and row["target"] == 1.4 for row in train["rows"])
    if train["details"]["ours"]["precision"] != "fp32":
        assert train["details"]["ours_fp32"]["precision"] == "fp32"
    export = next(p for p in data["parts"] if p["part"] == "export")
    assert {"merge", "convert", "quantize", "verify"} <= set(export["details"]["stages_s"])
    assert any(row["name"].startswith("size: ") and row["unit"] == "MB" for row in export["rows"])
    # The bench works in a scratch folder: the user's workspace gets no run and no export.
    assert not bench_workspace.runs_dir.exists() and not bench_workspace.exports_dir.exists()


@pytest.mark.child
def test_bench_train_takes_its_ratios_from_interleaved_runs(tiny_model_dir, bench_workspace):
    from engine.bench.suite import run_bench
    from engine.models import resolve_model

    # bf16 runs on any CPU (without AMX or AVX512-BF16 slowly); the default picks it only where it is fast.
    budget = Budget(trials=2, train_epochs=1, train_examples=12, precision="bf16")  # 3 steps: a rate after step 1
    report = run_bench(["train"], bench_workspace, resolve_model(str(tiny_model_dir)), budget, "chattune bench train",
                       progress=lambda _m: None)
    (train,) = json.loads(json.dumps(report.to_dict()))["parts"]
    assert train["status"] == "ok", train["reason"]
    runs = train["details"]["runs"]
    assert [len(runs[name]) for name in ("ours", "before", "fp32")] == [2, 2, 2]
    assert all(rate > 0 for found in runs.values() for rate in found)
    rows = {row["name"]: row for row in train["rows"]}
    before = rows["tokens/s: the default recipe vs before (fp32, every layer, head everywhere)"]
    assert (before["ours"]["n"], before["baseline"]["n"], before["target"]) == (2, 2, 1.4)
    assert before["baseline"]["median"] == pytest.approx(sum(runs["before"]) / 2, rel=1e-4)  # the median of two
    fp32 = rows["tokens/s: bf16 (default) vs fp32, same layers"]
    assert fp32["baseline"]["median"] == pytest.approx(sum(runs["fp32"]) / 2, rel=1e-4)


def test_an_hf_folder_skips_the_llama_cpp_parts(tiny_model_dir, bench_workspace, tmp_path, capsys):
    out = tmp_path / "chat.json"
    code, stdout, _ = run_cli(["--workspace", str(bench_workspace.root), "bench", "chat", "--model", str(tiny_model_dir),
                               "--json", str(out), "--trials", "1", "--tokens", "4"], capsys)
    data = json.loads(out.read_text())
    assert code == 0
    check_report(data, ["chat"])
    assert [p["status"] for p in data["parts"]] == ["skipped", "ok"]
    assert "GGUF" in data["parts"][0]["reason"] and "skipped" in stdout


def test_an_unwritable_json_path_fails_before_measuring(workspace, tmp_path, capsys):
    code, _, stderr = run_cli(["--workspace", str(workspace.root), "bench", "chat",
                               "--json", str(tmp_path / "missing" / "bench.json")], capsys)
    assert code == 2
    assert stderr.startswith("chattune: error: cannot write --json") and "Traceback" not in stderr


# --- the embedded model -------------------------------------------------------------------------


@pytest.mark.slow
def test_chat_and_swap_on_the_embedded_model(embedded_spec, shared_workspace, embedded_base):
    from engine.bench.suite import run_bench

    budget = Budget(trials=1, chat_tokens=8, hf_chat_tokens=4)
    report = run_bench(["chat", "swap"], shared_workspace, embedded_spec, budget, "chattune bench chat",
                       progress=lambda _m: None)
    data = report.to_dict()
    check_report(json.loads(json.dumps(data)), ["chat", "swap"])
    assert all(part["status"] == "ok" for part in data["parts"]), [p["reason"] for p in data["parts"]]
    chat = data["parts"][0]
    assert "identical to the baseline's in 1 of 1" in " ".join(chat["notes"])  # same greedy replies as raw Llama
