"""Drawing widgets for live values: a labelled meter bar and a fixed-scale history graph with its caption.

Textual's Sparkline scales each graph between the smallest and largest value it holds (a 2 % to 3 %
wobble draws full height) and stretches a few samples across the whole width, so a history that just
started looks like a wall. These draw against a fixed ceiling (100 %, a memory limit), one column per
sample, newest on the right, and repaint only when what they show changed. Like nvitop's, every graph
says what it covers: its scale (the value at the top) and its time span (the width times the interval).
"""

from __future__ import annotations

from typing import Callable, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget

from ..format import bar, level_style

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

    @property
    def ceiling(self) -> float:
        """The value the top of the graph stands for."""
        return self._ceiling

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


def span_text(seconds: float) -> str:
    """A time span the way a graph's caption says it: 45s, 2m, 2m30s, 1h5m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60}m" if rest // 60 else f"{hours}h"


MIN_LABEL = 6  # a caption's label shows at least this much of itself, or not at all


class GraphCaption(Widget):
    """One line over a graph: what it shows on the left (cut with … when narrow), its scale and time span on
    the right (`0–100% · last 2m`), which stay whole. Never wraps, so two captions side by side never run
    into each other."""

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self._label = Text("")
        self._scale: str | None = None
        self._interval_s: float | None = None
        self._capacity: int | None = None
        self._shown: tuple | None = None

    def set_caption(self, label: Text, scale: str | None, interval_s: float | None, capacity: int | None) -> None:
        shown = (label.plain, tuple(label.spans), scale, interval_s, capacity)
        if shown != self._shown:
            self._shown = shown
            self._label, self._scale, self._interval_s, self._capacity = label, scale, interval_s, capacity
            self.refresh()

    def span_s(self, width: int) -> float | None:
        """The time the graph's width covers: one column a sample, at most `capacity` samples kept."""
        if not self._interval_s or width <= 0:
            return None
        return min(width, self._capacity or width) * self._interval_s

    def axis_text(self, width: int, short: bool = False) -> str:
        parts = []
        if self._scale:
            parts.append(f"0–{self._scale}")
        span = self.span_s(width)
        if span is not None:
            parts.append(span_text(span) if short else f"last {span_text(span)}")
        return " · ".join(parts)

    def render(self) -> Text:
        width = self.size.width
        label = self._label.copy()
        label.no_wrap, label.end = True, ""
        axis = self.axis_text(width)
        if len(axis) + 1 + min(label.cell_len, MIN_LABEL) > width:  # narrow: the axis first, shorter
            axis = self.axis_text(width, short=True)
        room = width - len(axis) - (1 if axis else 0)
        if room < min(label.cell_len, MIN_LABEL):
            label = Text("", end="")  # a label cut to a letter or two says nothing
        elif label.cell_len > room:
            label.truncate(room, overflow="ellipsis")
        out = Text(no_wrap=True, end="")
        out.append_text(label)
        out.append(" " * max(width - label.cell_len - len(axis), 0))
        out.append(axis[:width], style="dim")
        return out


class LabelledGraph(Vertical):
    """A history graph under its caption (the caption can be hidden by the stylesheet where room is short)."""

    def compose(self) -> ComposeResult:
        yield GraphCaption(classes="graph-caption")
        yield HistoryGraph(classes="graph")

    def show(self, label: Text, samples: Sequence[float | None], ceiling: float | None,
             scale: Callable[[float], str], interval_s: float | None = None, capacity: int | None = None) -> None:
        """`ceiling`: the value at the top (None: the largest sample); `scale` writes it (`100%`, `80G`).
        `interval_s` and `capacity` (samples kept) give the time span."""
        if not self.children:  # mounted inside a card composed a moment ago: show it once composed itself
            self.call_after_refresh(self.show, label, samples, ceiling, scale, interval_s, capacity)
            return
        graph = self.query_one(HistoryGraph)
        graph.set_samples(samples, ceiling)
        known = bool(ceiling) or any(s is not None for s in samples)  # else there is no scale to speak of
        self.query_one(GraphCaption).set_caption(label, scale(graph.ceiling) if known else None, interval_s,
                                                 capacity)

    @property
    def caption_text(self) -> str:
        return str(self.query_one(GraphCaption).render())
