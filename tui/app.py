"""MltopApp: samples in a thread worker, keeps the latest snapshot and history, and routes keys to screens.

For the screens of later issues (diagnostics, in-container actions, report) the app exposes:

    app.snapshot                 the latest Snapshot (None before the first sweep)
    app.previous_snapshot        the sweep before it (what `run_doctor(previous=)` wants: rates, rising counters)
    app.doctor_result            the latest background doctor run over all containers (None before the first)
    app.action_log               the session's ActionLog: every in-container action run, for `r` reports and the doctor
    app.source                   where snapshots come from (probes.source.SnapshotSource): the live sampler by
                                 default, built snapshots in tests, a recording in replay
    app.sampler                  the live Sampler (None until the first sweep started, or when the source is not live)
    app.history                  History: recent values per container and GPU
    app.recorder                 the flight recorder of this dashboard (probes.recording.Recorder), None when not
                                 recording; app.recording_store reads its file (or the replayed one): events
    app.selected_container_id    the container under the cursor, or the one the open screen is about
    app.selected_process_pid     the host PID under the cursor in the processes pane
    app.new_engine()             a fresh probes.engine.Engine on the same endpoint, for a worker of yours
    app.act(do)                  run an act on a container (`do()` -> diagnostics.actions.acts.ActOutcome) in a
                                 worker; its outcome is shown, kept in app.acts and recorded in the timeline
    app.push_container_screen(kind)

Screens read these through one typed protocol, app_api.MltopApi (`self.mltop`), never `getattr(self.app, …)`.
Constructing an app changes nothing in the process: the real dashboard's start-up tuning (collector, open-file
limit, the first sweep before Textual starts) is made by `mltop`'s factory, tui/cli/dashboard.py.

Whether an in-container action may run is the action registry's answer for the app's source
(diagnostics.actions.refusal): a recording or a Prometheus says it cannot act, and every action, the
background device check included, is refused with the reason.

A screen with a `show_snapshot(snapshot)` method is handed every new snapshot while it is on top.
`push_container_screen(kind)` imports `mltop.tui.<module>` named in CONTAINER_SCREENS on first use (so the
diagnostics and action code loads only when a key asks for it) and pushes
`<Class>(kind=kind, container_id=app.selected_container_id)`, replacing an action screen already on top.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable

from textual import work
from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen

from mltop.diagnostics.actions.registry import ACTIONS, BACKGROUND_DEVICE_CHECK, BY_NAME, ContainerWork, refusal
from mltop.probes.history import History
from mltop.probes.model import Snapshot
from mltop.probes.source import SnapshotSource

from .format import HISTORY_SECONDS
from .replay import REPLAY_BINDINGS, TIMELINE_BINDING, ReplayMixin
from .sanitize import printable
from .screens.dashboard import DashboardScreen
from .screens.help import HelpScreen
from .startup import GC_SETTLE_S, StartupTuning

log = logging.getLogger(__name__)

# The background doctor behind the row markers. A run reads every container's log (~7 ms a container,
# mostly engine requests), so the pause after a run grows with its cost: it takes at most ~1/DOCTOR_COST_SHARE
# of the time. At 50 it alone was 2 % of a core, the whole budget at 100 containers (issue 11); at 200, a
# run every ~2 min at 100 containers. A crash or an OOM kill shows in its row's status at once anyway.
DOCTOR_INTERVAL_S = 10.0
DOCTOR_FIRST_DELAY_S = 1.0  # after the first full frame, not competing with it
DOCTOR_COST_SHARE = 200
FIRST_RATE_DELAY_S = 0.2  # rates need two sweeps: take the second one soon after the first


@dataclass(frozen=True)
class ContainerScreenSpec:
    module: str  # under mltop.tui
    screen_class: str
    title: str


CONTAINER_SCREENS: dict[str, ContainerScreenSpec] = {
    "diagnostics": ContainerScreenSpec("screens.diagnostics", "DiagnosticsScreen", "Diagnostics"),
    **{a.name: ContainerScreenSpec("screens.actions", "ActionScreen", a.title) for a in ACTIONS},
    "report": ContainerScreenSpec("screens.report", "ReportScreen", "Incident report"),
}


def _process_age_s() -> float | None:
    """Seconds since this process started, so "started in" counts the imports too.

    From the kernel's start time of this process and its uptime, both counted from boot in 10 ms ticks.
    (psutil's create_time adds the boot time, which /proc/stat gives in whole seconds: up to a second off.)"""
    try:
        with open("/proc/self/stat", "rb") as f:
            data = f.read()
        start_ticks = int(data[data.rfind(b")") + 2:].split()[19])
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        log.debug("process start time unknown", exc_info=True)
        return None


class MltopApp(ReplayMixin, App):
    """The live dashboard."""

    CSS_PATH = Path(__file__).with_name("mltop.tcss")  # absolute, so subclasses elsewhere find it
    TITLE = "mltop"

    BINDINGS = [
        Binding("q", "quit", "Quit", id="mltop.quit"),
        Binding("question_mark", "help", "Help", key_display="?", id="mltop.help"),
        Binding("d", "container_screen('diagnostics')", "Diagnose", id="mltop.diagnostics"),
        Binding("space", "toggle_pause", "Pause", id="mltop.pause"),
        *(Binding(a.key, f"container_screen('{a.name}')", a.key_help, show=False, id=f"mltop.{a.name}")
          for a in ACTIONS),
        Binding("r", "container_screen('report')", "Report", show=False, id="mltop.report"),
        TIMELINE_BINDING,
        *REPLAY_BINDINGS,
    ]

    class Diagnosed(Message):
        """A background doctor run finished (in its thread); handled on the event loop."""

        def __init__(self, result, seconds: float):
            super().__init__()
            self.result = result
            self.seconds = seconds

    class Sampled(Message):
        """A sweep finished (in the sampling thread); handled on the event loop."""

        def __init__(self, snapshot: Snapshot | None, error: str | None, seconds: float):
            super().__init__()
            self.snapshot = snapshot
            self.error = error
            self.seconds = seconds

    def __init__(self, docker_host: str | None = None, nvml_lib: str | None = None, nvml: bool = True,
                 interval: float = 1.0, processes: bool = True, source: SnapshotSource | None = None,
                 record: str | None = None, tuning: StartupTuning | None = None, sysfs_root: str = "/sys",
                 silences: str | None = None):
        self._launch_age_s = _process_age_s()
        self._created_at = time.perf_counter()
        self._tuning = tuning  # the real dashboard's (startup.py), settled at the first full frame
        super().__init__()
        from mltop.probes.engine import docker_host_in_use

        self._docker_host_arg = docker_host
        self.docker_host = docker_host_in_use(docker_host)
        self.nvml_lib = nvml_lib
        self.nvml = nvml
        self.processes = processes
        self.sysfs_root = sysfs_root
        self.interval = max(float(interval), 0.25)
        self.paused = False
        self.snapshot: Snapshot | None = None
        self.previous_snapshot: Snapshot | None = None
        from mltop.probes.source import LiveSource

        self.source: SnapshotSource = source if source is not None else LiveSource(self._make_sampler)
        self._first_sweep: Future | None = None  # start_first_sweep()'s, taken by the first _sample
        from mltop.diagnostics.actions import ActionLog

        self.action_log = ActionLog()
        self.acts: list = []  # the ActOutcome of every act of this session (`k`), oldest first
        self.doctor_result = None  # diagnostics.doctor.DoctorResult
        self.finding_severities: dict[str | None, str] = {}  # its worst_by_container(), for the row markers
        self._doctor_engine = None
        self._doctor_judged: Snapshot | None = None
        self._doctor_armed = False
        self._device_checks = None  # diagnostics.doctor.BackgroundDeviceChecks, made at the first doctor run
        self._device_engine = None
        self.history = History(max(int(HISTORY_SECONDS / self.interval), 60))
        self.notes: tuple[str, ...] = ()  # problems of mltop itself, shown in the header
        self.sweeps = 0
        self.last_sweep_s: float | None = None
        self.first_frame_s: float | None = None  # launch to the first frame with every row filled
        self._poll_timer = None
        self._rec_notes: tuple[str, ...] = ()
        self._stalled = False
        self._record_path = record  # the flight recorder's file while live (None: not recording)
        self.silences_path = silences or record  # the host's silences (probes.recording.silences), None: none
        if not self.source.live:
            # a replay starts still (space plays); a source that follows the present (a fleet host read from
            # Prometheus) starts playing
            self.paused = not getattr(self.source, "follows_present", False)

    def get_default_screen(self) -> Screen:
        return DashboardScreen()

    def start_first_sweep(self, wait_s: float) -> None:
        """Take the first live sweep now, in its own thread, and wait up to `wait_s` for it (before Textual
        starts: see startup.FIRST_SWEEP_WAIT_S). Only the real dashboard's factory calls this."""
        if not self.source.live or self._first_sweep is not None:
            return
        self._first_sweep = Future()
        threading.Thread(target=self._sweep_into, args=(self._first_sweep,), name="mltop-first-sweep",
                         daemon=True).start()
        wait([self._first_sweep], timeout=wait_s)

    # -- sampling -------------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.start_recorder(self._record_path)
        self._sample()
        if self._tuning is not None:
            self.set_timer(GC_SETTLE_S, self._settle_gc)  # when no full frame comes (an engine down)

    @property
    def sampler(self):
        """The live Sampler, once the first sweep made it (None for a source without one)."""
        return getattr(self.source, "sampler", None)  # LiveSource's; other sources have none

    def on_unmount(self) -> None:
        self._settle_gc(running=False)  # an app that ends before its first frame leaves the collector as it was
        self.stop_recorder()
        self.source.close()
        for engine in (self._doctor_engine, self._device_engine):
            if engine is not None:
                engine.reset()

    def _make_sampler(self):
        from mltop.probes.sampler import ProbeOptions, Sampler

        options = ProbeOptions(docker_host=self._docker_host_arg, nvml=self.nvml, nvml_lib=self.nvml_lib,
                               processes=self.processes, inspect_in_background=True, sysfs_root=self.sysfs_root)
        try:
            sampler = Sampler(options)
            sampler.catalog.hold_background_inspections()  # until the first frame is painted (_sampled_once)
            return sampler
        except Exception as exc:  # a broken GPU probe must not take the container view with it
            log.warning("the GPU probe failed to start", exc_info=True)
            self.notes = (f"the GPU probe failed to start ({type(exc).__name__}: {exc}); GPUs are not shown",)
            return Sampler(ProbeOptions(docker_host=self._docker_host_arg, nvml=False,
                                        processes=self.processes, sysfs_root=self.sysfs_root))

    def _sweep_into(self, future: Future) -> None:
        try:
            future.set_result(self.source.latest())
        except BaseException as exc:  # handed to _sample
            future.set_exception(exc)

    @work(thread=True, exclusive=True, group="sampling", exit_on_error=False)
    def _sample(self) -> None:
        started = time.perf_counter()
        snapshot, error = None, None
        first, self._first_sweep = self._first_sweep, None
        try:
            snapshot = first.result() if first is not None else self.source.latest()
            if not self.source.live:
                self.replay_prepare()
        except Exception as exc:  # a probe bug: show it and keep polling
            log.warning("sampling failed", exc_info=True)
            error = f"sampling failed: {type(exc).__name__}: {exc}"
        self.post_message(self.Sampled(snapshot, error, time.perf_counter() - started))

    def on_mltop_app_sampled(self, message: Sampled) -> None:
        self.last_sweep_s = message.seconds
        if message.snapshot is not None:
            self.previous_snapshot, self.snapshot = self.snapshot, message.snapshot
            self.sweeps += 1
            if not self.source.live:
                self.replay_apply()
            elif self.recorder is not None:
                self.recorder.record(message.snapshot)
            self.history.record(message.snapshot)
        base_notes = tuple(n for n in self.notes if not n.startswith("sampling failed") and n not in self._rec_notes)
        self._rec_notes = self.recorder_notes()
        self.notes = base_notes + self._rec_notes + ((message.error,) if message.error else ())
        self._show(self.snapshot)
        if self.sweeps <= 1:
            self.call_after_refresh(self._sampled_once)
        if self.first_frame_s is None and self._rows_filled():
            self.call_after_refresh(self._first_full_frame)
        delay = FIRST_RATE_DELAY_S if self.sweeps == 1 and self.source.live else self.interval
        if self._poll_timer is not None:
            self._poll_timer.stop()  # a replay key sampled out of turn: keep one chain
        self._poll_timer = self.set_timer(delay, self._poll, name="mltop-poll")
        if not self._doctor_armed and self.sweeps >= 2 and self.source.live:
            self._doctor_armed = True
            self.set_timer(DOCTOR_FIRST_DELAY_S, self._doctor_poll, name="mltop-doctor")

    def _sampled_once(self) -> None:
        """The first frame is on the screen: the inspections held over it may start."""
        catalog = getattr(self.sampler, "catalog", None)
        if catalog is not None:
            catalog.release_background_inspections()

    # -- the background doctor (row markers) ------------------------------------------------------------

    def _doctor_poll(self) -> None:
        # Its own chain, like sampling: run -> message -> timer. Nothing new to judge while paused or while
        # the engine gives no new snapshot.
        snapshot = self.snapshot
        pending = snapshot is not None and any(c.config_pending and not c.config_error for c in snapshot.containers)
        if pending:  # a dense host's first seconds: judge configurations once read (one that failed: not judged)
            self.set_timer(DOCTOR_FIRST_DELAY_S, self._doctor_poll, name="mltop-doctor")
        elif self.paused or snapshot is None or snapshot is self._doctor_judged:
            self.set_timer(DOCTOR_INTERVAL_S, self._doctor_poll, name="mltop-doctor")
        else:
            self._doctor_judged = snapshot
            self._diagnose(snapshot, self.previous_snapshot)
            if refusal(BACKGROUND_DEVICE_CHECK, self.source) is None and self.device_checks.due(snapshot):
                self._check_devices(snapshot)

    @property
    def device_checks(self):
        """The device check without a key press: once per container start, for GPU-looking containers, one at
        a time, in a worker; nothing under MLTOP_NO_EXEC=1."""
        if self._device_checks is None:
            from mltop.diagnostics.doctor import BackgroundDeviceChecks

            self._device_checks = BackgroundDeviceChecks(self.action_log)
        return self._device_checks

    @work(thread=True, exclusive=False, group="device-check", exit_on_error=False)
    def _check_devices(self, snapshot: Snapshot) -> None:
        # Its result joins action_log, where the next doctor run reads it.
        if refusal(BACKGROUND_DEVICE_CHECK, self.source) is not None:
            return  # asked again here: whoever calls, a source that cannot act never gets an exec
        try:
            if self._device_engine is None:
                self._device_engine = self.new_engine()
            self.device_checks.run_one(snapshot, self._device_engine)
        except Exception as exc:
            self.log.error(f"background device check failed: {type(exc).__name__}: {exc}")

    # (a description, or Textual names the worker by the repr() of both snapshots: every container, each run)
    @work(thread=True, exclusive=True, group="doctor", exit_on_error=False, description="background doctor")
    def _diagnose(self, snapshot: Snapshot, previous: Snapshot | None) -> None:
        from mltop.diagnostics.doctor import run_doctor

        started = time.perf_counter()
        result = None
        try:
            if self._doctor_engine is None:
                self._doctor_engine = self.new_engine()
            # Device checks the user ran (`f`) feed the findings; the background never starts one itself.
            result = run_doctor(snapshot, self._doctor_engine, previous=previous, action_log=self.action_log,
                                silences=self.read_silences())
        except Exception:  # run_doctor does not raise; an engine that cannot be made might
            log.warning("background doctor failed", exc_info=True)
        self.post_message(self.Diagnosed(result, time.perf_counter() - started))

    def on_mltop_app_diagnosed(self, message: Diagnosed) -> None:
        if message.result is not None:
            self.doctor_result = message.result
            self.finding_severities = message.result.worst_by_container()
            if self.recorder is not None:
                self.recorder.record_findings(message.result.findings)
            show = getattr(self._top_screen(), "show_findings", None)
            if show is not None:
                show()
        delay = max(DOCTOR_INTERVAL_S, message.seconds * DOCTOR_COST_SHARE)
        self.set_timer(delay, self._doctor_poll, name="mltop-doctor")

    def _poll(self) -> None:
        # One chain of sweep -> message -> timer -> sweep, so polls never overlap. While paused the chain
        # stops here, and resuming restarts it.
        if self.paused:
            self._stalled = True
        else:
            if not self.source.live:
                self._recording.step(1)  # playing; at the end it shows the last sweep until more are recorded
            self._sample()

    def _top_screen(self):
        """The screen on top, or None while the app shuts down (its screens and their widgets going, a sweep's
        message still due)."""
        if not self.is_running:
            return None
        try:
            return self.screen
        except ScreenStackError:
            return None

    def _show(self, snapshot: Snapshot | None) -> None:
        """Hand the snapshot to the screen on top, if it shows snapshots; hidden screens catch up later."""
        show = getattr(self._top_screen(), "show_snapshot", None)
        if show is not None:
            show(snapshot)

    def _rows_filled(self) -> bool:
        snapshot = self.snapshot
        if snapshot is None or not isinstance(self._top_screen(), DashboardScreen):
            return False
        return all(c.cpu_percent is not None for c in snapshot.containers if c.running)

    def _first_full_frame(self) -> None:
        if self.first_frame_s is not None:
            return
        since_created = time.perf_counter() - self._created_at
        self.first_frame_s = since_created + (self._launch_age_s or 0.0)
        self.log.info(
            f"mltop started in {self.first_frame_s * 1000:.0f} ms "
            f"(first frame with every row filled; {since_created * 1000:.0f} ms after the app was created)"
        )
        self._settle_gc()

    def _settle_gc(self, running: bool = True) -> None:
        """The start-up tuning's collector back on, once (`running`: the app goes on); nothing without one."""
        if self._tuning is not None:
            self._tuning.settle(running)

    # -- what screens read ----------------------------------------------------------------------------

    @property
    def selected_container_id(self) -> str | None:
        """The container the user is looking at: the open screen's, else the one under the cursor."""
        for screen in reversed(self.screen_stack):
            container_id = getattr(screen, "container_id", None)
            if container_id:
                return container_id
            if isinstance(screen, DashboardScreen):
                return screen.selected_container_id
        return None

    @property
    def selected_process_pid(self) -> int | None:
        for screen in self.screen_stack:
            if isinstance(screen, DashboardScreen):
                return screen.selected_process_pid
        return None

    def read_silences(self) -> list:
        """The host's silences and GPU health marks (for a worker thread: it reads SQLite); none live without a
        file, or in replay and the fleet view, whose recorded findings are shown as they were judged."""
        if self.silences_path is None or not self.source.live:
            return []
        from mltop.probes.recording.silences import SilenceBook

        try:
            return SilenceBook(self.silences_path).all()
        except Exception:
            log.warning("cannot read the silences in %s", self.silences_path, exc_info=True)
            return []

    def new_engine(self):
        """A separate engine connection for a worker (log reads, actions), so it never waits on sampling."""
        from mltop.probes.engine import Engine

        return Engine(self._docker_host_arg)

    # -- navigation -----------------------------------------------------------------------------------

    def push_screen(self, screen, *args, **kwargs):
        # A key pressed right after `q` (typed ahead over SSH) would push a screen into an app that is
        # shutting down; its on_mount then finds no children and the exit prints a traceback.
        if getattr(self, "_exit", False):
            return None
        return super().push_screen(screen, *args, **kwargs)

    def open_detail(self, container_id: str) -> None:
        from .screens.detail import ContainerDetailScreen  # on first use: not on the way to the first frame

        self.push_screen(ContainerDetailScreen(container_id))

    def open_logs(self, container_id: str) -> None:
        from .screens.logs import LogsScreen

        self.push_screen(LogsScreen(container_id))

    def push_container_screen(self, kind: str) -> None:
        """Open the screen of an action on the selected container (see the module docstring)."""
        if self.refuses_action(kind):
            return
        if not self.source.live and kind in ("diagnostics", "report"):
            from .screens.timeline import recorded_screen

            self.push_screen(recorded_screen(kind, self.selected_container_id))
            return
        spec = CONTAINER_SCREENS[kind]
        screen_class = getattr(importlib.import_module(f"mltop.tui.{spec.module}"), spec.screen_class)
        if getattr(self.screen, "kind", None) in CONTAINER_SCREENS:
            # `p` pressed on an nvidia-smi panel switches to py-spy instead of stacking panels
            self.pop_screen()
        self.push_screen(screen_class(kind=kind, container_id=self.selected_container_id))

    def action_container_screen(self, kind: str) -> None:
        self.push_container_screen(kind)

    def refuses_action(self, kind: str | ContainerWork) -> bool:
        """True (and says why) when `kind` is an action (or other container work: a signal, a stop) that needs
        the live container and the source cannot act, or --read-only / --no-exec forbids it: the registry's
        answer (its rules, each piece of work's `reaches`)."""
        why = refusal(kind, self.source) if isinstance(kind, ContainerWork) or kind in BY_NAME else None
        if why:
            self.notify(printable(why), severity="warning", timeout=6, markup=False)  # a host name is the server's
        return bool(why)

    # -- acts on containers (`k`) ----------------------------------------------------------------------

    def act(self, do) -> None:
        """Run `do()` (an act: a signal, a stop; it asks the registry and checks its target itself) in a worker;
        its outcome is shown, kept in `acts` and recorded in the timeline."""
        self._act(do)

    @work(thread=True, exclusive=False, group="acts", exit_on_error=False, description="act on a container")
    def _act(self, do) -> None:
        try:
            outcome = do()
        except Exception as exc:  # an act reports its failures as outcomes; this is a bug of ours
            log.warning("an act failed", exc_info=True)
            self.call_from_thread(self.notify, f"the act failed: {type(exc).__name__}: {exc}", severity="error",
                                  markup=False)
            return
        if outcome is not None:
            self.call_from_thread(self._acted, outcome)

    def _acted(self, outcome) -> None:
        self.acts.append(outcome)
        if self.recorder is not None:
            self.recorder.add_event(outcome.event())
        self.notify(printable(f"{outcome.target}: {outcome.status}. {outcome.message}"), markup=False,
                    severity="information" if outcome.done else "warning", timeout=8)
        if self.source.live and not self.paused:
            self._sample()  # show what came of it now, not at the next tick

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused and self._stalled:
            self._stalled = False
            self._sample()
        self._show(self.snapshot)
        if not self.source.live:
            self.notify("Paused" if self.paused else "Playing: one sweep a refresh", timeout=2)
            return
        self.notify("Paused: press space to resume" if self.paused else "Resumed", timeout=2)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.key_help(self.screen)))

    def key_help(self, screen: Screen) -> list[tuple[str, list[tuple[str, str]]]]:
        """The keys that work on `screen`, this screen's first, then the ones that work everywhere."""
        here: list[tuple[str, str]] = []
        everywhere: list[tuple[str, str]] = []
        for key, node, binding in self._mltop_bindings(screen):
            row = (binding.key_display or self.get_key_display(binding), binding.description)
            (everywhere if node is self else here).append(row)
        return [("This screen", here), ("Everywhere", everywhere)]

    def _mltop_bindings(self, screen: Screen) -> Iterable[tuple[str, object, Binding]]:
        seen = set()
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not (binding.id or "").startswith("mltop.") or binding.id in seen:
                continue
            if binding.id.startswith("mltop.replay.") and self.source.live:
                continue
            seen.add(binding.id)
            yield key, active.node, binding

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every mltop key as a command palette entry, plus Textual's own (theme, keys, screenshot)."""
        for key, node, binding in self._mltop_bindings(screen):
            shown = binding.key_display or self.get_key_display(binding)
            yield SystemCommand(binding.description, f"key {shown}", partial(self.run_action, binding.action, node))
        yield from super().get_system_commands(screen)
