"""Drawing widgets for live values: a labelled meter bar and a fixed-scale history graph.

Textual's Sparkline scales each graph between the smallest and largest value it holds (a 2 % to 3 %
wobble draws full height) and stretches a few samples across the whole width, so a history that just
started looks like a wall. These draw against a fixed ceiling (100 %, a memory limit), one column per
sample, newest on the right, and repaint only when what they show changed.
"""

from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.widget import Widget

from .format import bar, level_style

_EIGHTHS = " ▁▂▃▄▅▆▇█"


class HistoryGraph(Widget):
    """Recent samples as vertical bars, `ceiling` at the top; None samples leave a gap."""

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self._samples: tuple[float | None, ...] = ()
        self._ceiling: float = 1.0
        self._shown: tuple | None = None

    @property
    def samples(self) -> tuple[float | None, ...]:
        return self._samples

    def set_samples(self, samples: Sequence[float | None], ceiling: float | None = None) -> None:
        known = [s for s in samples if s is not None]
        if ceiling is None or ceiling <= 0:
            ceiling = max(known) if known else 1.0
        self._samples = tuple(samples)
        self._ceiling = ceiling or 1.0
        width = self.size.width or len(self._samples)
        shown = (self._samples[-width:], self._ceiling, width)
        if shown != self._shown:  # a still graph costs no repaint
            self._shown = shown
            self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, max(self.size.height, 1)
        samples = self._samples[-width:] if width else ()
        pad = width - len(samples)
        levels = height * 8
        heights: list[int | None] = [None] * pad
        for value in samples:
            if value is None:
                heights.append(None)
            else:
                level = round(min(max(value / self._ceiling, 0.0), 1.0) * levels)
                heights.append(max(level, 1) if value > 0 else 0)
        lines = []
        for row in range(height):
            floor = (height - 1 - row) * 8
            chars = []
            for h in heights:
                if h is None:
                    chars.append(" ")
                else:
                    chars.append(_EIGHTHS[min(max(h - floor, 0), 8)])
            lines.append("".join(chars))
        return Text("\n".join(lines), no_wrap=True, end="")


class Meter(Widget):
    """`label ██████░░░░ value` sized to its width; the bar turns yellow, then red, as it fills."""

    def __init__(self, label: str, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self._label = label
        self._fraction: float | None = None
        self._value = ""

    def set_value(self, fraction: float | None, value: str) -> None:
        if (fraction, value) != (self._fraction, self._value):
            self._fraction, self._value = fraction, value
            self.refresh()

    @property
    def value_text(self) -> str:
        return self._value

    def render(self) -> Text:
        width = self.size.width
        bar_width = max(width - len(self._label) - len(self._value) - 2, 0)
        out = Text(self._label + " ", no_wrap=True, end="")
        out.append_text(bar(self._fraction, bar_width, level_style(self._fraction)))
        out.append(" " + self._value)
        return out
