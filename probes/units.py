"""Figures in words, one format each for every screen, check, command and report: byte counts, times, and the
mark for a value that is not known."""

from __future__ import annotations

import time
from datetime import datetime, timezone

# A value the probes could not give (or not yet: rates need two sweeps). An en dash: reports also write an em
# dash between a value and where it was read ("value — source"), and a missing value must not read as that.
MISSING = "–"

_LONG = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def binary_size(value: float, *, compact: bool = False) -> str:
    """`1.5 GiB`, or with `compact` at most five characters for a table cell: `512B`, `8.0K`, `123M`, `1.5G`."""
    amount = float(value)
    for unit in _LONG:
        if abs(amount) < 1024 or unit == _LONG[-1]:
            if compact:
                short = unit[0]
                if unit == "B":
                    return f"{amount:.0f}B"
                return f"{amount:.1f}{short}" if abs(amount) < 10 else f"{amount:.0f}{short}"
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def local_time(t: float, with_date: bool = True) -> str:
    """Unix seconds as the local wall-clock time a person reads: `2026-11-29 03:12:05`, or `03:12:05`."""
    return time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S", time.localtime(t))


def iso_utc(t: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC to the second (`2026-11-29T03:12:05+00:00`), for documents; None stays None."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")
