"""Numbers and times as the dashboard shows them: sizes, rates, percentages, text bars and local times."""

from __future__ import annotations

from rich.text import Text

from mltop.probes.units import MISSING, binary_size, local_time  # noqa: F401  (local_time: the screens' clock)

# How a severity looks on screen: glyph and style. The containers table marks rows with the same glyphs
# the diagnostics screen puts before each finding. (Labels and order: diagnostics.findings.)
SEVERITY_GLYPH = {"critical": ("✖", "bold red"), "warning": ("!", "bold yellow"), "info": ("·", "bold blue")}

HISTORY_SECONDS = 300  # what the graphs cover, live and in replay


def size(value: float | None, missing: str = MISSING) -> str:
    """Binary size in at most five characters: 512B, 8.0K, 123M, 1.5G."""
    return missing if value is None else binary_size(value, compact=True)


def rate(value: float | None, missing: str = MISSING) -> str:
    """Bytes per second, the unit implied by the column (`I/O R/W`, `NET RX/TX`)."""
    if value is None:
        return missing
    return "0" if value < 1 else size(value)


def percent(value: float | None, missing: str = MISSING) -> str:
    if value is None:
        return missing
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def used_of(used: float | None, total: float | None) -> str:
    """"1.2G/4.0G", or just the used amount when there is no limit."""
    if total is None:
        return size(used)
    return f"{size(used)}/{size(total)}"


def pair(first: str, second: str) -> str:
    return f"{first}/{second}"


BAR_FULL = "█"
BAR_PARTS = " ▏▎▍▌▋▊▉"
BAR_EMPTY = "░"


def bar(fraction: float | None, width: int, style: str = "") -> Text:
    """A horizontal bar `width` cells wide; the empty part stays visible so it reads without colour."""
    if width <= 0:
        return Text("")
    if fraction is None:
        return Text(MISSING.center(width), style="dim")
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    filled = BAR_FULL * full + (BAR_PARTS[part] if part and full < width else "")
    out = Text(filled, style=style)
    out.append(BAR_EMPTY * (width - len(filled)), style="dim")
    return out


def level_style(fraction: float | None) -> str:
    """Colour for how close a gauge is to full; words elsewhere carry the meaning without colour."""
    if fraction is None:
        return ""
    if fraction >= 0.9:
        return "bold red"
    if fraction >= 0.75:
        return "yellow"
    return "green"
