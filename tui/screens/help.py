"""Key help (`?`): every key that works on the screen underneath, with what it does."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

NAVIGATION = [
    ("↑ ↓ j k", "move the cursor"),
    ("pgup pgdn", "a page up or down"),
    ("home end", "first or last row"),
    ("tab", "next pane (table, processes, log)"),
    ("ctrl+p", "command palette: every action by name"),
]


def help_text(sections: list[tuple[str, list[tuple[str, str]]]]) -> Text:
    out = Text(end="")
    width = max((len(key) for _, rows in sections for key, _ in rows), default=8) + 2
    for title, rows in sections:
        if not rows:
            continue
        if out.plain:
            out.append("\n\n")
        out.append(title, style="bold underline")
        for key, description in rows:
            out.append("\n")
            out.append(f"{key:>{width}}  ", style="bold")
            out.append(description)
    return out


class HelpScreen(ModalScreen[None]):
    """A box over the current screen; any of escape, q or ? closes it."""

    BINDINGS = [
        Binding("escape,q,question_mark", "close", "Close", id="mltop.help.close"),
    ]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]):
        super().__init__()
        self.sections = sections + [("Navigation", NAVIGATION)]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box") as box:
            box.border_title = "Keys"
            box.border_subtitle = "esc closes"
            yield Static(help_text(self.sections), id="help-text")

    def action_close(self) -> None:
        self.dismiss(None)
