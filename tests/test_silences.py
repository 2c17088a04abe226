"""Silences and "set healthy": a finding the team already knows stops counting in `mltop doctor`'s exit code and in
the agent's alerts (mltop_finding{silenced="true"}) until the silence ends, across restarts of the agent; a GPU set
healthy after a repair no longer raises its older Xids while a newer one still does. Real engine, real files, the
real `mltop` commands; the simulated libnvidia-ml.so.1 and a kernel-log file stand in for the GPU."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ContainerFactory, wait_for
from fakenvml import SCENARIO_ENV, FakeGpu, FakeScenario, FakeXid, write_scenario
from serve_helpers import ServeProcess, wait_until

from mltop.probes.recording.schema import MIGRATIONS, SCHEMA_VERSION, SchemaTooNew, connect_reader
from mltop.probes.recording.silences import HEALTHY, SilenceBook
from mltop.probes.recording.source import RecordingStore

REPO = Path(__file__).resolve().parents[1]
UUID = "GPU-00000000-0000-0000-0000-0000000000c0"


def mltop(*args, env_extra=None, timeout=90):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "mltop.tui.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def shm_full(docker_client, test_images):
    """A container whose 64 MiB /dev/shm (Docker's default) is full: the doctor warns shm.too_small (exit 1)."""
    factory = ContainerFactory(docker_client, test_images)
    try:
        c = factory.run(["sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=100; exec sleep 600"],
                        name=f"mltop-silence-shm-{os.getpid()}")
        wait_for(lambda: b"No space left" in docker_client.containers.get(c.id).logs(), what="/dev/shm full")
        yield c.name
    finally:
        factory.cleanup()


def doctor(name, recording, *more):
    return mltop("doctor", "--interval", "0.25", "--no-nvml", "--recording", str(recording), *more, name)


def test_a_silenced_finding_stops_counting_until_its_silence_ends(shm_full, tmp_path):
    recording = tmp_path / "history.db"
    before = doctor(shm_full, recording)
    assert before.returncode == 1, before.stdout + before.stderr
    assert "WARNING   shm.too_small" in before.stdout

    added = mltop("silence", "add", "shm.too_small", shm_full, "--for", "6s", "--reason", "OPS-7 [bold]new image",
                  "--recording", str(recording))
    assert added.returncode == 0, added.stderr
    silenced = doctor(shm_full, recording)
    assert silenced.returncode == 0, silenced.stdout + silenced.stderr
    assert "silenced  shm.too_small" in silenced.stdout
    assert "OPS-7 [bold]new image (warning, not counted)" in silenced.stdout
    assert "1 silenced -> exit 0" in silenced.stdout
    doc = json.loads(doctor(shm_full, recording, "--json").stdout)
    shm = [f for f in doc["findings"] if f["code"] == "shm.too_small"]
    assert shm and shm[0]["silenced"]["reason"] == "OPS-7 [bold]new image"

    listed = json.loads(mltop("silence", "list", "--json", "--recording", str(recording)).stdout)
    assert [(s["code"], s["target"], s["active"]) for s in listed] == [("shm.too_small", shm_full, True)]

    # the silence ends by itself: the finding counts again
    wait_for(lambda: doctor(shm_full, recording).returncode == 1, timeout=30, interval=0.5,
             what="the silence to end")
    table = mltop("silence", "list", "--all", "--recording", str(recording)).stdout
    assert "expired" in table and shm_full in table

    # every add is in the timeline, with its target and reason
    events = json.loads(mltop("events", "--since", "10m", "--json", "--record", str(recording)).stdout)
    added_events = [e for e in events if e["kind"] == "silenced"]
    assert added_events and added_events[0]["container"] == shm_full
    assert added_events[0]["detail"]["reason"] == "OPS-7 [bold]new image"


def test_a_pod_or_host_wide_silence_and_remove(shm_full, tmp_path):
    recording = tmp_path / "history.db"
    assert mltop("silence", "add", "shm.too_small", "--for", "1h", "--reason", "known everywhere",
                 "--recording", str(recording)).returncode == 0
    assert doctor(shm_full, recording).returncode == 0
    removed = mltop("silence", "remove", "shm.too_small", "--recording", str(recording))
    assert removed.returncode == 0, removed.stderr
    assert doctor(shm_full, recording).returncode == 1
    again = mltop("silence", "remove", "shm.too_small", "--recording", str(recording))
    assert again.returncode == 1 and "no silence" in again.stderr
    events = RecordingStore(str(recording)).events()
    assert [e.kind for e in events if e.source == "mltop"] == ["silenced", "unsilenced"]
    bad = mltop("silence", "add", "shm.too_small", "--for", "soon", "--reason", "x", "--recording", str(recording))
    assert bad.returncode == 3 and "not a duration" in bad.stderr


def test_the_agents_re_marking_follows_the_clock(tmp_path):
    """Between doctor runs the agent re-marks its last result every sweep: a silence that ended no longer holds,
    one added since does (the clock is handed in)."""
    from builders import container, snapshot
    from mltop.diagnostics.doctor import DoctorResult
    from mltop.diagnostics.findings import Finding
    from mltop.diagnostics.silences import remark

    book = SilenceBook(str(tmp_path / "h.db"))
    now = time.time()
    s = book.add("shm.too_small", "trainer", now + 60, "OPS-1", now=now)
    f = Finding("shm.too_small", "warning", "trainer", "t", (), "fix")
    result = DoctorResult(findings=(f,), checks_skipped=())
    snap = snapshot([container(name="trainer")])
    held = remark(result, book.all(), snap, now + 59)
    assert held.findings[0].silenced == s and held.exit_code == 0
    ended = remark(held, book.all(), snap, now + 61)
    assert ended.findings[0].silenced is None and ended.exit_code == 1


def _finding_series(serve, name):
    return [(labels.get("silenced"), value) for labels, value in serve.metrics().get("mltop_finding", [])
            if labels.get("code") == "shm.too_small" and labels.get("container") == name]


def test_the_agent_exports_silenced_true_across_restarts(shm_full, tmp_path):
    recording = tmp_path / "history.db"
    assert mltop("silence", "add", "shm.too_small", shm_full, "--for", "1h", "--reason", "OPS-8",
                 "--recording", str(recording)).returncode == 0
    for start in range(2):  # the second agent opens the same recording the first one wrote
        serve = ServeProcess("--no-nvml", "--interval", "0.5", "--doctor-interval", "1", "--record", str(recording))
        try:
            serve.wait_healthy()
            wait_until(lambda: _finding_series(serve, shm_full) == [("true", 1.0)], 60,
                       f"mltop_finding silenced=true (start {start + 1})")
            if start == 1:  # lifted while the agent runs: alerting again by the next sweeps, no doctor run needed
                assert mltop("silence", "remove", "shm.too_small", shm_full,
                             "--recording", str(recording)).returncode == 0
                wait_until(lambda: _finding_series(serve, shm_full) == [("false", 1.0)], 30,
                           "mltop_finding silenced=false once removed")
        finally:
            err = serve.stop()
        assert "cannot read the silences" not in err, err  # (other sessions' containers going away may log tracebacks of their own)


def _kmsg_xid(path: Path, ago_s: float) -> None:
    usec = int((time.monotonic() - ago_s) * 1e6)  # kmsg stamps records in µs of the monotonic clock
    path.write_text(f"4,200,{usec},-;NVRM: Xid (PCI:0000:18:00): 48, pid=77, name=python3, DBE (double bit "
                    "error) ECC error\n")


def test_set_healthy_stops_an_old_xid_while_a_newer_one_raises(fake_nvml_lib, tmp_path):
    recording, kmsg, scenario = tmp_path / "history.db", tmp_path / "kmsg", tmp_path / "scenario.txt"
    _kmsg_xid(kmsg, ago_s=600)  # the Xid that led to the repair, ten minutes ago
    write_scenario(scenario, FakeScenario(gpus=[FakeGpu(uuid=UUID, pci="00000000:18:00.0", util=10)]))
    env = {SCENARIO_ENV: str(scenario), "MLTOP_KMSG": str(kmsg)}
    args = ("--docker-host", "none", "--nvml-lib", str(fake_nvml_lib), "--recording", str(recording))

    before = mltop("doctor", "--interval", "0.25", *args, env_extra=env)
    assert before.returncode == 2 and "GPU 0: Xid 48" in before.stdout, before.stdout + before.stderr

    healthy = mltop("silence", "set-healthy", "gpu:0", "--reason", "board reseated", *args, env_extra=env)
    assert healthy.returncode == 0, healthy.stderr
    mark = [s for s in SilenceBook(str(recording)).all() if s.code == HEALTHY]
    assert mark and mark[0].detail["uuid"] == UUID  # resolved when set: a renumbering does not move it

    after = mltop("doctor", "--interval", "0.25", *args, env_extra=env)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "Xid 48" not in after.stdout

    # a new Xid after the repair raises
    write_scenario(scenario, FakeScenario(gpus=[FakeGpu(uuid=UUID, pci="00000000:18:00.0", util=10)],
                                          xids=[FakeXid(gpu=0, code=79)]))
    newer = mltop("doctor", "--interval", "1", *args, env_extra=env)
    assert newer.returncode == 2, newer.stdout + newer.stderr
    assert "GPU 0: Xid 79" in newer.stdout and "Xid 48" not in newer.stdout
    events = RecordingStore(str(recording)).events()
    assert any(e.kind == "set_healthy" and "board reseated" in (e.title or "") for e in events)


def test_an_older_recording_opens_and_a_newer_one_is_refused(tmp_path):
    old = tmp_path / "v3.db"
    db = sqlite3.connect(old)
    db.executescript(f"BEGIN;\n{MIGRATIONS[1]}\n{MIGRATIONS[2]}\nPRAGMA user_version=3;\nCOMMIT;")
    db.close()
    assert SilenceBook(str(old)).all() == []  # read as it is: no table yet, no silences
    SilenceBook(str(old)).add("gpu.xid", "gpu:1", time.time() + 60, "ticket")
    check = sqlite3.connect(old)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    check.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    check.commit()
    check.close()
    with pytest.raises(SchemaTooNew):
        connect_reader(str(old))
    refused = mltop("silence", "add", "gpu.xid", "--for", "1h", "--reason", "x", "--recording", str(old))
    assert refused.returncode == 3 and "schema version 5" in refused.stderr
