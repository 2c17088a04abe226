"""The flight recorder cannot die silently: a write that fails is logged with its exception and counted, work
dropped on a full queue or at close is counted, close() keeps its deadline, and a restart does not announce
the findings it already knew."""

from __future__ import annotations

import logging
import time

import pytest

from builders import container, recent_start, snapshot
from capture import LogRecords, block_writer
from conftest import wait_for

from mltop.diagnostics.findings import Finding
from mltop.probes.recording import Event, Recorder, RecordingStore

T0 = recent_start()
QUEUE_LIMIT = 256  # recorder._QUEUE_LIMIT, written out: the test says how much work waits


def _Records() -> LogRecords:
    return LogRecords("mltop.probes.recording.recorder")


@pytest.fixture
def recorder(tmp_path):
    rec = Recorder(str(tmp_path / "h.db"), watch_engine=False, retention_every_s=float("inf")).start()
    yield rec
    rec.close()


def test_a_sweep_the_codec_cannot_encode_is_logged_counted_and_the_next_is_written(recorder):
    with _Records() as log:
        recorder.record(snapshot([container("a")], taken_at=T0))
        # An infinite CPU rate (a counter read as zero seconds apart) overflows the codec's integer columns.
        recorder.add_event(Event(T0 + 0.5, "engine", "die", container="a", detail={"exit_code": 1}))
        recorder.record(snapshot([container("a", cpu_percent=float("inf"))], taken_at=T0 + 1))
        recorder.record(snapshot([container("a")], taken_at=T0 + 2))
        recorder.flush()
    status = recorder.status
    assert (status.state, status.sweeps, status.failed, status.dropped) == ("recording", 2, 1, 0)
    assert "OverflowError" in status.message and status.summary() == "rec ⚠ 1 failed"
    (record,) = log.with_exception(OverflowError)
    assert "recording the sweep" in record.getMessage() and record.levelno == logging.WARNING
    store = RecordingStore(recorder.path)
    assert [round(t / 1000) for t in store.times] == [round(T0), round(T0 + 2)]
    # the event handed over with the bad sweep was written without it
    assert [(e.kind, e.detail) for e in store.events() if e.source == "engine"] == [("die", {"exit_code": 1})]


def test_an_event_whose_detail_does_not_encode_is_left_out_alone(recorder):
    with _Records() as log:
        recorder.add_event(Event(T0, "engine", "die", container="a", detail={"what": object()}))
        recorder.add_event(Event(T0 + 1, "engine", "start", container="a"))
        recorder.record(snapshot([container("a")], taken_at=T0 + 1))
        recorder.flush()
    assert (recorder.status.failed, recorder.status.sweeps) == (1, 1)
    assert len(log.with_exception(TypeError)) == 1
    kinds = [e.kind for e in RecordingStore(recorder.path).events() if e.source == "engine"]
    assert kinds == ["start"]


def test_any_exception_in_a_write_is_a_failure_not_the_end_of_the_writer(recorder, monkeypatch):
    calls = []

    def broken(db, snap):
        calls.append(snap.taken_at)
        if len(calls) == 1:
            raise RuntimeError("a bug in a new column")
        return original(db, snap)

    original = recorder._write_sweep
    monkeypatch.setattr(recorder, "_write_sweep", broken)
    with _Records() as log:
        recorder.record(snapshot([container("a")], taken_at=T0))
        recorder.record(snapshot([container("a")], taken_at=T0 + 1))
        recorder.flush()
    assert recorder.status.ok and (recorder.status.failed, recorder.status.sweeps) == (1, 1)
    assert recorder._thread is not None and recorder._thread.is_alive()
    assert log.with_exception(RuntimeError)


def test_a_full_queue_counts_and_logs_what_it_drops(recorder, monkeypatch):
    entered, release = block_writer(recorder, monkeypatch)
    recorder.record(snapshot([container("a")], taken_at=T0))
    assert entered.wait(10)
    with _Records() as log:
        for i in range(QUEUE_LIMIT + 5):  # the queue holds QUEUE_LIMIT; the 5 oldest go
            recorder.record(snapshot([container("a")], taken_at=T0 + 1 + i))
    assert recorder.status.dropped == 5 and recorder.status.summary() == "rec ⚠ 5 dropped"
    assert any("queue is full" in r.getMessage() for r in log.records)
    release.set()
    recorder.flush(30)
    assert (recorder.status.sweeps, recorder.status.dropped, recorder.status.failed) == (1 + QUEUE_LIMIT, 5, 0)
    times = RecordingStore(recorder.path).times
    assert round(times[1] / 1000) == round(T0 + 6)  # the oldest waiting work went, the newest was kept


def test_close_under_load_returns_within_its_bound_and_counts_what_is_left(tmp_path, monkeypatch):
    path = str(tmp_path / "h.db")
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    original = rec._write_sweep

    def slow(db, snap):  # a disk that takes 0.2 s a sweep: the 100 queued would take 20 s
        time.sleep(0.2)
        return original(db, snap)

    monkeypatch.setattr(rec, "_write_sweep", slow)
    for i in range(100):
        rec.record(snapshot([container("a")], taken_at=T0 + i))
    with _Records() as log:
        started = time.monotonic()
        rec.close(timeout=1.0)
        took = time.monotonic() - started
        wait_for(lambda: rec.status.sweeps + rec.status.dropped == 100, timeout=5, what="every sweep accounted")
    print(f"close(timeout=1.0) with 100 slow sweeps queued returned in {took:.2f} s")
    assert took < 1.0 + 0.5  # the bound, plus the scheduling slack of a busy machine
    assert 0 < rec.status.sweeps < 20 and rec.status.dropped > 80 and rec.status.state == "stopped"
    assert any("did not finish within 1.0 s" in r.getMessage() for r in log.records)
    # the writer ends once its current write returns, and lets the file go
    wait_for(lambda: Recorder(path, watch_engine=False).start().close() is None, timeout=5, what="the lock released")


def test_close_with_a_writer_stuck_in_one_write_still_returns(tmp_path, monkeypatch):
    rec = Recorder(str(tmp_path / "h.db"), watch_engine=False, retention_every_s=float("inf")).start()
    entered, release = block_writer(rec, monkeypatch)
    rec.record(snapshot([container("a")], taken_at=T0))
    assert entered.wait(10)
    for i in range(QUEUE_LIMIT):
        rec.record(snapshot([container("a")], taken_at=T0 + 1 + i))  # full: even the close marker has no room
    started = time.monotonic()
    rec.close(timeout=0.5)
    assert time.monotonic() - started < 0.5 + 0.5
    assert rec.status.dropped == QUEUE_LIMIT
    release.set()
    wait_for(lambda: rec.status.sweeps == 1, timeout=10, what="the stuck write finishing")


# --------------------------------------------------------------------------- restarts


def _oom(container_name: str = "trainer") -> Finding:
    return Finding("oom.killed", "critical", container_name, "killed by the OOM killer", ("OOMKilled true",),
                   "raise the memory limit")


def _findings(store: RecordingStore) -> list[tuple[str, str]]:
    return [(e.kind, e.code) for e in store.events() if e.source == "finding"]


def test_two_starts_with_the_same_open_finding_record_one_appeared(tmp_path):
    path = str(tmp_path / "h.db")
    first_at = time.time() - 300
    for start_at in (first_at, first_at + 60):
        rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
        rec.record(snapshot([container("trainer", status="exited")], taken_at=start_at))
        rec.record_findings([_oom()], t=start_at + 1)
        rec.close()
    store = RecordingStore(path)
    assert _findings(store) == [("appeared", "oom.killed")]
    assert [f.code for f in store.findings_at(first_at + 62)] == ["oom.killed"]  # still open after the restart


def test_a_finding_gone_at_the_second_start_is_recorded_cleared_with_the_gap(tmp_path):
    path = str(tmp_path / "h.db")
    last_sweep = time.time() - 125
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    rec.record(snapshot([container("trainer", status="exited")], taken_at=last_sweep - 5))
    rec.record_findings([_oom()], t=last_sweep - 4)
    rec.record(snapshot([container("trainer", status="exited")], taken_at=last_sweep))
    rec.close()

    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()  # the container was removed
    rec.record(snapshot([], taken_at=time.time()))
    rec.record_findings([], t=time.time())
    rec.record_findings([_oom("other")], t=time.time() + 1)
    rec.close()
    store = RecordingStore(path)
    events = [e for e in store.events() if e.source == "finding"]
    assert [(e.kind, e.container) for e in events] == [("appeared", "trainer"), ("cleared", "trainer"),
                                                        ("appeared", "other")]
    cleared = events[1]
    assert cleared.detail["while_down"] is True
    assert cleared.detail["gap_s"] == pytest.approx(125, abs=10)
    assert cleared.detail["last_recorded_t"] == pytest.approx(last_sweep, abs=0.01)
    assert "cleared while mltop was not recording" in cleared.title and "back 2m0" in cleared.title
    assert [f.container for f in store.findings_at(time.time() + 2)] == ["other"]
