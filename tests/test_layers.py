"""The layers hold (pyproject.toml [tool.importlinter]): the app reaches the engine only through
engine.api, training sits above export above evaluation with no way back, and the engine never
imports the app or textual. Checked on the source by import-linter, without importing anything."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout
