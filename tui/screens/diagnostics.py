"""Diagnostics (`d`): the doctor's findings for the selected container (or the host and every container)."""

from __future__ import annotations

import logging
import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Static

from mltop.diagnostics.findings import SEVERITIES, SEVERITY_LABEL

from ..app_api import mltop_app
from ..format import SEVERITY_GLYPH, local_time
from ..sanitize import literal
from ..widgets.key_bar import KeyBar

log = logging.getLogger(__name__)

SEVERITY_LOOK = {s: (SEVERITY_LABEL[s], *SEVERITY_GLYPH[s]) for s in SEVERITIES}  # label, glyph, style


class FindingView(Vertical, can_focus=True):
    """A finding the cursor can rest on (`s` silences it)."""

    def __init__(self, finding, *children, **kwargs) -> None:
        super().__init__(*children, **kwargs)
        self.finding = finding


def finding_widget(finding) -> Vertical:
    """One finding: severity, code and title; then its evidence lines; then the fix. All text literal. A silenced
    one is dimmed and says until when and why."""
    label, glyph, style = SEVERITY_LOOK.get(finding.severity, (finding.severity, "?", "bold"))
    silenced = finding.silenced is not None
    head = Text(no_wrap=False, end="", style="dim" if silenced else "")
    head.append(f"{glyph} {label:<8} ", style="dim" if silenced else style)
    head.append(finding.code, style="bold")
    head.append("  ")
    head.append_text(_wrapping(finding.title))
    if silenced:
        from mltop.diagnostics.silences import silence_words

        head.append("\nsilenced ", style="bold")
        head.append_text(_wrapping(silence_words(finding.silenced)))
    evidence = Text(no_wrap=False, end="")
    for i, line in enumerate(finding.evidence):
        if i:
            evidence.append("\n")
        evidence.append_text(_wrapping(line))
    fix = Text("fix  ", style="bold green", no_wrap=False, end="")
    fix.append_text(_wrapping(finding.fix))
    return FindingView(
        finding,
        Static(head, classes="finding-head"),
        Static(evidence, classes="finding-evidence"),
        Static(fix, classes="finding-fix"),
        classes=f"finding -{'silenced' if silenced else finding.severity}",
    )


def _wrapping(value: object, style: str = "") -> Text:
    text = literal(value, style)
    text.no_wrap = False
    return text


class DiagnosticsScreen(Screen):
    """Runs the doctor in a thread worker when opened and on `r`; shows findings most severe first."""

    mltop = mltop_app()

    BINDINGS = [
        Binding("escape", "back", "Back", id="mltop.diagnostics.back"),
        Binding("r", "refresh", "Re-run", id="mltop.diagnostics.refresh"),
        Binding("d", "refresh", "Re-run", show=False, id="mltop.diagnostics.again"),
        Binding("s", "silence", "Silence", id="mltop.diagnostics.silence"),
        # (before the body's scrolling: the cursor moves by finding, and each one it rests on is scrolled into view)
        Binding("down,j", "next_finding(1)", "Next finding", show=False, priority=True,
                id="mltop.diagnostics.next"),
        Binding("up,k", "next_finding(-1)", "Previous finding", show=False, priority=True,
                id="mltop.diagnostics.previous"),
    ]

    class Silenced(Message):
        def __init__(self, words: str | None, error: str | None):
            super().__init__()
            self.words = words
            self.error = error

    class Diagnosed(Message):
        def __init__(self, result, snapshot, seconds: float, error: str | None = None):
            super().__init__()
            self.result = result
            self.snapshot = snapshot
            self.seconds = seconds
            self.error = error

    def __init__(self, kind: str = "diagnostics", container_id: str | None = None):
        super().__init__()
        self.kind = kind
        self.container_id = container_id
        self.result = None  # the latest DoctorResult shown
        self.running = False
        self._engine = None
        self._finished_at: float | None = None

    def compose(self) -> ComposeResult:
        yield Static(classes="screen-title", id="diag-title")
        yield Static(id="diag-status")
        yield VerticalScroll(id="diag-body")
        yield KeyBar()

    def on_mount(self) -> None:
        self._show_title()
        self.query_one("#diag-body").focus()
        self.action_refresh()

    def on_unmount(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.reset()

    # -- running (thread) -----------------------------------------------------------------------------

    def action_refresh(self) -> None:
        snapshot = self.mltop.snapshot
        if snapshot is None:
            self._status(Text("No snapshot yet: the first sweep has not finished. Press r in a moment.",
                              style="yellow"))
            return
        if self.running:  # one run at a time: a thread cannot be stopped, and the engine is not shared
            return
        self.running = True
        self._status(Text("running the checks…", style="bold"))
        self._diagnose(snapshot, self.mltop.previous_snapshot)

    @work(thread=True, exclusive=True, group="diagnostics", exit_on_error=False)
    def _diagnose(self, snapshot, previous) -> None:
        from mltop.diagnostics.doctor import run_doctor

        started = time.perf_counter()
        result, error = None, None
        try:
            if self._engine is None:
                self._engine = self.mltop.new_engine()
            containers = [self.container_id] if self.container_id else None
            # A device check the user ran (`f`) feeds the findings; none is started from here.
            result = run_doctor(snapshot, self._engine, containers=containers, previous=previous,
                                action_log=self.mltop.action_log, silences=self.mltop.read_silences())
        except Exception as exc:  # run_doctor never raises; making the engine client might
            log.warning("the doctor could not run", exc_info=True)
            error = f"the doctor could not run: {type(exc).__name__}: {exc}"
        self.post_message(self.Diagnosed(result, snapshot, time.perf_counter() - started, error))

    def on_diagnostics_screen_diagnosed(self, message: Diagnosed) -> None:
        message.stop()
        self.running = False
        if message.result is None:
            self._status(literal(message.error or "the doctor gave no result", "bold red"))
            return
        self.result = message.result
        self._finished_at = time.time()
        self._show_title(message.snapshot)
        self._show_result(message.result, message.seconds)

    # -- showing --------------------------------------------------------------------------------------

    def _container_name(self, snapshot=None) -> str | None:
        snapshot = snapshot or self.mltop.snapshot
        container = snapshot.container(self.container_id) if snapshot and self.container_id else None
        return container.name if container is not None else None

    def _show_title(self, snapshot=None) -> None:
        title = Text("Diagnostics · ", style="bold", no_wrap=True, end="")
        if self.container_id is None:
            title.append("the host and all containers")
        else:
            name = self._container_name(snapshot)
            title.append_text(literal(name or self.container_id[:12], "bold"))
            title.append("  and the host", style="dim")
        self.query_one("#diag-title", Static).update(title)

    def _status(self, text: Text) -> None:
        self.query_one("#diag-status", Static).update(text)

    def _show_result(self, result, seconds: float) -> None:
        counts = {s: sum(1 for f in result.findings if f.severity == s and f.silenced is None) for s in SEVERITY_LOOK}
        silenced = sum(1 for f in result.findings if f.silenced is not None)
        status = Text(no_wrap=True, end="")
        for severity in SEVERITIES:
            label, glyph, style = SEVERITY_LOOK[severity]
            status.append(f"{glyph} {counts[severity]} {severity}", style=style if counts[severity] else "dim")
            status.append("  ")
        if silenced:
            status.append(f"{silenced} silenced  ", style="dim")
        checked = len(result.containers_checked)
        status.append(f"│ {checked} container{'s' if checked != 1 else ''} · {seconds:.1f} s · "
                      f"{local_time(self._finished_at or time.time(), with_date=False)}", style="dim")
        self._status(status)

        body = self.query_one("#diag-body", VerticalScroll)
        body.remove_children()
        widgets = []
        if result.missing:
            widgets.append(Static(Text("This container is no longer in the snapshot: it was removed. "
                                       "Go back and pick another.", style="yellow"), classes="diag-note"))
        elif self.container_id is not None and not result.containers_checked:  # a placeholder: not judged
            widgets.append(Static(Text("Not judged: its configuration is not read yet (see Checks skipped). "
                                       "Press r in a moment.", style="yellow"), classes="diag-note"))
        groups: dict[str | None, list] = {}
        for f in result.findings:  # host first, then the worst containers; most severe first in each
            groups.setdefault(f.container, []).append(f)
        if self.container_id is not None:  # the container the user asked about first, then the host
            groups = dict(sorted(groups.items(), key=lambda item: item[0] is None))
        for container, findings in groups.items():
            heading = Text("Host", style="bold underline", end="") if container is None else literal(
                container, "bold underline")
            widgets.append(Static(heading, classes="diag-group"))
            widgets.extend(finding_widget(f) for f in findings)
        clean = [n for n in result.containers_checked if n not in groups]
        if clean:
            note = Text("No findings: ", style="green", no_wrap=False, end="")
            note.append_text(_wrapping(", ".join(clean)))
            widgets.append(Static(note, classes="diag-note"))
        if result.checks_skipped:
            widgets.append(Static(Text("Checks skipped", style="bold underline", end=""), classes="diag-group"))
            skipped = Text(no_wrap=False, end="")
            for i, s in enumerate(result.checks_skipped):
                if i:
                    skipped.append("\n")
                skipped.append(f"{s.check}: ", style="bold")
                skipped.append_text(_wrapping(s.reason))
            widgets.append(Static(skipped, classes="diag-skipped"))
        body.mount_all(widgets)
        body.scroll_home(animate=False)

    @property
    def findings_text(self) -> str:
        """Everything the body shows, as plain text (what a user reads; used by tests)."""
        return "\n".join(str(static.render()) for static in self.query_one("#diag-body").query(Static))

    # -- keys -----------------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def _views(self) -> list[FindingView]:
        return list(self.query_one("#diag-body").query(FindingView))

    def action_next_finding(self, step: int) -> None:
        views = self._views()
        if not views:
            self.query_one("#diag-body", VerticalScroll).scroll_relative(y=step, animate=False)
            return
        at = views.index(self.focused) if self.focused in views else (-1 if step > 0 else len(views))
        views[max(0, min(len(views) - 1, at + step))].focus()

    def action_silence(self) -> None:
        """`s`: silence the finding under the cursor (else the first one not silenced yet)."""
        why = self.mltop.source.cannot_act
        if why:  # replay and the fleet view show what was judged then; silences are set on the live host
            self.notify(f"{why}: silences are set on the live host. Run `mltop` there, or "
                        "`mltop silence add CODE [TARGET] --for 2h --reason TEXT`.",
                        severity="warning", timeout=6, markup=False)
            return
        if self.mltop.silences_path is None:
            self.notify("No recording to keep silences in", severity="warning")
            return
        views = self._views()
        view = self.focused if isinstance(self.focused, FindingView) else next(
            (v for v in views if v.finding.silenced is None), None)
        if view is None:
            self.notify("No finding to silence", timeout=3)
            return
        from .silence import SilenceScreen

        self.app.push_screen(SilenceScreen(view.finding), self._silence_chosen)

    def _silence_chosen(self, request) -> None:
        if request is not None:
            self._write_silence(request, self.mltop.silences_path)

    @work(thread=True, group="silence", exit_on_error=False)
    def _write_silence(self, request, path: str) -> None:
        from mltop.probes.recording.silences import SilenceBook

        words, error = None, None
        try:
            s = SilenceBook(path).add(request.code, request.target, time.time() + request.seconds, request.reason)
            words = f"{s.code} silenced for {s.target_words} until {local_time(s.until)}"
        except Exception as exc:  # a locked or read-only file: said, nothing silenced
            error = f"could not silence {request.code}: {type(exc).__name__}: {exc}"
        self.post_message(self.Silenced(words, error))

    def on_diagnostics_screen_silenced(self, message: Silenced) -> None:
        message.stop()
        if message.error:
            self.notify(message.error, severity="error", timeout=8, markup=False)
            return
        self.notify(message.words or "silenced", timeout=4, markup=False)
        self.action_refresh()
