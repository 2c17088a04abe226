"""Byte counts in words: the one binary-size format every screen, check and report uses."""

from __future__ import annotations

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
