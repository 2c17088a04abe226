"""The flight recorder: what it stores, what replay shows, and the events of real containers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from builders import GIB, MIB, container, container_id, gpu_workload, recent_start, replace, snapshot
from conftest import wait_for

from mltop.diagnostics.findings import Finding
from mltop.probes.recording import (Event, Recorder, RecorderLocked, RecordingSource, RecordingStore,
                                    parse_duration, parse_size, parse_when)
from mltop.probes.recording import retention

PREFIX = f"mltop-rec-{uuid.uuid4().hex[:6]}"
T0 = recent_start()  # synthetic recordings start a day ago, on the hour


def synthetic(path: str, sweeps: int = 120, step_s: float = 5.0, containers: int = 3, start: float = T0,
              events: bool = True) -> Recorder:
    """A recording of `sweeps` sweeps: a trainer whose memory climbs to its limit, then an OOM event."""
    # Retention off while filling: synthetic times are hours old and would be thinned as they arrive.
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    limit = 4 * GIB
    for i in range(sweeps):
        trainer, gpu = gpu_workload("trainer", memory_bytes=(1 + i % 7) * GIB, sm_percent=float(i % 100))
        trainer = replace(trainer, memory_bytes=int(limit * (i + 1) / sweeps), memory_limit_bytes=limit,
                          cpu_percent=float(i))
        others = [container(f"svc-{k}", cpu_percent=float(k), memory_bytes=(k + 1) * 100 * MIB)
                  for k in range(containers - 1)]
        rec.record(snapshot([trainer, *others], [gpu], taken_at=start + i * step_s, interval_s=step_s))
        if i % 100 == 99:
            rec.flush()  # faster than any sampler: keep the queue from dropping the oldest
    if events:
        rec.add_event(Event(start + (sweeps - 1) * step_s, "engine", "oom", container_id=container_id("trainer"),
                            container="trainer"))
        rec.add_event(Event(start + (sweeps - 1) * step_s + 0.1, "engine", "die",
                            container_id=container_id("trainer"), container="trainer", detail={"exit_code": 137}))
    rec.flush()
    return rec


# --------------------------------------------------------------------------- the store


def test_replay_rebuilds_the_recorded_snapshot(tmp_path):
    path = str(tmp_path / "h.db")
    synthetic(path, sweeps=20).close()
    source = RecordingSource(path)
    assert source.live is False
    last = source.latest()
    assert last.taken_at == pytest.approx(T0 + 19 * 5)
    trainer = last.container("trainer")
    assert trainer.memory_limit_bytes == 4 * GIB
    assert trainer.memory_bytes == pytest.approx(4 * GIB, rel=1e-3)
    assert trainer.cpu_percent == 19.0
    assert trainer.gpus[0].memory_bytes == (1 + 19 % 7) * GIB and trainer.gpus[0].sm_percent == 19.0
    assert last.gpus[0].processes[0].container_name == "trainer"  # attribution survives
    assert {c.name for c in last.containers} == {"trainer", "svc-0", "svc-1"}
    assert source.step(-1) and source.latest().container("trainer").cpu_percent == 18.0
    assert source.jump(-60) and source.time == pytest.approx(T0 + 6 * 5)
    assert source.at(T0 + 2.5).taken_at == pytest.approx(T0)  # the sweep at or before
    assert [s.taken_at for s in source.range(T0, T0 + 10)] == [T0, T0 + 5, T0 + 10]


def test_second_recorder_on_the_same_file_refuses(tmp_path):
    path = str(tmp_path / "h.db")
    first = Recorder(path, watch_engine=False).start()
    try:
        with pytest.raises(RecorderLocked, match="already recording into"):
            Recorder(path, watch_engine=False).start()
    finally:
        first.close()
    Recorder(path, watch_engine=False).start().close()  # released on close


def test_read_only_path_is_a_status_not_a_crash(tmp_path):
    # /proc takes no new files, even from root: what a read-only mount looks like to the recorder.
    rec = Recorder("/proc/mltop-no-such-dir/history.db", watch_engine=False).start()
    assert rec.status.state == "error"
    assert "/proc/mltop-no-such-dir/history.db" in rec.status.message
    rec.record(snapshot([container("a")]))  # does nothing, raises nothing
    rec.close()


def test_full_disk_is_reported_and_recording_resumes(tmp_path):
    path = str(tmp_path / "h.db")
    rec = Recorder(path, watch_engine=False).start()
    rec.record(snapshot([container("a")], taken_at=T0))
    rec.flush()
    # SQLite's own page limit is a full disk as far as the writer can tell.
    rec._db.execute(f"PRAGMA max_page_count={rec._db.execute('PRAGMA page_count').fetchone()[0]}")
    many = [container(f"c{i}", cpu_percent=float(i)) for i in range(400)]
    rec.record(snapshot(many, taken_at=T0 + 1))
    rec.flush()
    assert rec.status.state == "error" and "disk full" in rec.status.message
    rec._db.execute("PRAGMA max_page_count=1073741823")
    rec.record(snapshot([container("a")], taken_at=T0 + 2))
    rec.flush()
    assert rec.status.ok
    rec.close()
    assert [round(t / 1000) for t in RecordingStore(path).times] == [round(T0), round(T0 + 2)]


def test_findings_appearing_and_clearing_are_recorded_once_each(tmp_path):
    path = str(tmp_path / "h.db")
    rec = Recorder(path, watch_engine=False).start()
    shm = Finding("shm.too_small", "warning", "trainer", "/dev/shm is 64 MiB", ("shm 64M — inspect",), "--shm-size")
    rec.record_findings([], t=T0)
    rec.record_findings([shm], t=T0 + 1)
    rec.record_findings([shm], t=T0 + 2)  # still there: nothing new
    rec.record_findings([], t=T0 + 3)
    rec.flush()
    rec.close()
    store = RecordingStore(path)
    found = [(e.kind, e.code, e.t) for e in store.events() if e.source == "finding"]
    assert found == [("appeared", "shm.too_small", T0 + 1), ("cleared", "shm.too_small", T0 + 3)]
    assert [f.code for f in store.findings_at(T0 + 2)] == ["shm.too_small"]
    assert store.findings_at(T0 + 2)[0].evidence == ("shm 64M — inspect",)
    assert store.findings_at(T0 + 3) == []


def test_a_churning_recording_stays_within_its_cap_between_retention_passes(tmp_path):
    """The size trim leaves room for what the recording grows until the next pass, and the WAL is checkpointed
    and cut back beside a small cap: a node where containers come and go (each new one a new config to keep)
    stays under --max-size between passes, not only right after one (a soak at a 5 MB cap read 5.6 MB of
    data and 13.8 MB with the WAL)."""
    path = str(tmp_path / "h.db")
    cap = 1 << 20
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf"), max_bytes=cap).start()
    db = rec._db
    t0, seen = time.time() - 600, []
    try:
        for i in range(600):
            command = ("python", "train.py", f"--run={i}", "x" * 300)
            live = [container(f"job-{i}-{k}", config_overrides={"command": command})
                    for k in range(3)]  # three new containers a sweep: new names and configs to keep
            rec.record(snapshot(live, taken_at=t0 + i))
            if i % 50 == 49:
                rec.flush()
                seen.append((retention.used_bytes(db), os.path.getsize(f"{path}-wal")))
                rec.enforce_retention(int((t0 + i) * 1000))
    finally:
        rec.close()
    before_passes = seen[3:]  # once two passes have measured the growth between them
    assert seen[1][0] - seen[0][0] > cap // 8, seen  # (it grows by a good part of the cap between passes)
    assert all(used <= cap for used, _ in before_passes), before_passes
    assert all(wal <= 2 * (256 << 10) for _, wal in before_passes), before_passes  # cut back after checkpoints


def test_retention_thins_then_trims_to_the_size_limit(tmp_path):
    path = str(tmp_path / "h.db")
    rec = synthetic(path, sweeps=2000, step_s=5.0, containers=20, events=False)
    db = rec._db
    before = retention.used_bytes(db)
    now_ms = int((T0 + 2000 * 5) * 1000)
    rec.retention_s, rec.max_bytes = 10 * 86400, 1 << 40
    # Older than an hour: one sweep a minute.
    rec.enforce_retention(now_ms)
    times = [t for (t,) in db.execute("SELECT t FROM sweeps ORDER BY t")]
    edge = (now_ms - 3600_000) // 60_000 * 60_000  # tiers cut on whole minutes
    old = [t for t in times if t < edge]
    minutes = [t // 60_000 for t in old]
    assert old and len(minutes) == len(set(minutes))  # at most one sweep in each minute
    # Consolidated, not just dropped: the minute's peak memory and mean CPU (the trainer climbs steadily).
    store = RecordingStore(path)
    first = store.snapshot(old[1]).container("trainer")
    raw = [T0 + i * 5 for i in range(2000) if (T0 + i * 5) * 1000 // 60_000 == old[1] // 60_000]
    assert first.memory_bytes == pytest.approx(4 * GIB * (round((raw[-1] - T0) / 5) + 1) / 2000, rel=1e-3)
    assert first.cpu_percent == pytest.approx(sum((t - T0) / 5 for t in raw) / len(raw), abs=0.01)
    store.close()
    recent = [t for t in times if t >= now_ms - 3600_000]
    assert len(recent) >= 700  # the last hour untouched
    # Then the size: under the limit, the newest kept.
    limit = before // 4
    rec.max_bytes = limit
    rec.enforce_retention(now_ms)
    assert retention.used_bytes(db) <= limit
    assert os.path.getsize(path) <= limit * 1.5  # pages handed back (plus the WAL's own file)
    assert db.execute("SELECT MAX(t) FROM sweeps").fetchone()[0] == times[-1]
    rec.close()
    assert RecordingSource(path).latest().container("trainer") is not None


def test_parsers():
    assert parse_duration("2h") == 7200 and parse_duration("7d") == 7 * 86400
    assert parse_size("500MB") == 500_000_000 and parse_size("1GiB") == 1 << 30
    assert parse_when("15m", now=1000.0 + 900) == 1000.0
    with pytest.raises(ValueError):
        parse_when("yesterday-ish")


# --------------------------------------------------------------------------- replay in the dashboard


async def test_replay_keys_move_through_recorded_values(tmp_path):
    from mltop.tui.app import MltopApp
    from mltop.tui.screens.dashboard import DashboardScreen
    from mltop.tui.widgets.header import StatusHeader
    from mltop.tui.replay import replay_time_text
    from mltop.tui.screens.timeline import RecordedDiagnosticsScreen, TimelineScreen

    path = str(tmp_path / "h.db")
    rec = synthetic(path, sweeps=60, step_s=5.0)
    shm = Finding("shm.too_small", "warning", "trainer", "/dev/shm is 64 MiB", ("shm 64M",), "--shm-size")
    rec.record_findings([shm], t=T0 + 100)
    rec.flush()
    rec.close()
    app = MltopApp(nvml=False, source=RecordingSource(path, at=T0 + 50))

    def shown_cpu() -> str:
        table = app.screen.query_one("#containers")
        return table.shown_text(container_id("trainer"), "cpu")

    def header() -> str:
        return app.screen.query_one(StatusHeader).plain

    async with app.run_test(size=(140, 40)) as pilot:
        from test_tui import until

        await until(pilot, lambda: app.snapshot is not None and "REPLAY" in header(), what="first frame")
        assert isinstance(app.screen, DashboardScreen)
        assert replay_time_text(T0 + 50) in header()
        assert shown_cpu().strip().startswith("10")
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: replay_time_text(T0 + 55) in header(), what="one sweep forward")
        assert shown_cpu().strip().startswith("11")
        await pilot.press("right_curly_bracket")
        await until(pilot, lambda: replay_time_text(T0 + 115) in header(), what="one minute forward")
        assert app.history.container(container_id("trainer"), "cpu_percent")[-3:] == [21.0, 22.0, 23.0]
        assert app.finding_severities.get("trainer") == "warning"  # recorded finding standing at that time
        await pilot.press("left_curly_bracket", "left_square_bracket")
        await until(pilot, lambda: replay_time_text(T0 + 50) in header(), what="back again")
        assert app.finding_severities.get("trainer") is None  # not yet appeared at that time
        await pilot.press("t")
        await until(pilot, lambda: app.screen.query_one("#goto-input").has_focus, what="the time prompt")
        await pilot.press(*time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(T0 + 200)), "enter")
        await until(pilot, lambda: replay_time_text(T0 + 200) in header(), what="go to a time")
        await pilot.press("space")
        await until(pilot, lambda: replay_time_text(T0 + 210) in header(), timeout=10, what="playing")
        await pilot.press("space")
        await pilot.press("p")  # an in-container action: refused in replay
        await pilot.pause(0.2)
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, TimelineScreen), what="the timeline")
        assert [e.kind for e in app.screen.shown if e.source != "mltop"] == ["die", "oom", "appeared"]
        await pilot.press("slash", *"trainer", "enter")  # filter: the trainer's events only, newest first
        await until(pilot, lambda: len(app.screen.shown) == 3, what="the filter")
        await pilot.press("enter")  # the die event: the trainer at that time
        await until(pilot, lambda: getattr(app.screen, "container_id", None) == container_id("trainer"),
                    what="the detail")
        assert replay_time_text(T0 + 59 * 5) == replay_time_text(app.source.time)
        events = app.screen.query_one("#detail-events")
        await until(pilot, lambda: "exit code 137" in str(events.render()), what="events under the graphs")
        await pilot.press("d")  # the trainer's findings as recorded at that time
        await until(pilot, lambda: isinstance(app.screen, RecordedDiagnosticsScreen), what="diagnostics")
        await until(pilot, lambda: "shm.too_small" in app.screen.findings_text, what="recorded finding")


def test_report_since_carries_the_timeline_and_the_curve(tmp_path):
    from mltop.diagnostics.report import build_report, render
    from mltop.diagnostics.report_history import add_history

    path = str(tmp_path / "h.db")
    synthetic(path, sweeps=40).close()
    store = RecordingStore(path)
    last = RecordingSource(store).latest()
    report = add_history(build_report(last, None, containers=["trainer"]), store, T0, T0 + 400,
                         selected=["trainer"])
    assert [e["kind"] for e in report["timeline"] if e["container"] == "trainer"] == ["oom", "die"]
    curve = report["containers"][0]["recorded"]["memory_bytes"]
    assert len(curve) == 40 and curve == sorted(curve) and curve[-1] == pytest.approx(4 * GIB, rel=1e-3)
    html = render(report, "html")
    assert html.count("<polyline") >= 4 and "oom" in html
    md = render(report, "md")
    assert "### Timeline (" in md and "exit code 137" in md
    assert json.loads(render(report, "json"))["containers"][0]["recorded"]["t"][0] == pytest.approx(T0)


# --------------------------------------------------------------------------- the real engine

# Grows 4 MiB every 50 ms until the 48 MiB limit stops it: a memory curve that leads to the OOM kill.
GROW = "import time\nb = []\nwhile True:\n    b.append(bytearray(4 << 20))\n    time.sleep(0.05)\n"
# The same, slowly (1 MiB every 100 ms, ~4 s to the limit): several sweeps see the curve even on a host
# where a sweep takes most of a second.
GROW_SLOWLY = "import time\nb = []\nwhile True:\n    b.append(bytearray(1 << 20))\n    time.sleep(0.1)\n"


def _engine_events(store, name):
    return [e for e in store.events() if e.source == "engine" and e.container == name]


def test_engine_events_carry_times_and_exit_codes(tmp_path, containers):
    path = str(tmp_path / "h.db")
    rec = Recorder(path).start()
    try:
        time.sleep(0.5)  # the watcher connected
        started = time.time()
        oom = containers.run(["python3", "-c", GROW], image="python", name=f"{PREFIX}-oom", mem_limit="48m",
                             memswap_limit="48m", wait_running=False)
        loop = containers.run(["sh", "-c", "sleep 0.3; exit 3"], name=f"{PREFIX}-loop", wait_running=False,
                              restart_policy={"Name": "always"})
        manual = containers.run(["sleep", "600"], name=f"{PREFIX}-manual")
        stop_at = time.time()
        manual.stop(timeout=1)
        stopped = time.time()
        wait_for(lambda: (oom.reload() or oom.status) == "exited", what="the OOM kill")
        wait_for(lambda: (loop.reload() or loop.attrs["RestartCount"]) >= 2, what="two restarts")
        time.sleep(1.0)  # the events reach the writer
        rec.flush()
        store = RecordingStore(path)

        kinds = [e.kind for e in _engine_events(store, oom.name)]
        assert "oom" in kinds and "die" in kinds
        die = next(e for e in _engine_events(store, oom.name) if e.kind == "die")
        assert die.detail["exit_code"] == 137
        assert started - 1 <= die.t <= time.time()
        assert die.container_id == oom.id

        loop_dies = [e for e in _engine_events(store, loop.name) if e.kind == "die"]
        assert len(loop_dies) >= 2 and all(e.detail["exit_code"] == 3 for e in loop_dies)
        assert sum(e.kind == "start" for e in _engine_events(store, loop.name)) >= 3  # the restarts

        manual_events = _engine_events(store, manual.name)
        assert [e.kind for e in manual_events if e.kind in ("kill", "die", "stop")][-1] == "stop"
        manual_die = next(e for e in manual_events if e.kind == "die")
        assert manual_die.detail["exit_code"] in (137, 143)  # SIGTERM obeyed, or SIGKILL after the timeout
        assert stop_at - 0.5 <= manual_die.t <= stopped + 0.5
        kill = next(e for e in manual_events if e.kind == "kill")
        assert kill.detail["signal"] == 15
    finally:
        rec.close()


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from builders import container, snapshot
from mltop.probes.recording import Recorder
rec = Recorder({path!r}, watch_engine=False).start()
t = {t0!r}
i = 0
while True:
    rec.record(snapshot([container("c%d" % k, cpu_percent=float(i)) for k in range(50)], taken_at=t + i))
    i += 1
    if i == 20:
        rec.flush()
        print("recording", flush=True)
    time.sleep(0.005)
"""


def test_kill_9_during_recording_leaves_a_replayable_file(tmp_path):
    path = str(tmp_path / "h.db")
    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__), path=path, t0=T0)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "recording"
        time.sleep(0.7)  # writing all the while
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    source = RecordingSource(path)
    assert len(source.store.times) >= 20
    last = source.latest()
    assert len(last.containers) == 50
    assert last.containers[0].cpu_percent == len(source.store.times) - 1  # the newest sweep is whole
    # The lock died with the process: a new recorder takes the file.
    Recorder(path, watch_engine=False).start().close()


def test_report_since_carries_the_oom_event_and_the_memory_curve(tmp_path, containers):
    from mltop.probes.sampler import ProbeOptions, Sampler
    from mltop.tui.cli import main

    path = str(tmp_path / "h.db")
    rec = Recorder(path).start()
    sampler = Sampler(ProbeOptions(nvml=False))
    try:
        time.sleep(0.5)
        oom = containers.run(["python3", "-c", GROW_SLOWLY], image="python", name=f"{PREFIX}-curve",
                             mem_limit="48m", memswap_limit="48m", wait_running=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rec.record(sampler.sweep())
            if (oom.reload() or oom.status) == "exited":
                break
            time.sleep(0.1)
        rec.record(sampler.sweep())
        time.sleep(1.0)
        rec.flush()
    finally:
        sampler.close()
        rec.close()
    out = tmp_path / "report.json"
    assert main(["report", oom.name, "--since", "5m", "--record", path, "-o", str(out), "--no-doctor",
                 "--log-lines", "0"]) == 0
    doc = json.loads(out.read_text())
    assert any(e["kind"] == "oom" and e["container"] == oom.name for e in doc["timeline"])
    curve = [v for v in doc["containers"][0]["recorded"]["memory_bytes"] if v]
    assert len(curve) >= 3
    assert max(curve) >= 24 * MIB and curve[0] < max(curve)  # it climbed towards the 48 MiB limit
    html = tmp_path / "report.html"
    assert main(["report", oom.name, "--since", "5m", "--record", path, "-o", str(html), "--no-doctor",
                 "--log-lines", "0"]) == 0
    assert "<polyline" in html.read_text() and "oom" in html.read_text()


def test_recording_and_history_do_not_import_textual():
    code = ("import sys, mltop.probes.recording, mltop.probes.history, mltop.diagnostics.report_history;"
            "import mltop.probes.recording.retention, mltop.probes.recording.codec;"
            "print('textual' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_events_command_prints_and_filters(tmp_path, capsys):
    from mltop.tui.cli import main

    path = str(tmp_path / "h.db")
    rec = Recorder(path, watch_engine=False).start()
    now = time.time()
    rec.add_event(Event(now - 60, "engine", "die", container_id=container_id("a"), container="a",
                        detail={"exit_code": 3}))
    rec.add_event(Event(now - 30, "engine", "oom", container_id=container_id("[bold]b"), container="[bold]b"))
    rec.add_event(Event(now - 3 * 3600, "engine", "start", container_id=container_id("a"), container="a"))
    rec.flush()
    rec.close()
    assert main(["events", "--record", path, "--since", "2h"]) == 0
    out = capsys.readouterr().out
    assert "exit code 3" in out and "[bold]b" in out and " start " not in out
    assert main(["events", "--record", path, "--since", "1d", "--container", "a", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["kind"] for e in doc] == ["start", "die"]
    assert main(["events", "--record", str(tmp_path / "none.db")]) == 3


async def test_dashboard_graphs_reach_back_and_a_held_file_is_a_header_note(tmp_path):
    from mltop.probes.source import StaticSource
    from mltop.tui.app import MltopApp
    from mltop.tui.widgets.header import StatusHeader
    from test_tui import until

    path = str(tmp_path / "h.db")
    now = time.time()
    synthetic(path, sweeps=20, step_s=5.0, start=now - 100).close()
    holder = Recorder(path, watch_engine=False).start()  # another mltop records into the file
    try:
        live = snapshot([container("trainer", cpu_percent=99.0)], taken_at=now)
        app = MltopApp(nvml=False, source=StaticSource([live]), record=path)
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: "not recording" in app.screen.query_one(StatusHeader).plain,
                        what="the header note")
            assert "already recording into" in app.screen.query_one(StatusHeader).plain
            await until(pilot, lambda: app.history.container(container_id("trainer"), "cpu_percent")[:3] == [
                0.0, 1.0, 2.0], what="the recorded values before the live ones")
            assert app.history.container(container_id("trainer"), "cpu_percent")[-1] == 99.0
    finally:
        holder.close()
    app = MltopApp(nvml=False, source=StaticSource([live]), record=path)
    async with app.run_test(size=(140, 40)) as pilot:  # the file is free: this dashboard records
        await until(pilot, lambda: app.sweeps >= 3, what="three sweeps")
        assert app.recorder is not None and app.recorder.status.ok
        app.recorder.flush()
        assert RecordingStore(path).times[-1] == int(now * 1000)


def test_serve_wiring_records_from_a_sweep_loop_and_refuses_a_held_file(tmp_path):
    import argparse

    from mltop.tui.cli.recording_options import add_record_arguments, attach_recorder, recorder_health

    class Loop:  # the shape of serve's SweepLoop: listeners called with (snapshot, doctor result or None)
        def __init__(self):
            self.listeners = []

        def add_listener(self, listener):
            self.listeners.append(listener)

    parser = argparse.ArgumentParser()
    add_record_arguments(parser, retention=True)
    path = str(tmp_path / "h.db")
    args = parser.parse_args(["--record", path, "--retention", "2d", "--max-size", "100MB"])
    loop = Loop()
    recorder, problem = attach_recorder(loop, args)
    try:
        assert problem is None and (recorder.retention_s, recorder.max_bytes) == (2 * 86400, 100_000_000)
        shm = Finding("shm.too_small", "warning", "a", "small", (), "fix")
        for listener in loop.listeners:
            listener(snapshot([container("a")], taken_at=T0), type("Result", (), {"findings": (shm,)})())
        recorder.flush()
        assert recorder_health(recorder) == ("recorder recording (rec ✓): 1 sweeps and 2 events written, "
                                             "0 dropped, 0 failed")
        store = RecordingStore(path)
        assert len(store.times) == 1 and [e.code for e in store.events() if e.source == "finding"] == [
            "shm.too_small"]
        second, problem = attach_recorder(Loop(), args)
        assert second is None and "already recording into" in problem
    finally:
        recorder.close()
    args = parser.parse_args(["--no-record"])
    assert attach_recorder(Loop(), args) == (None, None)


def test_replay_command_opens_at_a_time_and_explains_a_missing_file(tmp_path):
    from mltop.tui.cli.replay import open_source

    path = str(tmp_path / "h.db")
    synthetic(path, sweeps=30).close()
    source, error = open_source(path, "1m")  # a minute before the end of the recording
    assert error is None and source.time == pytest.approx(T0 + 29 * 5 - 60)
    source, error = open_source(path, str(T0 + 12))
    assert source.time == pytest.approx(T0 + 10)
    source, error = open_source(str(tmp_path / "none.db"), None)
    assert source is None and "no recording at" in error
    source, error = open_source(path, "not a time")
    assert source is None and "not a time" in error


@pytest.mark.parametrize("command", [["events"], ["replay"]])
def test_recorder_commands_have_help(command):
    result = subprocess.run([sys.executable, "-m", "mltop.tui.cli", *command, "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: mltop")
    assert ("--since" if command == ["events"] else "--at") in result.stdout


async def test_replay_report_key_writes_the_time_shown_with_its_events(tmp_path, monkeypatch):
    from mltop.tui.app import MltopApp
    from mltop.tui.screens.timeline import RecordedReportScreen
    from test_tui import until

    path = str(tmp_path / "h.db")
    synthetic(path, sweeps=60).close()
    monkeypatch.chdir(tmp_path)
    app = MltopApp(nvml=False, source=RecordingSource(path, at=T0 + 290))
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="first frame")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RecordedReportScreen) and app.screen.path is not None,
                    what="the report written")
        text = app.screen.path.read_text()
    assert "### Timeline (" in text and "exit code 137" in text and "trainer: recorded figures" in text


def test_serve_records_by_default_and_a_second_serve_on_the_file_refuses(tmp_path):
    from serve_helpers import ServeProcess, http_get

    path = str(tmp_path / "h.db")
    # An engine that is not there: sweeps still happen (the engine is "down"), quickly and without the shared one.
    no_engine = ("--docker-host", f"unix://{tmp_path}/no-docker.sock", "--no-nvml", "--interval", "0.5",
                 "--doctor-interval", "0")
    serve = ServeProcess(*no_engine, "--record", path, "--retention", "2d", "--max-size", "50MB")
    try:
        serve.wait_healthy()
        wait_for(lambda: os.path.exists(path) and len(RecordingStore(path).times) >= 3, what="three sweeps recorded")
        code, body = http_get(serve.url + "/healthz", 2)
        assert code == 200 and b"recorder recording (rec \xe2\x9c\x93): " in body and b", 0 failed" in body
        second = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "serve", "--listen", "127.0.0.1:0",
                                 *no_engine, "--record", path], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert "already recording into" in second.stderr and path in second.stderr
    finally:
        serve.stop()
    snapshot_back = RecordingSource(path).latest()
    assert snapshot_back.host.engine.status == "unreachable"  # what the sweeps saw, as recorded


def test_serve_reports_a_recording_it_cannot_write_in_healthz_and_keeps_serving(tmp_path):
    from serve_helpers import ServeProcess, http_get

    serve = ServeProcess("--docker-host", f"unix://{tmp_path}/no-docker.sock", "--no-nvml", "--interval", "0.5",
                         "--doctor-interval", "0", "--record", "/proc/mltop-no-such-dir/history.db")
    try:
        serve.wait_healthy()
        code, body = http_get(serve.url + "/healthz", 2)
        text = body.decode()
        assert code == 200 and "recorder error (rec ✗ error)" in text
        assert "last problem: cannot write /proc/mltop-no-such-dir/history.db" in text
        assert http_get(serve.url + "/metrics", 5)[0] == 200
    finally:
        serve.stop()


def test_xid_events_are_recorded_once_with_their_time_gpu_and_code_even_across_restarts(tmp_path):
    from builders import gpu

    from mltop.probes.model import XidEvent

    path = str(tmp_path / "h.db")
    old = XidEvent(79, T0 - 3600, "/dev/kmsg", "0000:19:00.0",
                   "NVRM: Xid (PCI:0000:19:00): 79, GPU has fallen off the bus.")
    new = XidEvent(13, T0 + 2.5, "NVML events")
    g0, g1 = gpu(0), gpu(1)
    rec = Recorder(path, watch_engine=False).start()
    rec.record(snapshot([], [replace(g0, xid_events=(old,)), g1], taken_at=T0))
    rec.record(snapshot([], [replace(g0, xid_events=(old,)), g1], taken_at=T0 + 1))  # same window: nothing new
    rec.record(snapshot([], [replace(g0, xid_events=(old,)), replace(g1, xid_events=(new,))], taken_at=T0 + 3))
    rec.record(snapshot([], [], taken_at=T0 + 4))  # NVML did not answer: no GPUs in this sweep
    rec.record(snapshot([], [replace(g0, xid_events=(old,)), replace(g1, xid_events=(new,))], taken_at=T0 + 5))
    rec.flush()
    rec.close()
    # A restarted recorder sees the same kernel-log Xid in the probe's window: stored once all the same.
    rec = Recorder(path, watch_engine=False).start()
    rec.record(snapshot([], [replace(g0, xid_events=(old,)), g1], taken_at=T0 + 10))
    rec.flush()
    rec.close()
    xids = [e for e in RecordingStore(path).events() if e.kind == "xid"]
    assert [(e.t, e.source, e.code, e.title) for e in xids] == [
        (T0 - 3600, "nvml", "xid.79", "GPU 0: Xid 79"), (T0 + 2.5, "nvml", "xid.13", "GPU 1: Xid 13")]
    assert xids[0].detail["uuid"] == g0.uuid and xids[0].detail["via"] == "/dev/kmsg"
    assert xids[1].detail == {"gpu": 1, "uuid": g1.uuid, "xid": 13, "via": "NVML events",
                              "pci_bus_id": g1.pci_bus_id, "text": None}
