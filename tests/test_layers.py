"""The layers hold (pyproject.toml [tool.importlinter]): the app reaches the engine only through
engine.api; inside the engine the front doors sit above the jobs, the jobs above train, evaluate and
export, which never import one another, and those above the neutral modules; the engine never imports
the app or textual. Checked on the source by import-linter, without importing anything."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True)


def test_import_contracts_are_kept():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("engine/export/card.py", "from engine.evaluate.scorecard import evaluate_run",
     "engine.export.card -> engine.evaluate.scorecard"),  # a part importing its sibling
    ("engine/train/recipe.py", "from engine.export.chat_merge import merged_chat_side",
     "engine.train.recipe -> engine.export.chat_merge"),
    ("engine/runfolder.py", "from engine.train.config import TrainConfig",
     "engine.runfolder -> engine.train.config"),  # a neutral module importing a part
    ("engine/evaluate/scorecard.py", "from engine.jobs.train_and_evaluate import evaluate",
     "engine.evaluate.scorecard -> engine.jobs.train_and_evaluate"),  # a part importing the jobs above it
])
def test_an_import_across_the_layers_breaks_the_contract(tmp_path, module, line, broken):
    for folder in ("engine", "tui"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / module, "a", encoding="utf-8") as source:
        source.write(f"\n{line}\n")
    done = lint(tmp_path)
    assert done.returncode != 0 and "2 kept, 1 broken" in done.stdout
    assert broken in done.stdout, done.stdout[-3000:]
