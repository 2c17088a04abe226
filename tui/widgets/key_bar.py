"""KeyBar: the bottom line of key hints, as one widget.

Textual's Footer makes a widget for every key and re-creates them all whenever the bindings change (focus
moves, a screen opens). Each one is styled on its own: at start-up that was 80-100 ms of the UI thread's CPU
on the benchmark VM, a fifth of the time to the first frame (issue 11). This draws the same line, the keys the
focused widget and its screen offer, from one render, and redraws only when that line changes.

It reads like Footer: ` key description ` pairs on the left, disabled ones dimmed, the command palette's key
on the right behind a thin rule; a click on a key presses it.
"""

from __future__ import annotations

from typing import NamedTuple

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events
from textual.widget import Widget


_DIM = Style(dim=True)


class KeyHint(NamedTuple):
    key: str  # what pressing it sends (Binding.key)
    display: str  # how it is shown (⏎, ^p, space)
    description: str
    enabled: bool


class KeyBar(Widget, can_focus=False):
    """One line of key hints, docked at the bottom of its screen."""

    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"key-bar--key", "key-bar--description", "key-bar--rule"}
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
        & > .key-bar--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        & > .key-bar--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
        & > .key-bar--rule {
            color: $foreground 20%;
        }
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.hints: tuple[KeyHint, ...] = ()
        self.palette: KeyHint | None = None
        self._spans: list[tuple[int, int, KeyHint]] = []  # x range -> hint, from the last render

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen) -> None:
        if not self.is_attached or screen is not self.screen:
            return
        hints, palette = self._read_bindings()
        if (hints, palette) != (self.hints, self.palette):
            self.hints, self.palette = hints, palette
            self.refresh()

    def _read_bindings(self) -> tuple[tuple[KeyHint, ...], KeyHint | None]:
        app = self.app
        active = self.screen.active_bindings
        seen: set[str] = set()
        hints: list[KeyHint] = []
        for _node, binding, enabled, _tooltip in active.values():
            if not binding.show or binding.action in seen:  # one hint per action, as Footer shows
                continue
            seen.add(binding.action)
            hints.append(KeyHint(binding.key, app.get_key_display(binding), binding.description, enabled))
        palette = None
        if app.ENABLE_COMMAND_PALETTE and app.COMMAND_PALETTE_BINDING in active:
            _node, binding, enabled, _tooltip = active[app.COMMAND_PALETTE_BINDING]
            palette = KeyHint(binding.key, app.get_key_display(binding), binding.description, enabled)
        return tuple(hints), palette

    def render(self) -> Text:
        key_style = self.get_component_rich_style("key-bar--key")
        description_style = self.get_component_rich_style("key-bar--description")
        width = self.size.width
        right = Text()
        if self.palette is not None:  # "▏^p palette ", as Footer docks it on the right
            right.append("▏", self.get_component_rich_style("key-bar--rule"))
            self._append(right, self.palette, key_style, description_style, key_padding="")
        line = Text(no_wrap=True, overflow="crop", end="")
        spans: list[tuple[int, int, KeyHint]] = []
        room = max(0, width - right.cell_len)
        for hint in self.hints:
            start = line.cell_len
            if start + cell_len(f" {hint.display} {hint.description} ") > room:
                break  # as much as fits, whole hints only (Footer scrolls; this is for 80 columns)
            self._append(line, hint, key_style, description_style)
            spans.append((start, line.cell_len, hint))
        if right:
            line.append(" " * (width - line.cell_len - right.cell_len))
            start = line.cell_len + 1
            line.append_text(right)
            spans.append((start, line.cell_len, self.palette))
        self._spans = spans
        return line

    @staticmethod
    def _append(line: Text, hint: KeyHint, key_style: Style, description_style: Style, key_padding: str = " ") -> None:
        if not hint.enabled:
            key_style, description_style = key_style + _DIM, description_style + _DIM
        line.append(f"{key_padding}{hint.display} ", key_style)
        line.append(f"{hint.description} ", description_style)

    def on_click(self, event: events.Click) -> None:
        for start, end, hint in self._spans:
            if start <= event.x < end:
                if hint.enabled:
                    self.app.simulate_key(hint.key)
                else:
                    self.app.bell()
                return
