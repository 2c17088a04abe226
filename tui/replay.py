"""Replay in the dashboard: keys that move through a recording, recorded findings, and the recorder of a live
dashboard. MltopApp mixes this in; with a live source the replay keys are hidden and do nothing.

What replay refuses (every in-container action) is not decided here: the recording says it cannot act
(RecordingSource.cannot_act) and the action registry refuses, see MltopApp.refuses_action.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from .format import HISTORY_SECONDS, local_time

if TYPE_CHECKING:
    from textual.app import App

    from mltop.probes.history import History
    from mltop.probes.recording import RecordingSource, RecordingStore
    from mltop.probes.source import SnapshotSource

    _AppBase = App[None]  # what the mixin's methods may use of the app, for the type checker only
else:
    _AppBase = object

REPLAY_BINDINGS = [
    Binding("left_square_bracket", "replay_step(-1)", "Back one sweep", key_display="[", show=False,
            id="mltop.replay.back"),
    Binding("right_square_bracket", "replay_step(1)", "Forward one sweep", key_display="]", show=False,
            id="mltop.replay.forward"),
    Binding("left_curly_bracket", "replay_jump(-60)", "Back one minute", key_display="{", show=False,
            id="mltop.replay.back_minute"),
    Binding("right_curly_bracket", "replay_jump(60)", "Forward one minute", key_display="}", show=False,
            id="mltop.replay.forward_minute"),
    Binding("t", "replay_goto", "Go to a time", show=False, id="mltop.replay.goto"),
]
TIMELINE_BINDING = Binding("e", "timeline", "Events", id="mltop.timeline")

replay_time_text = local_time  # the time the header shows after REPLAY


class RecordedDoctorResult:
    """What the dashboard reads from a doctor run, rebuilt from the findings a recording holds at a time."""

    def __init__(self, findings: list, at: float):
        from mltop.diagnostics.findings import sort_findings

        self.findings = tuple(sort_findings(findings)) if findings else ()
        self.checks_skipped = ()
        self.at = at

    def worst_by_container(self) -> dict:
        from mltop.diagnostics.findings import worst_by_container

        return worst_by_container(self.findings)


class GotoTimeScreen(ModalScreen[str | None]):
    """Asks for a time: 03:12, 2026-11-29T03:12, or 15m (ago)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="mltop.goto.cancel")]

    def __init__(self, first: float, last: float):
        super().__init__()
        self.first, self.last = first, last

    def compose(self) -> ComposeResult:
        yield Static(Text(f"Go to a time between {local_time(self.first)} and "
                          f"{local_time(self.last)}: 03:12, 2026-11-29T03:12:30, or 15m (ago)"),
                     id="goto-label")
        yield Input(placeholder="time", id="goto-input")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.dismiss(message.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ReplayMixin(_AppBase):
    """Replay keys, recorded findings, and the recorder of a live dashboard (methods of MltopApp)."""

    recorder: Any = None
    _reseed = True
    _pending_seed: Any = None
    _pending_findings: Any = None
    _recording_store: Any = None

    if TYPE_CHECKING:  # set by MltopApp
        source: SnapshotSource
        history: History
        doctor_result: Any
        finding_severities: dict[str | None, str]
        _docker_host_arg: str | None

        def _sample(self) -> Any: ...

    @property
    def replaying(self) -> bool:
        return not self.source.live

    @property
    def _recording(self) -> RecordingSource:
        """The replayed recording (only while replaying)."""
        return cast("RecordingSource", self.source)

    @property
    def events_until(self) -> float | None:
        """Events are shown up to this time: in replay, up to the next recorded sweep; live, all of them."""
        return self._recording.horizon if self.replaying else None

    # -- recording while live --------------------------------------------------------------------------

    def start_recorder(self, path: str | None) -> None:
        """Record into `path` while the dashboard is open; a second recorder or a bad path is a header note,
        never a reason to stop. Seeds the graphs with what the recording already holds."""
        if not path or self.replaying:
            return
        from mltop.probes.recording import Recorder, RecorderLocked

        recorder = Recorder(path, docker_host=self._docker_host_arg)
        try:
            recorder.start()
        except RecorderLocked as exc:
            self.recorder_note = f"not recording: {exc}"
            self._seed_from(path)
            return
        self.recorder = recorder
        if not recorder.status.ok:
            self.recorder_note = recorder.status.message
            return
        self._seed_from(path)

    def _seed_from(self, path: str) -> None:
        self._seed_worker(path, time.time())

    @work(thread=True, group="history-seed", exit_on_error=False)
    def _seed_worker(self, path: str, until: float) -> None:
        """Read the graphs' window before `until` from the recording in a thread, then put it before what
        the dashboard sampled meanwhile (the first frame does not wait for it)."""
        from mltop.probes.recording import RecordingStore

        try:
            store = RecordingStore(path)
            _, containers, gpus = store.series(until - HISTORY_SECONDS, until)
        except Exception as exc:  # an unreadable file: graphs start empty, as before
            self.log.warning(f"could not read the recording {path}: {exc}")
            return
        self._recording_store = store
        try:
            self.call_from_thread(self.history.prepend, containers, gpus)
        except RuntimeError:  # the app is shutting down
            pass

    recorder_note: str | None = None

    def recorder_notes(self) -> tuple[str, ...]:
        if self.recorder_note:
            return (self.recorder_note,)
        recorder = self.recorder
        if recorder is not None and recorder.status.state == "error":
            return (recorder.status.message or "recording failed",)
        return ()

    @property
    def recording_store(self) -> RecordingStore | None:
        """The recording to read events from: the one replayed, or the one this dashboard writes."""
        if self.replaying:
            return self._recording.store
        if self._recording_store is None and self.recorder is not None:
            from mltop.probes.recording import RecordingStore

            try:
                self._recording_store = RecordingStore(self.recorder.path)
            except Exception:
                return None
        return self._recording_store

    def add_recorded_history(self, report: dict) -> dict:
        """`r` while live: the recorded timeline and figures of the last minutes, when this dashboard records
        (called from the report's worker thread)."""
        store = self.recording_store
        if store is None:
            return report
        from mltop.diagnostics.report_history import REPORT_WINDOW_S, add_history

        try:
            now = time.time()
            return add_history(report, store, now - REPORT_WINDOW_S, now)
        except Exception as exc:  # a report without history beats no report
            self.log.warning(f"recorded history left out of the report: {exc}")
            return report

    def stop_recorder(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        if self._recording_store is not None and not self.replaying:
            self._recording_store.close()

    # -- replay: run in the sampling thread -------------------------------------------------------------

    def replay_prepare(self) -> None:
        """Before a recorded snapshot is handed over: the graphs' series up to it (after a jump) and the
        findings standing at its time."""
        source = self._recording
        t = source.time
        if self._reseed:
            self._reseed = False
            _, containers, gpus = source.store.series(t - HISTORY_SECONDS, t - 0.0005)
            self._pending_seed = (containers, gpus)
        self._pending_findings = RecordedDoctorResult(source.findings(), t)

    def replay_apply(self) -> None:
        """On the event loop, before the snapshot is recorded into the History."""
        seed, self._pending_seed = self._pending_seed, None
        if seed is not None:
            self.history.seed(*seed)
        result, self._pending_findings = self._pending_findings, None
        if result is not None:
            self.doctor_result = result
            self.finding_severities = result.worst_by_container()

    # -- keys -----------------------------------------------------------------------------------------

    def _replay_moved(self, moved: bool, where: str) -> None:
        if not moved:
            self.notify(f"Already at the {where} of the recording", timeout=2)
            return
        self._reseed = True
        self._sample()

    def action_replay_step(self, sweeps: int) -> None:
        if self.replaying:
            moved = self._recording.step(sweeps)
            self._replay_moved(moved, "end" if sweeps > 0 else "start")

    def action_replay_jump(self, seconds: float) -> None:
        if self.replaying:
            moved = self._recording.jump(seconds)
            self._replay_moved(moved, "end" if seconds > 0 else "start")

    def action_replay_goto(self) -> None:
        if not self.replaying:
            return
        source = self._recording

        def go(answer: str | None) -> None:
            if not answer:
                return
            from mltop.probes.recording import parse_when

            try:
                when = parse_when(answer, now=source.last_time if answer.strip()[-1:].isalpha() else None)
            except ValueError as err:
                self.notify(str(err), severity="error", markup=False)
                return
            source.seek(when)
            self._replay_moved(True, "end")

        self.push_screen(GotoTimeScreen(source.first_time, source.last_time), go)

    def replay_seek(self, t: float) -> None:
        """Move the cursor to `t` and show it (the timeline's enter)."""
        if self.replaying:
            self._recording.seek(t)
            self._replay_moved(True, "end")

    def action_timeline(self) -> None:
        from .screens.timeline import TimelineScreen

        if isinstance(self.screen, TimelineScreen):
            return
        self.push_screen(TimelineScreen())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action.startswith("replay_") and not self.replaying:
            return False  # hidden and inert on a live dashboard
        return True
