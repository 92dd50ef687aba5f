"""`chattune bench learn` on the tiny model: both recipes train through the real runner, and the
report is well-formed JSON. A random tiny model learns nothing, so no figure is asserted."""

from __future__ import annotations

import json

import pytest
from test_bench import check_stats

from engine.cli import main


@pytest.mark.child
def test_bench_learn_runs_both_recipes_and_writes_json(tiny_gguf, workspace, tmp_path, capsys):
    out = tmp_path / "learn.json"
    code = main(["--workspace", str(workspace.root), "bench", "learn", "--model", str(tiny_gguf), "--facts", "2",
                 "--general", "3", "--json", str(out)])
    stdout = capsys.readouterr().out
    data = json.loads(out.read_text())
    (part,) = data["parts"]
    assert code == 0 and part["status"] == "ok", part["reason"]
    assert data["budget"]["learn_facts"] == 2 and data["budget"]["learn_general"] == 3
    names = [row["name"] for row in part["rows"]]
    base_right = part["details"]["base"]["base_general_right"]
    assert names == ["taught recall (of 2)", "reworded recall (of 2, never trained on)",
                     f"general answers still right (base right on {base_right})",
                     f"general answers fixed (base wrong on {3 - base_right})",
                     "general answers kept (same as base, of 3)",
                     f"floor: the base in another engine, still right (of {base_right})",
                     "floor: the base in another engine, kept (of 3)", "time to adapter",
                     "evaluation after training vs the training"]  # the default run is evaluated, as a user's is
    for row in part["rows"]:
        check_stats(row["ours"])
        check_stats(row["baseline"])
    for recipe in ("new", "plain"):
        details = part["details"][recipe]
        assert 0 <= details["taught"] <= 2 and 0 <= details["kept"] <= 3 and details["adapter_s"] > 0
        assert details["general_right_kept"] + details["general_fixed"] == details["general_right"]
        assert len(details["replies"]["taught"]) == len(details["replies"]["reworded"]) == 2
    # The noise floor: the base's own weights answered by transformers, scored as an adapter would be.
    floor = part["details"]["floor"]
    assert floor["engine"] == "transformers, fp32" and 0 <= floor["kept"] <= 3
    assert floor["base_general_right"] == base_right and len(floor["changed"]) == 3 - floor["kept"]
    # The new recipe trains on more rows than the plain one: rewordings and replay.
    assert part["details"]["new"]["rows"] > part["details"]["plain"]["rows"] == 2
    assert "taught recall" in stdout and "reworded recall" in stdout
    # The bench trains in a scratch folder: the user's workspace gets no run.
    assert not workspace.runs_dir.exists() or not list(workspace.runs_dir.iterdir())
