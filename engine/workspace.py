"""The workspace: one folder that holds everything the user creates.

Names of things it holds (run names, export names) are checked here so they never escape it.
Paths typed on the command line are not names: they are the user's, relative to the current folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import WorkspaceError

ENV_VAR = "CHATTUNE_WORKSPACE"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def check_name(name: str, what: str = "name") -> str:
    """A user-given name becomes one path component: letters, digits, '.', '_', '-'."""
    if not _NAME.fullmatch(name or "") or ".." in name:
        raise WorkspaceError(
            f"invalid {what} {name!r}",
            "use letters, digits, '.', '_' or '-' (at most 80, no '..', no '/')",
        )
    return name


def workspace_root(root: str | os.PathLike | None = None) -> Path:
    """`root`, else $CHATTUNE_WORKSPACE, else ./models, as an absolute path (not created)."""
    return Path(root or os.environ.get(ENV_VAR) or "models").expanduser().resolve()


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike | None = None) -> Workspace:
        """`root`, else $CHATTUNE_WORKSPACE, else ./models; created if missing."""
        chosen = workspace_root(root)
        try:
            chosen.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise WorkspaceError(
                f"cannot create workspace {chosen}: {err.strerror}",
                f"pass --workspace DIR or set {ENV_VAR} to a writable folder",
            ) from err
        if not os.access(chosen, os.W_OK):
            raise WorkspaceError(
                f"workspace {chosen} is not writable",
                f"pass --workspace DIR or set {ENV_VAR} to a writable folder",
            )
        return cls(chosen)

    @property
    def db_path(self) -> Path:
        return self.root / "feedback.db"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def inside(self, path: str | os.PathLike, base: Path | None = None) -> Path:
        """Resolve a user-given path against `base` (default: the root) and refuse one outside it."""
        base = (base or self.root).resolve()
        resolved = (base / Path(path).expanduser()).resolve()
        if not resolved.is_relative_to(base):
            raise WorkspaceError(
                f"{path} is outside {base}",
                "name a folder inside the workspace (or choose another workspace with --workspace)",
            )
        return resolved

    def run_dir(self, name: str) -> Path:
        return self.runs_dir / check_name(name, "run name")

    def export_dir(self, name: str) -> Path:
        return self.exports_dir / check_name(name, "export name")
