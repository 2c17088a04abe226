"""The recorder's status where people look: the dashboard header, serve's /healthz and the mltop_recorder_*
series (promtool-clean); and the engine events stream's outage on /healthz."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from builders import container, recent_start, snapshot
from capture import block_writer
from conftest import until
from engine_proxy import EngineSocketProxy
from serve_helpers import ServeProcess, parse_exposition, wait_until

from mltop.probes.recording import Recorder, codec

T0 = recent_start()


def _promtool_problems(text: str) -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    return (out.stdout + out.stderr).strip() + ("" if out.returncode == 0 else f" (exit {out.returncode})")


def _recorder_lines(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if "mltop_recorder_" in line)


def test_recorder_series_count_failures_and_drops_and_pass_promtool(tmp_path, monkeypatch):
    from prometheus_client import CollectorRegistry, generate_latest

    from mltop.tui.serve.recorder_metrics import RecorderCollector

    rec = Recorder(str(tmp_path / "h.db"), watch_engine=False, retention_every_s=float("inf")).start()
    try:
        rec.record(snapshot([container("a")], taken_at=T0))
        rec.record(snapshot([container("a", cpu_percent=float("inf"))], taken_at=T0 + 1))  # cannot be encoded
        rec.flush()
        entered, release = block_writer(rec, monkeypatch)
        rec.record(snapshot([container("a")], taken_at=T0 + 2))
        assert entered.wait(10)
        for i in range(256 + 3):  # three more than the queue holds
            rec.record(snapshot([container("a")], taken_at=T0 + 3 + i))
        release.set()
        rec.flush(30)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RecorderCollector(lambda: rec))
        text = generate_latest(registry).decode()
    finally:
        rec.close()
    assert _promtool_problems(text) == ""
    m = parse_exposition(text)
    assert m["mltop_recorder_up"][0][1] == 1.0
    assert m["mltop_recorder_failed_total"][0][1] == 1.0
    assert m["mltop_recorder_dropped_total"][0][1] == 3.0
    assert m["mltop_recorder_sweeps_written_total"][0][1] == 2 + 256
    assert m["mltop_recorder_events_written_total"][0][1] == 1.0  # recorder_started
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecorderCollector(lambda: None))  # --no-record: no series at all
    assert "mltop_recorder" not in generate_latest(registry).decode()


async def test_the_header_shows_the_recorder_and_its_failures(tmp_path, monkeypatch):
    from mltop.probes.source import StaticSource
    from mltop.tui.app import MltopApp
    from mltop.tui.widgets.header import StatusHeader

    app = MltopApp(nvml=False, source=StaticSource([snapshot([container("trainer")])]), record=str(tmp_path / "h.db"))
    async with app.run_test(size=(140, 40)) as pilot:
        header = app.screen.query_one(StatusHeader)
        await until(pilot, lambda: "rec ✓" in header.plain, what="rec ✓ in the header")

        def encoder_that_fails(containers, cids):
            raise OverflowError("int too large to convert")

        monkeypatch.setattr(codec, "pack_containers", encoder_that_fails)
        await until(pilot, lambda: "rec ⚠" in header.plain and " failed" in header.plain,
                    what="the failed writes in the header")
        assert app.recorder.status.failed >= 1 and app.recorder.status.ok  # it goes on recording
        monkeypatch.undo()
        app.recorder.flush()
        sweeps = app.recorder.status.sweeps
        await until(pilot, lambda: app.recorder.status.sweeps > sweeps, what="sweeps written again")


def test_header_keeps_a_recorder_loss_at_80_columns_and_lets_rec_ok_go_first():
    from mltop.tui.widgets.header import fit_facts, header_parts

    snap = snapshot([container("trainer")], hostname="a-rather-long-gpu-host-name.example.internal")
    for summary, narrow in (("rec ✓", ""), ("rec ⚠ 3 failed, 12 dropped", "rec ⚠")):
        facts, _ = header_parts(snap, "unix:///var/run/docker.sock", 1.0, False, recorder=summary)
        assert summary in " ".join(t.plain for t in fit_facts(facts, 200))
        shown = [t.plain for t in fit_facts(facts, 40)]
        assert (narrow in shown) if narrow else not any(s.startswith("rec") for s in shown)


def test_serve_healthz_and_metrics_show_the_recorder_and_an_events_outage(tmp_path):
    proxy = EngineSocketProxy(tmp_path / "docker.sock").start()
    serve = ServeProcess("--interval", "0.5", "--doctor-interval", "0", "--no-nvml",
                         "--docker-host", proxy.docker_host)
    try:
        serve.wait_healthy()
        code, body = serve.get("/healthz")
        assert code == 200 and "recorder recording (rec ✓)" in body.decode()
        wait_until(lambda: serve.metrics()["mltop_recorder_sweeps_written_total"][0][1] >= 2, 15,
                   "two sweeps written")
        assert _promtool_problems(_recorder_lines(serve.metrics_text())) == ""
        assert serve.metrics()["mltop_recorder_failed_total"][0][1] == 0

        proxy.stop()
        text = wait_until(lambda: (lambda t: t if "engine events stream down" in t else None)(
            serve.get("/healthz")[1].decode()), 15, "the events outage on /healthz")
        assert "reconnecting" in text
        proxy.start()
        wait_until(lambda: "engine events stream down" not in serve.get("/healthz")[1].decode(), 15,
                   "the events stream back")
    finally:
        stderr = serve.stop()
        proxy.stop()
    assert "events watcher failed" in stderr  # logged, with the exception
