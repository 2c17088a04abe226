"""The report (`r`): a fresh doctor run, the session's actions and the history, written to a Markdown file."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static

from ..app_api import mltop_app
from ..output_files import write_here_else_home
from ..sanitize import literal

log = logging.getLogger(__name__)

REPORT_FORMAT = "md"  # pastes cleanly into a ticket; `mltop report -o x.html` writes the others


class ReportScreen(ModalScreen[None]):
    """A box over the dashboard: "writing…", then the path of the file written."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close", id="mltop.report.close")]
    mltop = mltop_app()

    class Written(Message):
        def __init__(self, path: Path | None, error: str | None, summary: str):
            super().__init__()
            self.path = path
            self.error = error
            self.summary = summary

    def __init__(self, kind: str = "report", container_id: str | None = None):
        super().__init__()
        self.kind = kind
        self.container_id = container_id  # the report covers every container; this one is named in the box
        self.path: Path | None = None
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="report-box") as box:
            box.border_title = "Report"
            box.border_subtitle = "esc closes"
            yield Static(Text("Writing the report: running the checks and reading the logs…"), id="report-text")

    def on_mount(self) -> None:
        snapshot = self.mltop.snapshot
        if snapshot is None:
            self._show(Text("No snapshot yet: the first sweep has not finished. Try again in a moment.",
                            style="yellow"))
            return
        self._write(snapshot, self.mltop.previous_snapshot)

    @work(thread=True, exclusive=True, group="report", exit_on_error=False)
    def _write(self, snapshot, previous) -> None:
        from mltop.diagnostics.doctor import run_doctor
        from mltop.diagnostics.report import build_report, default_report_path, write_report

        app = self.mltop
        engine = app.new_engine()
        path, error, summary = None, None, ""
        try:
            doctor = run_doctor(snapshot, engine, previous=previous)  # never raises
            # History: its lists are copied with list(deque), which holds the GIL, so reading while the
            # event loop records is safe.
            report = build_report(snapshot, engine, doctor, app.action_log, app.history)
            report = app.add_recorded_history(report)  # the timeline, if recording
            summary = (f"{len(report.get('containers', ()))} containers, {len(doctor.findings)} findings, "
                       f"{len(report.get('actions', ()))} actions of this session")
            name = default_report_path(".", REPORT_FORMAT).name
            try:
                path = write_here_else_home(name, lambda target: write_report(target, REPORT_FORMAT, report=report))
            except OSError as err:
                error = f"cannot write {err.filename or name}: {err.strerror or err}"
        except Exception as exc:  # a bug in building the report must reach the user, not kill the worker
            log.exception("the report could not be built")
            error = f"the report could not be built: {type(exc).__name__}: {exc}"
        finally:
            engine.reset()
        self.post_message(self.Written(path, error, summary))
        # The notification comes from the app, so the path is shown even when the box was closed meanwhile.
        if path is not None:
            note = dict(message=f"Report written to {path}", title="Report", timeout=8)
        else:
            note = dict(message=f"Report not written: {error}", severity="error")
        try:
            self.app.call_from_thread(self.app.notify, markup=False, **note)
        except RuntimeError:  # the app is shutting down
            pass

    def on_report_screen_written(self, message: Written) -> None:
        message.stop()
        self.path, self.error = message.path, message.error
        if message.path is None:
            self._show(literal(message.error or "the report was not written", "bold red"))
            return
        text = Text("Report written to\n", end="")
        path_text = literal(str(message.path), "bold")
        path_text.no_wrap = False
        text.append_text(path_text)
        text.append(f"\n\n{message.summary} (Markdown; secrets redacted).", style="dim")
        self._show(text)

    def _show(self, text: Text) -> None:
        text.no_wrap = False
        self.query_one("#report-text", Static).update(text)

    @property
    def shown_text(self) -> str:
        return str(self.query_one("#report-text", Static).render())

    def action_close(self) -> None:
        self.dismiss(None)
