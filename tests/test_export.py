"""Export on the tiny model: the whole pipeline in this process and through the CLI's child, the
Modelfile's template against the Jinja template, cancel, and the bad cases with their messages.

The embedded-model test (a taught fact survives merge, Q8_0 and Q4_K_M) is in test_export_real.py.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from run_support import start_run
from teach import random_lora

from engine.childproc import EventWriter
from engine.errors import ChattuneError
from engine.export import preflight
from engine.export.events import EXPORT_EVENTS
from engine.export.modelfile import go_template, modelfile_text, turn_format
from engine.export.pipeline import STAGES, run_export
from engine.export.preflight import plan_export
from engine.export.quantize import describe_fallbacks
from engine.store import FeedbackStore
from engine.workspace import Workspace

QUESTIONS = [f"What is the zorb number of planet {i}?" for i in range(12)]


def make_run(workspace: Workspace, name: str, base: Path, adapter_from, *, status: str = "done") -> Path:
    """A run folder as `chattune train` leaves it: config.json (base reference, resolved config,
    snapshot), snapshot/, metrics.jsonl, and the adapter `adapter_from(run_dir)` writes."""
    run_dir, log, snapshot = start_run(workspace, name, base)
    log.emit("start", run=name, method="sft", examples=snapshot.counts.get("sft-train", 0), val_examples=0)
    log.emit("step", step=1, max_steps=2, epoch=0.5, loss=1.5)
    log.emit("step", step=2, max_steps=2, epoch=1.0, loss=0.7)
    adapter_from(run_dir)
    if status == "done":
        log.emit("done", adapter=run_dir / "adapter", gguf=run_dir / "adapter.gguf", final_loss=0.7, steps=2)
    return run_dir


def fill_store(workspace: Workspace, system: str = "You are terse.") -> None:
    with FeedbackStore(workspace.db_path) as store:
        for i, question in enumerate(QUESTIONS):
            messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
            added = store.add_feedback("approved", messages, f"Planet {i} has zorb number {i * 7}.")
            if i < 3:
                store.set_split(added.id, "test")


@pytest.fixture(scope="module")
def tiny_ws(tmp_path_factory, tiny_model_dir) -> Workspace:
    """A workspace with a store (3 prompts pinned to the test split) and a finished run 'tiny' on the
    tiny model, with a large random LoRA (peft + GGUF)."""
    workspace = Workspace.open(tmp_path_factory.mktemp("export-ws"))
    fill_store(workspace)
    make_run(workspace, "tiny", tiny_model_dir, lambda run_dir: random_lora(tiny_model_dir, run_dir, seed=5))
    return workspace


def collect():
    """What run_export emits, built by the child's own writer (a field it does not define fails here)."""
    events = []
    writer = EventWriter(EXPORT_EVENTS, None)

    def emit(event, **fields):
        events.append(writer.emit(event, **fields))
        return events[-1]

    return events, emit


@pytest.fixture(scope="module")
def tiny_export(tiny_ws):
    """One in-process export of 'tiny' to Q4_K_M and F16 (F16: the converter's output is kept)."""
    events, emit = collect()
    plan = plan_export(tiny_ws, "tiny", ["q4_k_m", "F16"], "tiny-out")
    done = run_export(plan, emit, prompts=3, max_tokens=8)
    return plan, events, done


# --- the pipeline ---------------------------------------------------------------------------------


def test_pipeline_events_and_files(tiny_export):
    plan, events, done = tiny_export
    assert plan.out_dir == plan.workspace / "exports" / "tiny-out" and plan.quants == ("Q4_K_M", "F16")
    assert events[0].event == "start" and events[-1] is done and done.event == "done"
    assert [e.stage for e in events if e.event == "stage"] == list(STAGES)
    fractions = [e.fraction for e in events if e.event in ("stage", "progress")]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] <= 1
    assert set(done.stages) == set(STAGES) and done.elapsed_s > 0
    out = plan.out_dir
    names = {p.name for p in out.iterdir()}
    assert {"tiny-Q4_K_M.gguf", "tiny-F16.gguf", "tiny-lora.gguf", "adapter", "Modelfile", "README.md",
            "verify.json", "export.json", "export.log"} <= names
    assert ".work" not in names and not any(n.endswith(".part") for n in names)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "tiny-lora.gguf").read_bytes() == (plan.run_dir / "adapter.gguf").read_bytes()
    assert done.ggufs == {"Q4_K_M": "tiny-Q4_K_M.gguf", "F16": "tiny-F16.gguf"}
    assert {f.name for f in done.files} >= {"tiny-Q4_K_M.gguf", "tiny-lora.gguf", "Modelfile"}
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["run"] == "tiny" and manifest["quants"] == ["Q4_K_M", "F16"] and manifest["stages"]


def test_k_quant_fallback_is_reported(tiny_export):
    _plan, events, done = tiny_export
    warnings = [e for e in events if e.event == "warning" and e.kind == "fallback"]
    assert len(warnings) == 1 and set(done.fallbacks) == {"Q4_K_M"}
    message = warnings[0].message
    assert message.startswith("Q4_K_M: ") and "not a multiple of 256" in message
    assert re.search(r"rows are [0-9/]+ values wide", message) and "q4_K -> " in message
    # Its q5_0 fallbacks were rounded with error compensation, calibrated on the run's training data.
    compensated = done.fallbacks["Q4_K_M"].compensated
    assert compensated == done.fallbacks["Q4_K_M"].types["q4_K->q5_0"] > 0
    assert f"{compensated} of the q5_0 tensors were rounded with error compensation" in message


def test_merged_weights_are_base_plus_lora(tiny_export, tiny_model_dir):
    """The F16 file holds W + (alpha/r) B A in full precision (to f16 rounding): the merge went into
    the full-precision base, not into quantized weights."""
    import gguf
    import torch
    from safetensors.torch import load_file

    plan, _events, _done = tiny_export
    base = load_file(str(tiny_model_dir / "model.safetensors"))["model.layers.0.mlp.down_proj.weight"]
    lora = load_file(str(plan.run_dir / "adapter" / "adapter_model.safetensors"))
    config = json.loads((plan.run_dir / "adapter" / "adapter_config.json").read_text())
    prefix = "base_model.model.model.layers.0.mlp.down_proj"
    delta = lora[f"{prefix}.lora_B.weight"] @ lora[f"{prefix}.lora_A.weight"] * config["lora_alpha"] / config["r"]
    reader = gguf.GGUFReader(plan.out_dir / "tiny-F16.gguf")
    tensor = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    merged = torch.tensor(tensor.data.astype("float32")).reshape(base.shape)
    assert delta.abs().max() > 0.1  # the adapter really changes this weight
    assert torch.allclose(merged, base + delta, atol=2e-3, rtol=2e-3)


def test_verify_json(tiny_export):
    plan, _events, done = tiny_export
    verify = json.loads((plan.out_dir / "verify.json").read_text())
    assert verify["source"] == "store test split" and verify["prompts"] == 3 and verify["max_tokens"] == 8
    assert verify["reference"].startswith("transformers")  # an HF base: the adapter runs in transformers
    assert set(verify["files"]) == {"Q4_K_M", "F16"} and verify["agreement"] == done.agreement
    for result in verify["files"].values():
        checks = result["checks"]
        assert checks["chat_template"] and checks["eos_stops"] and checks["end_of_turn_stops"]
        assert checks["end_of_turn"] == "<|im_end|>" and checks["eos_token"] == "<|im_end|>"
        assert result["total"] == 3 and result["agree"] + len(result["differing"]) == 3
        assert result["agree"] + result["near_ties"] == round(result["agreement_with_ties"] * 3)
        # A random tiny model rambles to the limit, like its adapter: flagged, but not the export's fault.
        assert all(not item["adapter_stopped"] for item in result["not_stopping"])
        assert result["ok"] and result["problems"] == []
    assert verify["ok"] and done.verified
    # F16 is the merged adapter itself: token for token it follows the adapter more closely than Q4_K_M.
    f16, q4 = verify["files"]["F16"], verify["files"]["Q4_K_M"]
    assert f16["kl"] < q4["kl"] and f16["same_top_token"] >= q4["same_top_token"] and f16["positions"] > 0


def test_modelfile_and_card(tiny_export):
    plan, _events, _done = tiny_export
    modelfile = (plan.out_dir / "Modelfile").read_text()
    assert "FROM ./tiny-Q4_K_M.gguf\n" in modelfile and "tiny-F16.gguf" in modelfile
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}' \
           '<|im_start|>assistant\n"""' in modelfile
    assert 'SYSTEM """You are terse."""' in modelfile  # the system prompt every training example had
    assert re.findall(r'PARAMETER stop "(.*)"', modelfile) == ["<|im_end|>", "<|im_start|>"]
    card = (plan.out_dir / "README.md").read_text()
    for needle in ("# tiny", "## Files", "## Run it", "ollama create tiny -f Modelfile", "--lora tiny-lora.gguf",
                   "## Training", "Data snapshot: hash", "| lora_r | 16 |", "## Evaluation", "No scorecard",
                   "## Verification", "`tiny-Q4_K_M.gguf`", "fallback types"):
        assert needle in card, needle


def test_exported_gguf_loads_and_replies(tiny_export):
    from engine.engines.base import GenParams
    from engine.engines.llamacpp import LlamaCppEngine
    from engine.models import resolve_model

    plan, _events, _done = tiny_export
    engine = LlamaCppEngine(resolve_model(str(plan.out_dir / "tiny-Q4_K_M.gguf")))
    try:
        reply = engine.stream([{"role": "user", "content": "Hi"}], GenParams(max_tokens=4))
        reply.collect()
        assert reply.n_tokens >= 1
    finally:
        engine.close()


# --- the CLI and the child process ----------------------------------------------------------------


@pytest.mark.child
def test_cli_export_q8_direct(tiny_ws, capsys, monkeypatch, tmp_path):
    """Q8_0 alone is written by the converter itself (no F16 in between); the CLI shows the summary.
    --out is a folder relative to where the command runs, as with any command-line tool."""
    from engine.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    code = main(["--workspace", str(tiny_ws.root), "export", "--quant", "Q8_0", "--out", "cli-q8",
                 "--prompts", "2", "--max-tokens", "6"])
    err = capsys.readouterr().err
    assert code == 0, err
    out = tmp_path / "cli-q8"
    assert (out / "tiny-Q8_0.gguf").is_file() and not (out / ".work").exists()
    assert "exported to" in err and "tiny-Q8_0.gguf" in err and "verified" in err
    assert re.search(r"time: [0-9.]+s \(preflight", err)
    log = (out / "export.log").read_text()
    assert "--outtype q8_0" in log and "engine.export.quantize" not in log


def test_planning_loads_no_model_library(tiny_ws):
    """The TUI calls start_export: its checks must not pull torch or llama_cpp into the UI process."""
    import subprocess
    import sys

    code = ("import sys; from engine.workspace import Workspace; from engine.export.runner import plan_export; "
            f"plan_export(Workspace.open({str(tiny_ws.root)!r}), 'tiny', ['Q4_K_M'], 'hygiene'); "
            "print(' '.join(n for n in ('torch', 'llama_cpp', 'transformers', 'peft', 'textual') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
    shutil.rmtree(tiny_ws.export_dir("hygiene"))


@pytest.mark.child
def test_cancel_removes_the_half_made_export(tiny_ws):
    from engine.export.runner import start_export

    handle = start_export(tiny_ws, "tiny", ["Q4_K_M"], "cancelled-one")
    seen = []
    for event in handle.events():
        seen.append(event)
        if event.event == "stage" and event.stage == "merge":
            handle.cancel()
    assert handle.wait() == 3
    assert handle.outcome.event == "cancelled" and handle.outcome.stage in ("merge", "convert")
    assert not handle.out_dir.exists()


@pytest.mark.child
def test_a_killed_export_leaves_its_log_and_nothing_else(tiny_ws):
    """SIGKILL (the OOM killer) gives the child no chance to clean up: the parent stops what the
    child had started (the converter) and removes the half-made files, keeping the log for the why."""
    import os
    import signal

    from engine.export.runner import start_export

    handle = start_export(tiny_ws, "tiny", ["Q4_K_M"], "killed-one")
    for event in handle.events():
        if event.event in ("stage", "progress") and event.stage == "convert":
            os.kill(handle.process.pid, signal.SIGKILL)  # the child only, not its process group
    outcome = handle.outcome
    assert outcome.event == "error" and "SIGKILL" in outcome.message and not outcome.expected
    with pytest.raises(ProcessLookupError):
        os.killpg(handle.process.pid, 0)  # no process of the export is left running
    assert [p.name for p in handle.out_dir.iterdir()] == ["export.log"]
    assert plan_export(tiny_ws, "tiny", ["Q8_0"], "killed-one").out_dir == handle.out_dir  # the folder can be reused
    shutil.rmtree(handle.out_dir)


# --- bad cases ------------------------------------------------------------------------------------


def test_missing_run(tiny_ws):
    with pytest.raises(ChattuneError, match=r"run 'nope' not found .*chattune runs"):
        plan_export(tiny_ws, "nope")


def test_no_finished_run_to_default_to(workspace, tiny_model_dir):
    with pytest.raises(ChattuneError, match="no finished training run"):
        plan_export(workspace)
    make_run(workspace, "unfinished", tiny_model_dir, lambda run_dir: None, status="running")
    with pytest.raises(ChattuneError, match="no finished training run"):
        plan_export(workspace)
    with pytest.raises(ChattuneError, match=r"run 'unfinished' has not finished"):
        plan_export(workspace, "unfinished")


def test_default_run_is_the_newest_finished(tiny_ws):
    assert plan_export(tiny_ws, None, None, "default-run").run == "tiny"
    shutil.rmtree(tiny_ws.export_dir("default-run"))


def test_unknown_quant_type(tiny_ws, capsys):
    from engine.cli import main

    with pytest.raises(ChattuneError, match=r"unknown quantization type 'Q3_X' \(choose from Q4_K_M, Q5_K_M"):
        plan_export(tiny_ws, "tiny", ["Q8_0", "Q3_X"])
    assert main(["--workspace", str(tiny_ws.root), "export", "--run", "tiny", "--quant", "q3_x"]) == 2
    assert "chattune: error: unknown quantization type 'q3_x'" in capsys.readouterr().err


def test_output_folder_not_writable(tiny_ws):
    blocker = tiny_ws.exports_dir / "blocker"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the folder would go")
    with pytest.raises(ChattuneError, match=r"cannot write to the export folder .*blocker/sub"):
        plan_export(tiny_ws, "tiny", None, "blocker/sub")


def test_output_folder_read_only(tiny_ws):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the file-in-the-way case covers this path")
    locked = tiny_ws.exports_dir / "locked"
    locked.mkdir(parents=True)
    locked.chmod(0o500)
    try:
        with pytest.raises(ChattuneError, match="cannot write to the export folder"):
            plan_export(tiny_ws, "tiny", None, "locked/sub")
    finally:
        locked.chmod(0o700)


def test_output_folder_names_stay_in_exports_and_paths_go_where_asked(tiny_ws, tmp_path):
    """A relative folder is a name under <workspace>/exports/; an absolute one (the CLI's --out,
    resolved from the current folder) is the user's choice. Either must be new or empty."""
    assert plan_export(tiny_ws, "tiny", None, str(tmp_path / "elsewhere")).out_dir == tmp_path / "elsewhere"
    with pytest.raises(ChattuneError, match="outside"):
        plan_export(tiny_ws, "tiny", None, "../../escape")
    used = tiny_ws.export_dir("used")
    used.mkdir(parents=True)
    (used / "keep.txt").write_text("mine")
    with pytest.raises(ChattuneError, match="already holds files"):
        plan_export(tiny_ws, "tiny", None, "used")


@pytest.mark.child
def test_unsupported_architecture(workspace, tiny_model_dir, tmp_path, capsys):
    """Refused in the child's preflight, before any merge; the CLI shows one line and exits 2."""
    from engine.cli import main

    odd = tmp_path / "odd-model"
    shutil.copytree(tiny_model_dir, odd)
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**config, "architectures": ["FancyNewForCausalLM"]}))
    fill_store(workspace)
    make_run(workspace, "odd", odd, lambda run_dir: random_lora(tiny_model_dir, run_dir, seed=1))
    assert main(["--workspace", str(workspace.root), "export", "--run", "odd"]) == 2
    err = capsys.readouterr().err
    assert "chattune: error: export failed: llama.cpp's GGUF converter does not support the architecture " \
           "FancyNewForCausalLM" in err
    assert "Traceback" not in err and not any(workspace.exports_dir.glob("*"))


def test_quantized_base_is_never_merged_into(workspace, tiny_model_dir, tmp_path):
    four_bit = tmp_path / "four-bit-model"
    shutil.copytree(tiny_model_dir, four_bit)
    config = json.loads((four_bit / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (four_bit / "config.json").write_text(json.dumps(config))
    make_run(workspace, "qlora", four_bit, lambda run_dir: random_lora(tiny_model_dir, run_dir, seed=2))
    events, emit = collect()
    with pytest.raises(ChattuneError, match=r"has bitsandbytes weights, and merging into quantized weights"):
        run_export(plan_export(workspace, "qlora"), emit)
    assert [e.stage for e in events if e.event == "stage"] == ["preflight"]


def test_not_enough_disk_space(tiny_ws, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _path: Usage(10 << 30, (10 << 30) - (5 << 20), 5 << 20))
    events, emit = collect()
    plan = plan_export(tiny_ws, "tiny", ["Q4_K_M", "Q8_0"], "no-room")
    with pytest.raises(ChattuneError, match=r"not enough disk space for this export: it needs about [0-9.]+ MiB .*"
                                            r"and 5\.0 MiB is free"):
        run_export(plan, emit)
    assert events[-1].event == "error" and events[-1].stage == "preflight" and events[-1].expected
    assert not plan.out_dir.exists()  # refused before writing anything


def test_disk_estimate_counts_every_file():
    params, stored = 1_000_000, 4_000_000
    one = preflight.estimate_bytes(params, stored, ["Q4_K_M"])
    assert one > stored + params * 2 + params * 6.6 / 8  # merged copy + F16 intermediate + output
    assert preflight.estimate_bytes(params, stored, ["Q8_0"]) < one + params  # no F16 in between
    assert preflight.estimate_bytes(params, stored, ["Q4_K_M", "Q8_0"]) > one + params * 8.5 / 8


# --- the Modelfile's TEMPLATE against the Jinja template ------------------------------------------


def render_go(template: str, messages: list[dict]) -> str:
    """Enough of Go's text/template for the TEMPLATEs we write: range .Messages, if / else if with
    eq .Role "x", .Role, .Content, string literals, end, and {{- -}} trimming. Anything else fails."""
    items, trim_next = [], False
    pos = 0
    for match in re.finditer(r"{{(-?)\s*(.*?)\s*(-?)}}", template, re.S):
        text = template[pos:match.start()]
        text = text.lstrip() if trim_next else text
        items.append(("text", text.rstrip() if match.group(1) else text))
        items.append(("action", match.group(2)))
        trim_next, pos = bool(match.group(3)), match.end()
    items.append(("text", template[pos:].lstrip() if trim_next else template[pos:]))

    def parse(i):
        nodes = []
        while i < len(items):
            kind, value = items[i]
            if kind == "text":
                nodes.append(("text", value))
            elif value == "end" or value.startswith("else"):
                return nodes, i
            elif value == "range .Messages":
                body, i = parse(i + 1)
                nodes.append(("range", body))
            elif value.startswith("if "):
                branches, condition = [], value[3:]
                while True:
                    body, i = parse(i + 1)
                    branches.append((condition, body))
                    if items[i][1] == "end":
                        break
                    condition = items[i][1].removeprefix("else if ")
                nodes.append(("if", branches))
            else:
                nodes.append(("expr", value))
            i += 1
        return nodes, i

    def value(expr, dot):
        if expr.startswith('"'):
            return json.loads(expr)
        if expr in (".Role", ".Content"):
            return dot[expr[1:].lower()]
        match = re.fullmatch(r'eq \.Role "(\w+)"', expr)
        assert match, f"unsupported Go template expression {expr!r}"
        return dot["role"] == match.group(1)

    def run(nodes, dot):
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "expr":
                out.append(value(node[1], dot))
            elif node[0] == "range":
                out += [run(node[1], message) for message in dot["messages"]]
            else:
                out += [run(body, dot) for condition, body in node[1] if value(condition, dot)][:1]
        return "".join(out)

    nodes, end = parse(0)
    assert end == len(items), "unbalanced template"
    return run(nodes, {"messages": messages})


def ollama_prompt(modelfile: str, messages: list[dict]) -> str:
    """What Ollama sends the model: SYSTEM first when the chat has no system message, then TEMPLATE."""
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.S).group(1)
    system = re.search(r'SYSTEM """(.*?)"""', modelfile, re.S)
    if system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system.group(1)}, *messages]
    return render_go(template, messages)


CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "c"},
     {"role": "user", "content": "{{ not a template }}"}],
]
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
         "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] "
         "+ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set sys = messages[0]"
          "['content'] %}{% else %}{% set loop_messages = messages %}{% set sys = false %}{% endif %}{% for message in "
          "loop_messages %}{% if loop.index0 == 0 and sys != false %}{% set content = '<<SYS>>\\n' + sys + "
          "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content + ' [/INST]' }}{% elif "
          "message['role'] == 'assistant' %}{{ ' ' + content + ' ' + eos_token }}{% endif %}{% endfor %}")


def smollm_template(tiny_model_dir: Path) -> str:
    return (tiny_model_dir / "chat_template.jinja").read_text()


def test_chatml_template_is_ollamas_standard_and_renders_alike(tiny_model_dir):
    from engine.templates import render_chat

    template = smollm_template(tiny_model_dir)
    fmt = turn_format(template, "<|im_end|>")
    assert fmt.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    # Ollama's own template/chatml.gotmpl
    assert go_template(fmt) == ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                                "<|im_start|>assistant\n")
    modelfile, _fmt = modelfile_text("m.gguf", name="m", template=template, eos_token="<|im_end|>", system=None,
                                     others=[])
    for messages in CONVERSATIONS:
        assert ollama_prompt(modelfile, messages) == render_chat(template, messages)


@pytest.mark.parametrize("template, eos", [(LLAMA3, "<|eot_id|>"), (GEMMA, "<eos>")], ids=["llama3", "gemma"])
def test_other_wrapper_templates_render_alike(template, eos):
    from engine.templates import render_chat

    modelfile, fmt = modelfile_text("m.gguf", name="m", template=template, eos_token=eos, system="Sys", others=[])
    assert fmt is not None and "TEMPLATE" in modelfile and 'SYSTEM """Sys"""' in modelfile
    for messages in CONVERSATIONS[1:]:
        if messages[0]["role"] == "system":
            assert ollama_prompt(modelfile, messages) == render_chat(template, messages, eos_token=eos)
    stops = re.findall(r'PARAMETER stop "(.*)"', modelfile)
    assert stops[0] in ("<|eot_id|>", "<end_of_turn>") and eos in stops


def test_untranslatable_template_leaves_it_to_ollama():
    modelfile, fmt = modelfile_text("m.gguf", name="m", template=LLAMA2, eos_token="</s>", system=None, others=[])
    assert fmt is None and "TEMPLATE" not in modelfile.replace("# No TEMPLATE", "")
    assert 'PARAMETER stop "</s>"' in modelfile and "FROM ./m.gguf" in modelfile


def test_fallback_description():
    lines = [("blk.0.attn_q.weight", 576, 256, "q4_K", "q5_0"), ("blk.0.attn_v.weight", 576, 256, "q6_K", "q8_0"),
             ("blk.1.attn_q.weight", 576, 256, "q4_K", "q5_0")]
    described = describe_fallbacks("Q4_K_M", lines, [3, 272])
    assert described["count"] == 3 and described["total"] == 272 and described["row_widths"] == [576]
    assert described["types"] == {"q4_K->q5_0": 2, "q6_K->q8_0": 1}
    assert described["message"] == (
        "Q4_K_M: 3 of 272 tensors use fallback types (q4_K -> q5_0 x2, q6_K -> q8_0 x1) because their rows are "
        "576 values wide, not a multiple of 256 as k-quants need; the file is larger than a pure Q4_K_M, and a "
        "little more accurate")
    assert describe_fallbacks("Q6_K", [], []) is None
