"""The process-wide switches that forbid acting on containers, and in which words: --no-exec / MLTOP_NO_EXEC=1
(no exec into a container, no attach to its processes) and --read-only / MLTOP_READ_ONLY=1 (no act at all:
exec, attach, signal, stop or restart; `mltop serve` sets it for its whole process, the agent never acts).

Only the settings are read here. What each refuses is decided by the action registry's rules (registry.py);
the runner reads --no-exec once more as a last guard before any docker exec or CRI exec.
"""

from __future__ import annotations

import os

NO_EXEC_ENV = "MLTOP_NO_EXEC"  # MLTOP_NO_EXEC=1 is --no-exec for the whole process
READ_ONLY_ENV = "MLTOP_READ_ONLY"  # MLTOP_READ_ONLY=1 is --read-only for the whole process


def _reason(given: bool, flag: str, env: str, what: str) -> str | None:
    if given:
        return f"{flag} {what}"
    if os.environ.get(env, "").strip().lower() in ("1", "true", "yes", "on"):
        return f"{env}={os.environ[env]} {what}"
    return None


def no_exec_reason(no_exec: bool = False) -> str | None:
    """Why mltop may not exec into containers nor attach to their processes, or None when it may."""
    return _reason(no_exec, "--no-exec", NO_EXEC_ENV,
                   "forbids docker exec and CRI exec into containers and attaching to their processes")


def read_only_reason(read_only: bool = False) -> str | None:
    """Why mltop may not act on containers at all, or None when it may."""
    return _reason(read_only, "--read-only", READ_ONLY_ENV,
                   "forbids every act on a container: no exec, no attach, no signal, no stop or restart")
