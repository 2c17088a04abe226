"""MltopApi: what screens read from the dashboard app and ask of it, as one typed protocol.

A screen declares `mltop = mltop_app()` and reads `self.mltop.snapshot`, `self.mltop.new_engine()`, … instead
of `getattr(self.app, …)`: a misspelt name is a type error, not a silent default. MltopApp (app.py) is the one
implementation; this module imports neither it nor Textual's App at run time, so screens never import the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from mltop.diagnostics.actions import ActionLog
    from mltop.probes.history import History
    from mltop.probes.model import Snapshot
    from mltop.probes.recording import Recorder, RecordingStore
    from mltop.probes.source import SnapshotSource


class MltopApi(Protocol):
    """The dashboard app as its screens see it (see app.py's module docstring for each name)."""

    @property
    def snapshot(self) -> Snapshot | None: ...
    @property
    def previous_snapshot(self) -> Snapshot | None: ...
    @property
    def doctor_result(self) -> Any: ...  # a DoctorResult, or replay's RecordedDoctorResult: findings, at
    @property
    def finding_severities(self) -> dict[str | None, str]: ...
    @property
    def action_log(self) -> ActionLog: ...
    @property
    def source(self) -> SnapshotSource: ...
    @property
    def history(self) -> History: ...
    @property
    def interval(self) -> float: ...
    @property
    def docker_host(self) -> str: ...
    @property
    def paused(self) -> bool: ...
    @property
    def notes(self) -> tuple[str, ...]: ...
    @property
    def recording_store(self) -> RecordingStore | None: ...
    @property
    def recorder(self) -> Recorder | None: ...  # the flight recorder of a live dashboard (its status for the header)
    @property
    def events_until(self) -> float | None: ...  # events shown up to this time: None live, the horizon in replay
    @property
    def selected_process_pid(self) -> int | None: ...

    @property
    def silences_path(self) -> str | None: ...  # where the host's silences are (the recording), None: nowhere

    def read_silences(self) -> list: ...  # the host's silences (from a worker thread); none in replay
    def new_engine(self) -> Any: ...  # a probes.engine.Engine of its own, for a worker
    def act(self, do: Any) -> None: ...  # run an act (diagnostics.actions.acts) in a worker, record its outcome
    def refuses_action(self, kind: Any) -> bool: ...  # the registry refuses it here (and the user was told)
    def open_detail(self, container_id: str) -> None: ...
    def open_logs(self, container_id: str) -> None: ...
    def replay_seek(self, t: float) -> None: ...
    def add_recorded_history(self, report: dict) -> dict: ...


class mltop_app:
    """A class attribute for screens: `self.mltop` is the running app, typed as MltopApi.

    Like Textual's `getters.app(MyApp)` without importing the app class (which imports the screens)."""

    def __get__(self, node: Any, owner: type | None = None) -> MltopApi:
        return cast(MltopApi, node.app)
