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

from builders import GIB, MIB, container, container_id, gpu_workload, replace, snapshot
from conftest import wait_for

from mltop.diagnostics.findings import Finding
from mltop.probes.recording import (Event, Recorder, RecorderLocked, RecordingSource, RecordingStore,
                                    parse_duration, parse_size, parse_when)
from mltop.probes.recording import retention

PREFIX = f"mltop-rec-{uuid.uuid4().hex[:6]}"
T0 = 1_795_900_000.0  # a fixed start for synthetic recordings


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
    old = [t for t in times if t < now_ms - 3600_000]
    minutes = [t // 60_000 for t in old]
    assert old and len(minutes) == len(set(minutes))  # at most one sweep in each minute
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
    from mltop.tui.dashboard import DashboardScreen
    from mltop.tui.header import StatusHeader
    from mltop.tui.replay import replay_time_text
    from mltop.tui.screen_timeline import RecordedDiagnosticsScreen, TimelineScreen

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
        await pilot.pause(0.2)
        await pilot.press(*"T0", "ctrl+u")  # clear, then type a time
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(T0 + 200))
        for ch in when:
            await pilot.press(ch)
        await pilot.press("enter")
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
