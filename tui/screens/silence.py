"""The `s` box of the diagnostics screen: silence a finding for a while, for its container, pod or GPU or host-wide."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, RadioButton, RadioSet, Static

from ..sanitize import literal

DEFAULT_DURATION = "2h"


@dataclass(frozen=True)
class SilenceRequest:
    code: str
    target: str  # as probes.recording.silences stores it ("" host-wide)
    seconds: float
    reason: str


def targets_of(finding) -> list[tuple[str, str]]:
    """(target, words) a finding can be silenced for, narrowest first; host-wide last."""
    out = []
    if finding.container:
        out.append((finding.container, f"this container: {finding.container}"))
        parts = finding.container.split("/")
        if len(parts) == 3:  # namespace/pod/container: every container of the pod
            pod = "/".join(parts[:2])
            out.append((pod, f"this pod: {pod}"))
    if finding.gpu:
        out.append((f"gpu:{finding.gpu}", f"this GPU: {finding.gpu}"))
    out.append(("", f"{finding.code} on the whole host"))
    return out


class SilenceScreen(ModalScreen["SilenceRequest | None"]):
    """Duration, reason and what for; enter in the reason saves, esc cancels. Dismisses with a SilenceRequest."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="mltop.silence.cancel")]

    def __init__(self, finding) -> None:
        super().__init__()
        self.finding = finding
        self.targets = targets_of(finding)

    def compose(self) -> ComposeResult:
        with Vertical(id="silence-box") as box:
            box.border_title = "Silence"
            box.border_subtitle = "enter saves · esc cancels"
            head = Text(f"{self.finding.code}  ", style="bold", no_wrap=True, overflow="ellipsis", end="")
            head.append_text(literal(self.finding.title))
            yield Static(head, id="silence-finding")
            with RadioSet(id="silence-target"):
                for i, (_target, words) in enumerate(self.targets):
                    yield RadioButton(literal(words), value=i == 0)
            yield Input(DEFAULT_DURATION, placeholder="for how long: 90m, 2h, 1d", id="silence-for")
            yield Input(placeholder="reason: who knows, which ticket", id="silence-reason")
            yield Static(id="silence-error")

    def on_mount(self) -> None:
        self.query_one("#silence-reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        from mltop.probes.recording.silences import check_reason, silence_seconds

        error = self.query_one("#silence-error", Static)
        try:
            seconds = silence_seconds(self.query_one("#silence-for", Input).value)
            reason = check_reason(self.query_one("#silence-reason", Input).value)
        except ValueError as err:
            error.update(literal(str(err), "bold red"))
            return
        chosen = self.query_one("#silence-target", RadioSet).pressed_index
        target = self.targets[max(chosen, 0)][0]
        self.dismiss(SilenceRequest(self.finding.code, target, seconds, reason))

    def action_cancel(self) -> None:
        self.dismiss(None)
