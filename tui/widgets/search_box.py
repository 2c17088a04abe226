"""A one-line text box for filters and searches: typing applies live, enter keeps it, escape clears it."""

from __future__ import annotations

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input


class SearchBox(Input):
    """Hidden until opened; posts `Closed` when the user is done so the owner can refocus its view."""

    BINDINGS = [Binding("escape", "clear", "Clear", id="mltop.search.clear")]

    class Closed(Message):
        def __init__(self, box: "SearchBox", kept: bool):
            super().__init__()
            self.box = box
            self.kept = kept  # enter: keep the text; escape: it was cleared

        @property
        def control(self) -> "SearchBox":
            return self.box

    def open(self) -> None:
        self.display = True
        self.focus()

    def action_clear(self) -> None:
        self.value = ""
        self.display = False
        self.post_message(self.Closed(self, kept=False))

    async def action_submit(self) -> None:
        await super().action_submit()
        if not self.value:
            self.display = False
        self.post_message(self.Closed(self, kept=True))
