"""The question before an act on a container (`k` on the dashboard): which signal for a process, stop or restart
for a container, then y/N. What it names comes from the snapshot and is shown as data (a command line is the
container's text); the act itself runs in the app's worker (MltopApp.act), which records and shows its outcome.
"""

from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from mltop.diagnostics.actions import acts
from mltop.probes.model import ContainerSample, ProcessSample

from ..app_api import mltop_app
from ..sanitize import literal, printable

SIGNAL_LABELS = {"TERM": "SIGTERM: ask it to exit (it may clean up)", "KILL": "SIGKILL: end it now",
                 "INT": "SIGINT: as Ctrl-C"}


class ActScreen(ModalScreen[None]):
    """Asks which act (an option list), then y/N; y hands `perform(choice)` to the app's worker."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="mltop.act.cancel"),
        Binding("y", "confirm", "Yes", show=False, id="mltop.act.yes"),
        Binding("n", "cancel", "No", show=False, id="mltop.act.no"),
    ]
    mltop = mltop_app()

    def __init__(self, question: Text, choices: list[tuple[str, str]],
                 perform: Callable[[str], Callable[[], acts.ActOutcome]], confirm: Callable[[str], Text]):
        super().__init__()
        self.question = question
        self.choices = choices
        self.perform = perform
        self._confirm = confirm
        self.chosen: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="act-box"):
            yield Static(self.question, id="act-question")
            if self.choices:
                yield OptionList(*(Option(label, id=key) for key, label in self.choices), id="act-choices")
            yield Static(Text("enter chooses · esc cancels" if self.choices else "esc closes", style="dim"),
                         id="act-confirm")

    def on_mount(self) -> None:
        if self.choices:
            self.query_one(OptionList).focus()

    @property
    def prompt_text(self) -> str:
        return str(self.query_one("#act-question", Static).render()) + "\n" + \
            str(self.query_one("#act-confirm", Static).render())

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.chosen = event.option.id
        line = self._confirm(self.chosen)
        line.append("  y: yes · n or esc: no", style="bold")
        self.query_one("#act-confirm", Static).update(line)
        self.query_one(OptionList).disabled = True
        self.focus()

    def action_confirm(self) -> None:
        if self.chosen is None:
            return
        self.mltop.act(self.perform(self.chosen))
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def signal_screen(container: ContainerSample, process: ProcessSample, source) -> ActScreen:
    question = Text("Send a signal to ", style="bold", end="")
    question.append_text(literal(printable(acts.describe_process(container, process))))
    question.append("\nIt is checked again first: a PID now of another process is never signalled.", style="dim")

    def perform(name: str):
        return lambda: acts.signal_process(container, process, name, source=source)

    def confirm(name: str) -> Text:
        return Text(f"Send SIG{name} to host PID {process.host_pid}?", style="bold yellow", end="")

    return ActScreen(question, [(n, SIGNAL_LABELS[n]) for n in acts.SIGNAL_NAMES], perform, confirm)


def container_screen(container: ContainerSample, source, new_engine) -> ActScreen:
    question = Text("Container ", style="bold", end="")
    question.append_text(literal(printable(container.name), "bold"))
    question.append_text(literal(printable(f" ({container.image}, {container.status})")))
    advice = acts.pod_advice(container)
    if advice:
        question.append("\n")
        question.append_text(literal(printable(advice), "yellow"))
        return ActScreen(question, [], lambda choice: (lambda: None), lambda choice: Text())  # nothing to choose
    choices = [("stop", f"Stop (SIGTERM, SIGKILL after {acts.STOP_TIMEOUT_S} s)"),
               ("restart", "Restart (stop, then start again)")]

    def perform(choice: str):
        return lambda: acts.stop_container(container, new_engine(), restart=choice == "restart", source=source)

    def confirm(choice: str) -> Text:
        return Text(f"{choice.capitalize()} {printable(container.name)}?", style="bold yellow", end="")

    return ActScreen(question, choices, perform, confirm)
