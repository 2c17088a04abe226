"""--read-only / MLTOP_READ_ONLY=1: whether this process forbids every act on a container, and in which words.

Only the setting is read here, as no_exec.py reads --no-exec. What it refuses (every piece of work that reaches
into or acts on a container: exec, attach, signal, stop) is one rule of the action registry (registry.py).
`mltop serve` sets it for its whole process: the agent never acts.
"""

from __future__ import annotations

import os

READ_ONLY_ENV = "MLTOP_READ_ONLY"  # MLTOP_READ_ONLY=1 is --read-only for the whole process


def read_only_reason(read_only: bool = False) -> str | None:
    """Why mltop may not act on containers at all (--read-only, or MLTOP_READ_ONLY=1), or None when it may."""
    what = "forbids every act on a container: no exec, no attach, no signal, no stop or restart"
    if read_only:
        return f"--read-only {what}"
    if os.environ.get(READ_ONLY_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return f"{READ_ONLY_ENV}={os.environ[READ_ONLY_ENV]} {what}"
    return None
