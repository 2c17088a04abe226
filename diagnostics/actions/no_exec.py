"""--no-exec / MLTOP_NO_EXEC=1: whether this process forbids reaching into containers, and in which words.

Only the setting is read here. What it refuses (every action, py-spy included, the read test, the device
checks) is decided by the action registry's rules (registry.py); the runner reads it once more as a last guard
before any docker exec or CRI exec.
"""

from __future__ import annotations

import os

NO_EXEC_ENV = "MLTOP_NO_EXEC"  # the configuration key: MLTOP_NO_EXEC=1 is --no-exec for the whole process


def no_exec_reason(no_exec: bool = False) -> str | None:
    """Why mltop may not exec into containers nor attach to their processes (--no-exec, or MLTOP_NO_EXEC=1), or
    None when it may."""
    what = "forbids docker exec and CRI exec into containers and attaching to their processes"
    if no_exec:
        return f"--no-exec {what}"
    if os.environ.get(NO_EXEC_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return f"{NO_EXEC_ENV}={os.environ[NO_EXEC_ENV]} {what}"
    return None
