"""A recording keeps GPU Performance Metrics (Hopper and newer): replay shows the dashboard's `SM x% TC y%` and
gives the doctor's perf.* findings as live did, from a live sampler over the simulated NVML; a GPU without GPM
is recorded byte for byte as before, and recordings from before (schema 2) still replay."""

from __future__ import annotations

import json
import sqlite3
import time
import zlib

import pytest

from builders import gpu, gpu_process, recent_start, replace, snapshot
from fakenvml import (
    GPM_DRAM, GPM_FP16, GPM_FP32, GPM_FP64, GPM_GRAPHICS, GPM_OCCUPANCY, GPM_PCIE_RX, GPM_PCIE_TX, GPM_SM,
    GPM_TENSOR, FakeGpu, FakeMig, FakeProcess, FakeScenario,
)
from test_tui import until

from mltop.diagnostics.checks import CheckContext, HostFacts, Thresholds
from mltop.diagnostics.doctor import judge
from mltop.probes.model import GpmMetrics, MigDevice
from mltop.probes.recording import Recorder, RecordingSource, RecordingStore
from mltop.probes.recording import codec
from mltop.probes.recording.consolidate import merge_gpus
from mltop.probes.recording.schema import MIGRATIONS, SCHEMA_VERSION
from mltop.probes.sampler import ProbeOptions, Sampler
from mltop.probes.source import StaticSource

# SM active just under launch_bound_sm_active_percent=30: the dashboard shows "SM 30%", the doctor "29.996%" and
# judges it below 30. A figure rounded on the way into the recording (30.0) would lose the finding on replay.
LAUNCH_BOUND = {GPM_GRAPHICS: 97.0, GPM_SM: 29.996, GPM_OCCUPANCY: 12.5, GPM_TENSOR: 9.0, GPM_DRAM: 6.0}
TENSOR_IDLE = {GPM_GRAPHICS: 96.0, GPM_SM: 85.0, GPM_TENSOR: 0.4, GPM_DRAM: 30.0, GPM_FP32: 78.0, GPM_FP16: 0.25,
               GPM_FP64: 0.0, GPM_PCIE_TX: 120.0, GPM_PCIE_RX: 2400.0}
MEMORY_BOUND = {GPM_GRAPHICS: 99.0, GPM_SM: 33.0, GPM_TENSOR: 12.0, GPM_DRAM: 88.0}


def _perf(snap) -> list[tuple]:
    ctx = CheckContext(snapshot=snap, containers=(), logs={}, host=HostFacts(), thresholds=Thresholds())
    return [(f.code, f.severity, f.container, f.title, tuple(f.evidence), f.fix)
            for f in judge(ctx).findings if f.code.startswith("perf.")]


@pytest.fixture
def recorded(containers, nvml_scenario, tmp_path):
    """Two live sweeps of real containers on five simulated GPUs (four with GPM, one MIG with GPM per instance,
    one without), recorded; the live snapshots and the recording's path."""
    pids = {}
    for role in ("train", "fp32"):
        c = containers.run(["sleep", "300"])
        c.reload()
        pids[role] = c.attrs["State"]["Pid"]
    mig = dict(FakeGpu().health, mig_mode=1)
    lib = nvml_scenario(FakeScenario(
        gpus=[
            FakeGpu(uuid="GPU-launch", util=97, gpm=LAUNCH_BOUND, processes=[FakeProcess(pids["train"], sm=60)]),
            FakeGpu(uuid="GPU-fp32", util=96, gpm=TENSOR_IDLE, processes=[FakeProcess(pids["fp32"], sm=60)]),
            FakeGpu(uuid="GPU-mem", util=99, gpm=MEMORY_BOUND,
                    processes=[FakeProcess(pids["train"], sm=30), FakeProcess(pids["fp32"], sm=30)]),
            FakeGpu(uuid="GPU-ampere", name="NVIDIA A100-SXM4-80GB", util=95,
                    processes=[FakeProcess(pids["train"], sm=40)]),  # no GPM: utilisation alone
            FakeGpu(uuid="GPU-mig", health=mig, gpm={GPM_SM: 50.0},
                    gpm_mig={1: {GPM_GRAPHICS: 95.0, GPM_SM: 10.5, GPM_TENSOR: 60.0}, 2: {GPM_SM: 30.0}}),
        ],
        migs=[FakeMig(gpu=4, index=0, uuid="MIG-a", gi=1), FakeMig(gpu=4, index=1, uuid="MIG-b", gi=2)],
    ))
    sampler = Sampler(ProbeOptions(nvml=True, nvml_lib=lib))
    path = str(tmp_path / "history.db")
    recorder = Recorder(path, watch_engine=False).start()
    try:
        sweeps = [sampler.sweep()]
        time.sleep(0.1)
        sweeps.append(sampler.sweep())
        for snap in sweeps:
            recorder.record(snap)
        recorder.flush()
    finally:
        recorder.close()
        sampler.close()
    return {"sweeps": sweeps, "path": path}


def test_replay_keeps_each_gpus_gpm_and_the_doctors_perf_findings(recorded):
    live = recorded["sweeps"][-1]
    source = RecordingSource(recorded["path"])
    try:
        replayed = source.latest()
    finally:
        source.close()
    assert replayed.taken_at == pytest.approx(live.taken_at, abs=1e-3)
    assert [g.uuid for g in replayed.gpus] == [g.uuid for g in live.gpus]
    for was, now in zip(live.gpus, replayed.gpus):
        assert now.gpm == was.gpm, was.uuid  # every metric and the interval, exactly
        assert [m.gpm for m in now.mig_devices] == [m.gpm for m in was.mig_devices], was.uuid
    by_uuid = {g.uuid: g for g in replayed.gpus}
    assert by_uuid["GPU-launch"].gpm.sm_active_percent == 29.996
    assert by_uuid["GPU-fp32"].gpm.pcie_rx_bytes_per_s == 2400.0 * (1 << 20)
    assert by_uuid["GPU-ampere"].gpm is None and "gpm" in by_uuid["GPU-ampere"].unavailable  # and why
    assert {m.uuid: m.gpm.sm_active_percent for m in by_uuid["GPU-mig"].mig_devices} == {"MIG-a": 10.5,
                                                                                       "MIG-b": 30.0}

    findings = _perf(live)
    # Launch-bound on GPU 0 (29.996 < 30) and on MIG instance 1, tensor cores idle on GPU 1, memory-bound on 2.
    assert sorted(f[0] for f in findings) == ["perf.launch_bound", "perf.launch_bound", "perf.memory_bound",
                                              "perf.tensor_cores_idle"]
    assert _perf(replayed) == findings  # title, evidence (figures, "over N s") and fix, word for word


async def test_replays_gpu_panel_shows_sm_and_tensor_active_as_live(recorded):
    from mltop.tui.app import MltopApp
    from mltop.tui.widgets.gpu_panel import GpuCard, GpuPanel

    async def shown(source) -> dict[str, str]:
        app = MltopApp(nvml=False, source=source)
        async with app.run_test(size=(140, 50)) as pilot:
            await until(pilot, lambda: app.snapshot is not None, what="the first snapshot")
            panel = app.screen.query_one(GpuPanel)
            def texts() -> dict[str, str]:
                return {card.uuid: card.query_one(".gpu-util").value_text for card in panel.query(GpuCard)}

            # (live: the second sweep, the first with GPM figures; replay: the recording's last sweep)
            await until(pilot, lambda: len(texts()) == 5 and " SM " in texts()["GPU-launch"],
                        what="five GPU cards, GPM beside the utilisation")
            await pilot.pause(0.2)
            out = texts()
            # what the GPUs full screen's SM-active graph draws: the recorded figures on replay, as live
            out["sm graph"] = [v for v in app.history.gpu("GPU-launch", "sm_active_percent") if v is not None][-1:]
            await app.workers.wait_for_complete()
            await pilot.pause()
        return out

    live = await shown(StaticSource(recorded["sweeps"]))
    replay = await shown(RecordingSource(recorded["path"]))
    assert live["GPU-launch"] == "97.0% SM 30% TC 9%"
    assert live["GPU-fp32"] == "96.0% SM 85% TC 0%"
    assert "SM" not in live["GPU-ampere"]
    assert live["sm graph"] == [29.996]
    assert replay == live


def test_replays_graph_series_have_sm_and_tensor_active(recorded):
    store = RecordingStore(recorded["path"])
    try:
        first, last = recorded["sweeps"][0].taken_at, recorded["sweeps"][-1].taken_at
        times, _, gpus = store.series(first - 1, last + 1)
    finally:
        store.close()
    assert len(times) == 2
    # The first sweep has no GPM yet (one sample): a gap, then the figure, lined up with the utilisation.
    assert gpus["GPU-launch"]["sm_active_percent"] == [None, 29.996]
    assert gpus["GPU-fp32"]["tensor_active_percent"] == [None, 0.4]
    assert gpus["GPU-ampere"]["sm_active_percent"] == [None, None]
    assert len(gpus["GPU-ampere"]["utilization_percent"]) == 2


# --------------------------------------------------------------------------- the layout


def _v2_gpu_blob(rows) -> bytes:
    """The GPU blob of schema version 2, written out here (not by the codec): zlib(JSON) of [gid, util, mem util,
    MiB used, temperature, power, throttles, processes(, MIG devices of 8 items)] per GPU."""
    return zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 6)


def test_a_gpu_without_gpm_is_recorded_byte_for_byte_as_in_version_2(tmp_path):
    migs = (MigDevice(0, "MIG-a", 1, 0, 1 << 30, 10 << 30, (4242,), "1g.10gb"),)
    g0 = gpu(0, processes=[gpu_process(4242, 1 << 30, 50.0)])
    g1 = gpu(1, mig_devices=migs, mig_enabled=True)
    path = str(tmp_path / "h.db")
    recorder = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    recorder.record(snapshot([], [g0, g1], taken_at=recent_start()))
    recorder.flush()
    recorder.close()
    db = sqlite3.connect(path)
    (blob,) = db.execute("SELECT gpus FROM sweeps").fetchone()
    gids = [gid for gid, in db.execute("SELECT gid FROM gpu_info ORDER BY gid")]
    db.close()
    assert blob == _v2_gpu_blob([
        [gids[0], 60.0, 30.0, 8192.0, 55.0, 300.0, [], [[4242, "c", 1024.0, 50.0, "python3", None]]],
        [gids[1], 60.0, 30.0, 8192.0, 55.0, 300.0, [], [], [[0, "MIG-a", 1, 0, 1024.0, 10240.0, [4242], "1g.10gb"]]],
    ])


def _gpm(**values) -> GpmMetrics:
    return GpmMetrics(**{**dict.fromkeys(codec.GPM_FIELDS), "interval_s": 1.0, **values})


def test_a_gpus_gpm_ends_its_row_and_thinning_averages_it():
    g = gpu(0, gpm=_gpm(interval_s=1.25, sm_active_percent=40.0, tensor_active_percent=10.0))
    row = codec.gpu_row(g, 7, {})
    assert len(row) == 10 and row[8] is None  # no MIG devices: the ninth item is null
    assert row[9] == [1.25, None, 40.0, None, 10.0]  # GpmMetrics' order, the unknown tail left out
    later = codec.gpu_row(replace(g, gpm=_gpm(interval_s=0.75, sm_active_percent=20.0, dram_active_percent=5.0)),
                          7, {})
    plain = codec.gpu_row(gpu(1), 8, {})
    (merged_gpm, merged_plain) = codec.unpack_gpus(merge_gpus([[row, plain], [later, plain]]))
    assert codec.row_gpm(merged_gpm)[:5] == [2.0, None, 30.0, None, 10.0]  # the bucket's mean over 2 s
    assert len(merged_plain) == 8  # a GPU without GPM stays a version-2 row after thinning too


def test_a_version_2_recording_still_replays_and_goes_on_with_gpm(tmp_path):
    path = str(tmp_path / "v2.db")
    t0 = recent_start()
    t0_ms = int(t0 * 1000)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(f"BEGIN;\n{MIGRATIONS[1]}\n{MIGRATIONS[2]}\nPRAGMA user_version=2;\nCOMMIT;")
    old = snapshot([], [gpu(0)], taken_at=t0)
    hid = db.execute("INSERT INTO hosts(doc) VALUES (?)", (codec.host_doc(old.host),)).lastrowid
    gid = db.execute("INSERT INTO gpu_info(doc) VALUES (?)", (codec.gpu_static_doc(old.gpus[0]),)).lastrowid
    mig = [[0, "MIG-a", 1, 0, 1024.0, 10240.0, [], "1g.10gb"]]
    db.execute("INSERT INTO sweeps(t, interval_ms, hid, host_load, gpus, containers) VALUES (?,?,?,?,?,?)",
               (t0_ms, 1000, hid, None,
                _v2_gpu_blob([[gid, 70.0, 30.0, 8192.0, 55.0, 300.0, ["sw_power_cap"], [], mig]]),
                codec.pack_containers([], [])))
    db.close()

    store = RecordingStore(path)
    try:
        (g,) = store.snapshot(t0_ms).gpus
    finally:
        store.close()
    assert (g.utilization_percent, g.throttle_reasons, g.gpm, g.mig_enabled) == (70.0, ("sw_power_cap",), None, True)
    assert [(m.uuid, m.profile, m.gpm) for m in g.mig_devices] == [("MIG-a", "1g.10gb", None)]

    recorder = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()  # (times are old)
    hopper = gpu(0, gpm=_gpm(sm_active_percent=14.0, tensor_active_percent=0.0))
    recorder.record(snapshot([], [hopper], taken_at=t0 + 5))
    recorder.flush()
    recorder.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    check.close()
    store = RecordingStore(path)
    try:
        assert store.snapshot(t0_ms).gpus[0].gpm is None  # the old sweep as it was
        assert store.snapshot(t0_ms + 5000).gpus[0].gpm == hopper.gpm
    finally:
        store.close()
