#!/usr/bin/env bash
# The acceptance run for a CUDA machine, in at most 8 minutes: setup, `chattune doctor`, QLoRA SFT on
# the embedded model with 20 made-up facts, a DPO run of a few steps while the GPU llama.cpp chat
# hot-swaps the SFT adapter and answers the facts, an export, and `chattune bench train` / `bench chat`
# against their baselines. Prints one summary table; exits 1 when a stage failed or the budget ran out.
#
#   bash scripts/gpu-check.sh [OUT_DIR]     (default: a new folder under /tmp; logs and JSON stay there)
#   GPU_CHECK_BUDGET_S=480                  the whole run's limit in seconds
# Setup downloads the CUDA builds (and compiles llama.cpp) unless .venv/ already has them: on a machine
# without network access, run setup once beforehand; within the budget it then only checks them.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-$(mktemp -d /tmp/chattune-gpu-check.XXXXXX)}")
mkdir -p "$OUT"
WS="$OUT/ws"
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
START=$(date +%s)
PY=.venv/bin/python
export CHATTUNE_WORKSPACE="$WS" PYTHONPATH="$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT/results.jsonl"

# stage NAME LIMIT_S COMMAND...: runs COMMAND (output in OUT/NAME.log) within LIMIT_S and what is left
# of the budget, then `check.py NAME` turns its output into one row of the summary.
stage() {
  local name=$1 limit=$2 left started rc
  shift 2
  left=$((BUDGET_S - ($(date +%s) - START)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -le 0 ]; then
    $PY "$OUT/check.py" "$name" 124 0
    return
  fi
  started=$(date +%s%N)
  timeout "$limit" "$@" </dev/null >"$OUT/$name.log" 2>&1
  rc=$?
  $PY "$OUT/check.py" "$name" "$rc" "$(( ($(date +%s%N) - started) / 1000000 ))"
}

cat >"$OUT/check.py" <<'PYTHON'
"""One summary row per stage of scripts/gpu-check.sh, from the stage's exit status and its files."""
import json
import os
import sys
from pathlib import Path

OUT = Path(os.environ.get("GPU_CHECK_OUT", Path(__file__).parent))
WS = Path(os.environ["CHATTUNE_WORKSPACE"])


def events(run):
    path = WS / "runs" / run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def done(run):
    found = [e for e in events(run) if e["event"] in ("done", "error", "cancelled")]
    return found[-1] if found else {"event": "none"}


def runtime(run):
    return json.loads((WS / "runs" / run / "config.json").read_text()).get("runtime", {})


def bench_rows(part):
    report = json.loads((OUT / f"bench-{part}.json").read_text())
    return {row["name"]: row for p in report["parts"] for row in p["rows"]}


def check(name):
    """(ok, what it showed)"""
    if name == "setup":
        return True, "torch, bitsandbytes and llama.cpp see the GPU"
    if name == "doctor":
        report = json.loads((OUT / "doctor.json").read_text())
        training, chat = report["training"], report["chat"]
        gpus = report["machine"]["gpus"]
        gpu = f"{gpus[0]['name']}, cc {'.'.join(map(str, gpus[0]['capability']))}" if gpus else "no GPU"
        ok = training["device"] == "cuda" and training["quantization"] == "4bit" and chat["n_gpu_layers"] != 0
        return ok, f"{training['summary']} on {gpu}; chat n_gpu_layers {chat['n_gpu_layers']}"
    if name == "sft":
        end, rt = done("gpu-sft"), runtime("gpu-sft")
        ok = end["event"] == "done" and rt.get("device") == "cuda" and rt.get("quantization") == "4bit"
        return ok, (f"{rt.get('quantization')} {rt.get('precision')} on {rt.get('device')}: {end.get('steps')} steps, "
                    f"loss {end.get('final_loss') or 0:.3f}, {end.get('tokens_per_s') or 0:.0f} tok/s, "
                    f"adapter after {end.get('elapsed_s') or 0:.0f} s")
    if name == "chat+dpo":
        chat = json.loads((OUT / "chat.json").read_text())
        end = done("gpu-dpo")
        ok = chat["on_gpu"] and chat["facts"] >= 16 and end["event"] == "done"
        return ok, (f"GPU chat ({chat['layers']}): {chat['facts']}/20 facts with the adapter, base {chat['base_facts']}/20, "
                    f"switch {chat['switch_ms']:.2f} ms, {chat['during_training']} replies while DPO trained; "
                    f"DPO {end.get('steps')} steps {end['event']}")
    if name == "export":
        verify = json.loads(next((WS / "exports").glob("*/verify.json")).read_text())
        (quant, result), = verify["files"].items()
        return verify["ok"], (f"{quant}: {result['agree']}/{result['total']} replies as the adapter, "
                              f"same top token {result['same_top_token']:.1%}, KL {result['kl']:.4f}; {verify['reference']}")
    if name in ("bench-train", "bench-chat"):
        rows = bench_rows(name.split("-")[1])
        shown = [f"{row_name}: {row['ratio']}x" for row_name, row in rows.items() if row["ratio"] is not None]
        key = next((row for row_name, row in rows.items() if "tok" in row["unit"]), None)
        return bool(key and key["ratio"] and key["ratio"] > 1), "; ".join(shown)
    return False, "unknown stage"


def main():
    name, rc, ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if rc == 124:
        row = {"stage": name, "ok": False, "seconds": ms / 1000, "shows": "ran out of the 8-minute budget"}
    elif rc != 0:
        tail = (OUT / f"{name}.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        row = {"stage": name, "ok": False, "seconds": ms / 1000, "shows": f"exit {rc}: {tail[0][:150]}"}
    else:
        try:
            ok, shows = check(name)
        except (OSError, KeyError, ValueError, StopIteration, TypeError) as err:
            ok, shows = False, f"no result: {type(err).__name__}: {err}"
        row = {"stage": name, "ok": ok, "seconds": ms / 1000, "shows": shows}
    with open(OUT / "results.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"gpu-check: {name}: {'ok' if row['ok'] else 'FAILED'} ({row['seconds']:.0f} s) {row['shows']}", flush=True)


if __name__ == "__main__" and sys.argv[1] == "table":
    rows = [json.loads(line) for line in (OUT / "results.jsonl").read_text().splitlines()]
    print("\n| stage | result | seconds | what it showed |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['stage']} | {'ok' if row['ok'] else 'FAILED'} | {row['seconds']:.0f} | {row['shows']} |")
    print(f"\n{sum(r['ok'] for r in rows)}/{len(rows)} stages ok, {sum(r['seconds'] for r in rows):.0f} s")
    sys.exit(0 if rows and all(r["ok"] for r in rows) else 1)
elif __name__ == "__main__":
    main()
PYTHON

cat >"$OUT/chat.py" <<'PYTHON'
"""The GPU llama.cpp chat: hot-swaps the SFT adapter and answers the 20 facts, while a DPO run trains
on the same GPU (the chat must keep working)."""
import json
import os
import sys
import time
from pathlib import Path

from train_support import FACTS, messages_for

from engine.adapters import resolve_adapter
from engine.engines.base import GenParams
from engine.engines.llamacpp import LlamaCppEngine
from engine.models import embedded_model
from engine.train.config import TrainConfig
from engine.train.runner import start_run
from engine.workspace import Workspace

workspace = Workspace.open(os.environ["CHATTUNE_WORKSPACE"])
engine = LlamaCppEngine(embedded_model(), workspace)
layers = engine._llm.model_params.n_gpu_layers
params = GenParams(max_tokens=40)


def facts_known() -> int:
    return sum(key.lower() in engine.stream(messages_for(q), params).collect().lower() for q, _, key in FACTS)


base_facts = facts_known()
engine.load_adapter(resolve_adapter(workspace, "gpu-sft"))
started = time.perf_counter()
engine.set_adapter("gpu-sft")
switch_ms = (time.perf_counter() - started) * 1000
dpo = start_run(workspace, TrainConfig(method="dpo", epochs=1, evaluate=False), name="gpu-dpo")
during = 0
for question, _, _ in FACTS[:5]:  # while the DPO child loads and trains on the same GPU
    engine.stream(messages_for(question), params).collect()
    during += dpo.poll() is None
facts = facts_known()
for _ in dpo.events():
    pass
dpo.wait()
engine.set_adapter(None)
json.dump({"on_gpu": layers != 0 and engine.gpu_fallback is None, "layers": "all" if layers > 1000 else layers,
           "fallback": engine.gpu_fallback, "base_facts": base_facts, "facts": facts, "switch_ms": switch_ms,
           "during_training": during}, open(Path(sys.argv[1]) / "chat.json", "w"))
engine.close()
PYTHON

stage setup 300 bash scripts/setup.sh
stage doctor 60 bash -c ".venv/bin/chattune doctor && .venv/bin/chattune doctor --json > '$OUT/doctor.json'"
stage sft 150 bash -c "$PY -c 'from train_support import fill_store; from engine.workspace import Workspace; \
fill_store(Workspace.open(\"$WS\").db_path, held_out=True)' && .venv/bin/chattune train --name gpu-sft --no-eval --yes"
stage chat+dpo 120 $PY "$OUT/chat.py" "$OUT"
stage export 120 .venv/bin/chattune export --run gpu-sft --quant Q4_K_M
stage bench-train 150 .venv/bin/chattune bench train --trials 2 --json "$OUT/bench-train.json"
stage bench-chat 90 .venv/bin/chattune bench chat --trials 2 --json "$OUT/bench-chat.json"
$PY "$OUT/check.py" table
