"""One action in a container (`n` nvidia-smi, `p` py-spy, `f` framework check): output as it arrives.

The action runs in a thread worker (diagnostics.actions.ActionRun); its lines are queued by that thread
and written to the panel in batches on the event loop. `c` cancels, `w` writes the output to a file,
escape cancels a running action and goes back. Every result lands in the app's session ActionLog.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import RichLog, Static

from mltop.diagnostics.actions.registry import action_named

from ..app_api import mltop_app
from ..output_files import write_here_else_home
from ..sanitize import literal, one_line, printable
from ..widgets.key_bar import KeyBar

STATUS_STYLE = {"running": "bold", "ok": "bold green", "failed": "bold red", "timeout": "bold red",
                "cancelled": "bold yellow", "unavailable": "bold yellow"}
KEEP_LINES = 20_000


def output_file_name(action: str, container: str, when: float) -> str:
    """mltop-<action>-<container>-<local time>.txt, with anything odd in the name replaced."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", container).strip("._") or "container"
    return f"mltop-{action}-{safe[:60]}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}.txt"


def write_output(text: str, name: str) -> Path:
    """Write `text` to `name` (0600, never through a link) in the current directory, or in the home directory
    when that fails."""
    from mltop.probes.safe_files import replace_file

    return write_here_else_home(name, lambda path: replace_file(path, text))


class ActionScreen(Screen):
    """The output of one action against one container, with its status line."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="mltop.action.back"),
        Binding("c", "cancel", "Cancel", id="mltop.action.cancel"),
        Binding("w", "write", "Write to file", id="mltop.action.write"),
    ]
    mltop = mltop_app()

    class Lines(Message):
        """Lines are waiting in the queue (posted once per batch by the action's thread)."""

    class Finished(Message):
        def __init__(self, result):
            super().__init__()
            self.result = result

    class Written(Message):
        def __init__(self, path: Path | None, error: str | None):
            super().__init__()
            self.path = path
            self.error = error

    def __init__(self, kind: str = "nvidia-smi", container_id: str | None = None):
        super().__init__()
        self.kind = kind
        self.action = action_named(kind).name  # the screen's kind is the action's name (registry.py)
        self.container_id = container_id
        self.container_name: str | None = None
        self.runner = None  # the diagnostics.actions.ActionRun
        self.result = None  # its ActionResult once finished
        self.status = "running"
        self.lines: list[str] = []  # what the panel shows, as text
        self.written_to: Path | None = None
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()
        self._started = time.monotonic()
        self._ticker = None

    def compose(self) -> ComposeResult:
        yield Static(classes="screen-title", id="action-title")
        yield RichLog(max_lines=KEEP_LINES, wrap=False, markup=False, highlight=False, id="action-output")
        with VerticalScroll(id="action-explanation"):  # a long explanation scrolls (tab focuses it)
            yield Static(id="action-explanation-text")
        yield Static(id="action-status")
        yield KeyBar()

    def on_mount(self) -> None:
        output = self.query_one("#action-output", RichLog)
        output.focus()
        self.query_one("#action-explanation").display = False
        snapshot = self.mltop.snapshot
        container = snapshot.container(self.container_id) if snapshot is not None and self.container_id else None
        self.container_name = container.name if container is not None else None
        self._show_title()
        from mltop.diagnostics.actions import ActionRun, refusal

        # The app refuses before pushing this screen; asked again here, where the run starts, so no way in
        # (a key, the palette, a screen of later days) can exec into a source that cannot act.
        refused = refusal(self.action, self.mltop.source)
        if refused:
            self._finish_without_run(refused)
            return
        if container is None:
            why = ("No container is selected: pick one in the containers table, then press the key again."
                   if self.container_id is None else "That container is no longer in the snapshot: it was removed.")
            self._finish_without_run(why)
            return
        pid = self._py_spy_pid(container) if self.action == "py-spy" else None
        # Made here (it connects lazily) so that `c` can cancel it from the first moment.
        self.runner = ActionRun(self.action, snapshot, container, self.mltop.new_engine(),
                                pid=pid, on_line=self._queue, log=self.mltop.action_log, source=self.mltop.source)
        self._started = time.monotonic()
        self._ticker = self.set_interval(0.5, self._show_status, name="action-clock")
        self._show_status()
        self._run(self.runner)

    def on_unmount(self) -> None:
        if self.runner is not None and not self.runner.done:
            self.runner.cancel()

    def _py_spy_pid(self, container) -> int | None:
        """The process selected in the processes pane when it is one of this container's Python processes;
        otherwise None, and ActionRun picks the busiest."""
        from mltop.diagnostics.actions import python_processes

        pid = self.mltop.selected_process_pid
        if pid is not None and any(p.host_pid == pid for p in python_processes(container)):
            return pid
        return None

    # -- running (thread) -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="action", exit_on_error=False)
    def _run(self, runner) -> None:
        try:
            result = runner.run()  # never raises; blocks until done, timed out or cancelled
        finally:
            runner.engine.reset()
        self.post_message(self.Finished(result))

    def _queue(self, line: str) -> None:
        """On the action's thread: queue the line; one message per batch wakes the panel."""
        with self._pending_lock:
            first = not self._pending
            self._pending.append(line)
        if first:
            self.post_message(self.Lines())

    def on_action_screen_lines(self, message: Lines) -> None:
        message.stop()
        with self._pending_lock:
            lines, self._pending = self._pending, []
        self._write(lines)

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        lines = [printable(line) for line in lines]
        self.lines.extend(lines)
        del self.lines[: max(len(self.lines) - KEEP_LINES, 0)]
        self.query_one("#action-output", RichLog).write(Text("\n".join(lines), no_wrap=True, end=""))

    def on_action_screen_finished(self, message: Finished) -> None:
        message.stop()
        self.on_action_screen_lines(self.Lines())  # anything still queued comes first
        result = message.result
        self.result = result
        self.status = result.status
        if self._ticker is not None:
            self._ticker.stop()
        if result.explanation:
            self._explain(result.explanation)
        self._show_status()

    def _finish_without_run(self, why: str) -> None:
        self.status = "unavailable"
        self._explain(why)
        self._show_status()

    # -- showing --------------------------------------------------------------------------------------

    def _show_title(self) -> None:
        title = Text(f"{action_named(self.action).title} · ", style="bold", no_wrap=True, end="")
        if self.container_name is not None:
            title.append_text(literal(self.container_name, "bold"))
        else:
            title.append("no container", style="dim")
        self.query_one("#action-title", Static).update(title)

    def _explain(self, text: str) -> None:
        explanation = literal(text)
        explanation.no_wrap = False
        self.query_one("#action-explanation-text", Static).update(explanation)
        self.query_one("#action-explanation").display = True

    def _show_status(self) -> None:
        # Most important first: an 80-column terminal cuts the end (the command).
        status = Text(no_wrap=True, end="")
        status.append(self.status, style=STATUS_STYLE.get(self.status, "bold"))
        result = self.result
        if result is not None:
            status.append(f" in {result.duration_s:.1f} s")
            if result.exit_code is not None:
                status.append(f" · exit {result.exit_code}")
        elif self.runner is not None:
            status.append(f" {time.monotonic() - self._started:.0f} s (times out at {self.runner.timeout_s:.0f} s)"
                          " · c cancels")
        status.append(f" · {len(self.lines)} lines")
        if self.written_to is not None:
            status.append(" · written to ")
            status.append_text(literal(str(self.written_to), "bold"))
        if result is not None and result.command:
            status.append(" · ")
            status.append_text(literal(one_line(" ".join(result.command)), "dim"))
        self.query_one("#action-status", Static).update(status)

    @property
    def status_text(self) -> str:
        return str(self.query_one("#action-status", Static).render())

    @property
    def explanation_text(self) -> str:
        if not self.query_one("#action-explanation").display:
            return ""
        return str(self.query_one("#action-explanation-text", Static).render())

    # -- keys -----------------------------------------------------------------------------------------

    def action_cancel(self) -> None:
        if self.runner is not None and not self.runner.done:
            self.runner.cancel()
            self.status = "cancelling"
            self._show_status()

    def action_back(self) -> None:
        self.action_cancel()  # the run ends in its thread and still lands in the session log
        self.app.pop_screen()

    def action_write(self) -> None:
        name = output_file_name(self.action, self.container_name or "none", time.time())
        self._write_file(self._file_text(), name)

    def _file_text(self) -> str:
        result = self.result
        head = [f"mltop {self.action} in {self.container_name or '-'}",
                f"status: {self.status}" + (f" in {result.duration_s:.1f} s, exit {result.exit_code}"
                                            if result is not None else " (still running)")]
        if result is not None and result.command:
            head.append("command: " + one_line(" ".join(result.command)))
        if result is not None and result.explanation:
            head.append("explanation: " + result.explanation)
        output = result.output if result is not None else "\n".join(self.lines)  # both redacted
        return "\n".join(head) + "\n\n" + output + "\n"

    @work(thread=True, group="action-write", exit_on_error=False)
    def _write_file(self, text: str, name: str) -> None:
        try:
            self.post_message(self.Written(write_output(text, name), None))
        except OSError as err:
            self.post_message(self.Written(None, f"{err.strerror or err} ({err.filename or name})"))

    def on_action_screen_written(self, message: Written) -> None:
        message.stop()
        if message.path is None:
            self.app.notify(f"Could not write the output: {message.error}", severity="error", markup=False)
            return
        self.written_to = message.path
        self._show_status()
        self.app.notify(f"Output written to {message.path}", title="Saved", markup=False)
