"""Where mltop's own log goes: `--log-file PATH` (or $MLTOP_LOG_FILE), at the level $MLTOP_LOG names.

Every module logs to `logging.getLogger(__name__)` under the `mltop` logger; soft failures (a probe that
cannot read a file, an engine hiccup) are logged with their exception and the program carries on.
Without a file, headless commands print warnings to stderr; the dashboard keeps the terminal clean and
logs nowhere (its screen owns the terminal).
"""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s"


def log_level(value: str | None) -> int | None:
    """The level $MLTOP_LOG names (debug, info, warning, error), or None when unset or unknown."""
    if not value:
        return None
    level = logging.getLevelName(value.strip().upper())
    return level if isinstance(level, int) else None


def configure_logging(log_file: str | None, *, to_stderr: bool) -> logging.Handler | None:
    """Send the `mltop` logger to the file, else to stderr when `to_stderr`, else nowhere. Returns the handler.
    Raises OSError when the file cannot be opened (safe_files.UnsafeFile for a symbolic link)."""
    logger = logging.getLogger("mltop")
    level = log_level(os.environ.get("MLTOP_LOG"))
    path = log_file or os.environ.get("MLTOP_LOG_FILE") or None
    handler: logging.Handler | None
    if path:
        handler = _PrivateFileHandler(path)
    elif to_stderr:
        handler = _Stderr()
    else:
        handler = None
    for old in [h for h in logger.handlers if getattr(h, "_mltop", False)]:
        logger.removeHandler(old)
        old.close()
    logger.setLevel(level if level is not None else logging.WARNING)
    if handler is None:
        logger.addHandler(_quiet())
        logger.propagate = False
        return None
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler._mltop = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False
    return handler


class _PrivateFileHandler(logging.FileHandler):
    """A log file appended to, created 0600 and never opened through a symbolic link (probes.safe_files):
    the log may name containers, paths and errors, and as root a planted link must not aim it at a file."""

    def __init__(self, path: str) -> None:
        super().__init__(path, encoding="utf-8")

    def _open(self):
        from mltop.probes.safe_files import open_append

        return os.fdopen(open_append(self.baseFilename), "a", encoding=self.encoding, errors=self.errors)


class _Stderr(logging.StreamHandler):
    """Whatever sys.stderr is when a record is written (as logging.lastResort does), not the one at setup."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _quiet() -> logging.Handler:
    handler = logging.NullHandler()
    handler._mltop = True  # type: ignore[attr-defined]
    return handler
