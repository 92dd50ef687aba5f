"""The UI never pulls in torch or llama_cpp; the engine never pulls in textual."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "llama_cpp", "transformers", "peft")


def _loaded(module: str, names: tuple[str, ...]) -> list[str]:
    code = f"import sys, {module}; print(' '.join(n for n in {names!r} if n in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("module", ["tui.app", "tui.cli"])
def test_tui_never_imports_model_libraries(module):
    assert _loaded(module, HEAVY) == []


@pytest.mark.parametrize("module", ["engine.cli", "engine.session", "engine.engines.llamacpp",
                                    "engine.engines.transformers_engine", "engine.store"])
def test_engine_never_imports_textual(module):
    assert _loaded(module, ("textual",)) == []


def test_cli_help_does_not_load_model_libraries():
    code = ("import sys; from engine.cli import build_parser; build_parser().format_help(); "
            f"print(' '.join(n for n in {HEAVY!r} if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
