"""Where the dashboard writes a file the user asked for: the current directory, else the home directory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable


def write_here_else_home(name: str, write: Callable[[Path], Path]) -> Path:
    """`write(folder / name)` in the working directory, or in the home directory when that fails (a
    read-only working directory); the path written, or the last OSError."""
    last_error: OSError | None = None
    for folder in (Path.cwd(), Path.home()):
        try:
            return write(folder / name)
        except OSError as err:
            last_error = err
    assert last_error is not None
    raise last_error
