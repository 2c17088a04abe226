"""The event timeline (`e`), and the screens replay shows instead of live ones: recorded diagnostics and a
report around the time shown."""

from __future__ import annotations

import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from mltop.diagnostics.events import event_summary

from ..app_api import MltopApi, mltop_app
from ..format import local_time
from ..sanitize import literal
from .diagnostics import DiagnosticsScreen
from .report import ReportScreen
from ..widgets.search_box import SearchBox
from ..widgets.key_bar import KeyBar

TIMELINE_LIMIT = 5000  # newest events shown; `mltop events` prints any range

_KIND_STYLE = {"oom": "bold red", "die": "red", "kill": "yellow", "engine_down": "bold red", "down": "bold red",
               "appeared": "yellow", "cleared": "green", "health_status": "cyan", "restart": "yellow",
               "signal": "yellow", "stop": "yellow"}


def events_text(events, with_date: bool = False) -> Text:
    """Events as lines of text (the detail screen's list); hostile names stay literal."""
    out = Text(no_wrap=False, end="")
    for i, e in enumerate(events):
        if i:
            out.append("\n")
        out.append(local_time(e.t, with_date) + "  ", style="dim")
        out.append(f"{e.kind:<13}", style=_KIND_STYLE.get(e.kind, "bold"))
        out.append(" ")
        out.append_text(literal(event_summary(e)))
    return out


class TimelineScreen(Screen):
    """Every recorded event, newest first: host and containers. `/` filters, enter opens the container's
    detail (in replay: at the time of the event)."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="mltop.timeline.back"),
        Binding("slash", "filter", "Filter", id="mltop.timeline.filter"),
        Binding("enter", "open", "Container at that time", id="mltop.timeline.open"),
    ]
    mltop = mltop_app()

    def __init__(self) -> None:
        super().__init__()
        self.events: list = []
        self.needle = ""
        self.shown: list = []

    def compose(self) -> ComposeResult:
        yield Static(classes="screen-title", id="timeline-title")
        yield SearchBox(placeholder="filter by container, kind, code or text (enter keeps, esc clears)",
                        id="timeline-filter")
        yield DataTable(id="timeline", cursor_type="row", zebra_stripes=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#timeline-filter", SearchBox).display = False
        table = self.query_one(DataTable)
        table.add_columns("time", "source", "event", "container", "what")
        store = self.mltop.recording_store
        if store is None:
            self._title(Text("No recording: start mltop without --no-record (or `mltop serve`) to keep events",
                             style="yellow"))
            return
        try:
            self.events = store.events(newest_first=True, limit=TIMELINE_LIMIT)
        except Exception as exc:
            self._title(literal(f"cannot read the recording: {exc}", "bold red"))
            return
        self._fill()
        table.focus()

    def _title(self, text: Text) -> None:
        self.query_one("#timeline-title", Static).update(text)

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        needle = self.needle.lower()
        self.shown = []
        for e in self.events:
            what = event_summary(e)
            if needle and needle not in " ".join(
                    str(x) for x in (e.container, e.kind, e.source, e.code, what, e.container_id)).lower():
                continue
            self.shown.append(e)
            table.add_row(Text(local_time(e.t), style="dim"), Text(e.source),
                          Text(e.kind, style=_KIND_STYLE.get(e.kind, "bold")), literal(e.container or "host"),
                          literal(what))
        title = Text(f"Events {len(self.shown)}", style="bold", end="")
        if len(self.shown) != len(self.events):
            title.append(f" of {len(self.events)}")
        if self.needle:
            title.append(" · filter ")
            title.append_text(literal(self.needle, "reverse"))
        title.append("  newest first · enter: the container at that time", style="dim")
        self._title(title)

    def on_input_changed(self, message: SearchBox.Changed) -> None:
        self.needle = message.value
        self._fill()

    def on_search_box_closed(self, message: SearchBox.Closed) -> None:
        self.query_one(DataTable).focus()

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()  # the table takes enter for itself
        self.action_open()

    def action_filter(self) -> None:
        self.query_one("#timeline-filter", SearchBox).open()

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if not self.shown or table.cursor_row is None or table.cursor_row >= len(self.shown):
            return
        event = self.shown[table.cursor_row]
        app = self.mltop
        if event.container_id is None and event.container is None:
            return
        snapshot = app.snapshot
        if not app.source.live:
            app.replay_seek(event.t)
            snapshot = app.source.latest()
        key = event.container_id or event.container
        match = snapshot.container(key) if snapshot is not None else None
        if match is None and event.container:
            match = snapshot.container(event.container) if snapshot is not None else None
        if match is None:
            hint = ": `mltop replay --at` shows the past" if app.source.live else ""
            self.notify("That container is not in the snapshot shown" + hint, severity="warning", markup=False)
            return
        if app.source.live:
            self.notify("Live: the detail shows the container now; `mltop replay --at TIME` shows it then",
                        timeout=4)
        app.open_detail(match.id)

    def action_back(self) -> None:
        self.app.pop_screen()


class _RecordedResult:
    """What DiagnosticsScreen reads from a DoctorResult, from recorded findings."""

    def __init__(self, findings, snapshot, container_id):
        names = [c.name for c in snapshot.containers] if snapshot else []
        if container_id and snapshot is not None:
            mine = snapshot.container(container_id)
            names = [mine.name] if mine else []
            findings = [f for f in findings if f.container in (None, *names)]
        self.findings = tuple(findings)
        self.containers_checked = tuple(names)
        self.checks_skipped = ()
        self.missing = ()


class RecordedDiagnosticsScreen(DiagnosticsScreen):
    """Replay's `d`: the findings the recording holds at the time shown; nothing is re-run."""

    def action_refresh(self) -> None:
        result = self.mltop.doctor_result
        snapshot = self.mltop.snapshot
        findings = result.findings if result is not None else ()
        self._finished_at = getattr(result, "at", None) or time.time()
        self._show_title(snapshot)
        self._show_result(_RecordedResult(findings, snapshot, self.container_id), 0.0)
        status = self.query_one("#diag-status", Static)
        text = Text("recorded findings at ", style="dim", end="")
        text.append(local_time(self._finished_at), style="bold")
        text.append(" (as the doctor judged then; not re-run)", style="dim")
        status.update(text)

    def show_snapshot(self, snapshot) -> None:
        self.action_refresh()


class RecordedReportScreen(ReportScreen):
    """Replay's `r`: a report of the time shown with the recording's events and figures around it."""

    def _write(self, snapshot, previous) -> None:  # type: ignore[override]  # the base's is a @work method
        self._write_recorded(snapshot)

    @work(thread=True, exclusive=True, group="report", exit_on_error=False)
    def _write_recorded(self, snapshot) -> None:
        from pathlib import Path

        from mltop.diagnostics.report import build_report, default_report_path, write_report
        from mltop.diagnostics.report_history import REPORT_WINDOW_S, add_history

        app = self.mltop
        path, error, summary = None, None, ""
        try:
            # The findings recorded at that time stand in for a doctor run; logs were not recorded.
            report = build_report(snapshot, None, app.doctor_result, None, app.history, log_lines=0)
            t = snapshot.taken_at
            store = app.recording_store
            if store is not None:
                report = add_history(report, store, t - REPORT_WINDOW_S, t + REPORT_WINDOW_S)
            summary = (f"{len(report.get('containers', ()))} containers, {len(report.get('timeline', ()))} "
                       f"events around {local_time(t)}")
            name = default_report_path(".", "md").name
            for folder in (Path.cwd(), Path.home()):
                try:
                    path = write_report(folder / name, "md", report=report)
                    error = None
                    break
                except OSError as err:
                    error = f"cannot write {folder / name}: {err.strerror or err}"
        except Exception as exc:
            error = f"the report could not be built: {type(exc).__name__}: {exc}"
        self.post_message(self.Written(path, error, summary))


def recorded_screen(kind: str, container_id: str | None):
    if kind == "diagnostics":
        return RecordedDiagnosticsScreen(kind=kind, container_id=container_id)
    return RecordedReportScreen(kind=kind, container_id=container_id)


DETAIL_EVENTS = 6  # the newest events under the detail graphs; `e` shows them all


def container_events_text(app: MltopApi, container_id: str, snapshot) -> Text | None:
    """The container's newest recorded events up to the time shown, or None without a recording."""
    store = app.recording_store
    if store is None:
        return None
    until = app.events_until  # in replay: up to the next sweep
    try:
        shown = snapshot.container(container_id) if snapshot is not None else None
        events = store.events(until=until, container=container_id, newest_first=True, limit=DETAIL_EVENTS,
                              container_name=shown.name if shown else None)
    except Exception:
        return None
    title = Text("Events", style="bold", end="")
    title.append(f"  newest first{' up to the time shown' if not app.source.live else ''} · e: all events",
                 style="dim")
    if not events:
        title.append("\nnone recorded", style="dim")
        return title
    title.append("\n")
    title.append_text(events_text(events))
    return title
