"""What the flight recorder keeps of pods, and the doctor's window for k8s.gpu_allocated_unused from it.

A live sampler over real pods (the private containerd), the project's pod-resources server and the simulated
NVML records into a real recording; replay must give back each pod container's QoS class and GPU allocations
(device ids, in use, unused since), the kubelet source's status, and the same k8s findings as live. A one-shot
`mltop doctor --recording` then judges an allocation unused for longer than its window from that recording; a
version-1 recording (before pods were kept) still replays."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib

import pytest
from cri_harness import ContainerSpec
from fakenvml import HEALTHY, FakeGpu, FakeMig, FakeProcess, FakeScenario, write_scenario
from pod_resources_server import PodResourcesServer

GIB = 1 << 30
GPU_A = "GPU-a1000000-0000-0000-0000-00000000000a"  # allocated to holder, used by nobody
GPU_B = "GPU-b1000000-0000-0000-0000-00000000000b"  # time-sliced: replica 1 to worker, whose child uses it
GPU_C = "GPU-c1000000-0000-0000-0000-00000000000c"  # used by leaky, allocated to nobody
GPU_M = "GPU-d1000000-0000-0000-0000-00000000000d"  # MIG mode: its MIG device to migpod, which uses it
MIG = "MIG-e1000000-0000-0000-0000-00000000000e"
NS = "ml-hist"
NAMES = ("holder", "worker", "leaky", "migpod")
WINDOW_S = 2.0  # gpu_alloc_unused_s for these tests: the recording spans more than it
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child_of(pid: int) -> int:
    """The one child process of `pid` (host PID namespace)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                return int(entry)
    raise AssertionError(f"no child of {pid}")


@pytest.fixture(scope="module")
def recorded(cri_node, fake_nvml_lib, tmp_path_factory):
    """Four real pods (holder Guaranteed, the rest Burstable/BestEffort), allocations from the pod-resources
    server, the simulated NVML listing three pods' processes (worker's is a child it can lose); three sweeps
    over 2.2 s recorded into a real recording, the last one with worker still on its GPU."""
    from mltop.probes.recording import Recorder
    from mltop.probes.sampler import ProbeOptions, Sampler

    tmp = tmp_path_factory.mktemp("pod-history")
    kubelet = PodResourcesServer()
    qos = {"holder": "Guaranteed", "worker": "Burstable", "leaky": "BestEffort", "migpod": "Burstable"}
    command = {"worker": ["sh", "-c", "sleep 600 & exec sleep 600"]}  # the child holds the GPU until killed
    pods = {n: cri_node.run_pod(NS, n, [ContainerSpec("main", command.get(n, ["sleep", "600"]))], qos=qos[n])
            for n in NAMES}
    sampler = recorder = None
    try:
        kubelet.allocations = {
            (NS, "holder", "main"): [("nvidia.com/gpu", [GPU_A])],
            (NS, "worker", "main"): [("nvidia.com/gpu", [f"{GPU_B}::1"])],
            (NS, "migpod", "main"): [("nvidia.com/mig-1g.10gb", [MIG])],
        }
        pid = {n: cri_node.init_pid(p.containers["main"]) for n, p in pods.items()}
        deadline = time.monotonic() + 10
        while True:  # sh forks its sleep child right after the container starts
            try:
                worker_child = _child_of(pid["worker"])
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        scenario = tmp / "scenario.txt"
        write_scenario(scenario, FakeScenario(gpus=[
            FakeGpu(uuid=GPU_A, pci="00000000:2A:00.0"),
            FakeGpu(uuid=GPU_B, pci="00000000:2B:00.0", util=60, mem_used=9 * GIB, processes=[
                FakeProcess(worker_child, used_memory=8 * GIB, sm=60)]),
            FakeGpu(uuid=GPU_C, pci="00000000:2C:00.0", util=30, mem_used=3 * GIB, processes=[
                FakeProcess(pid["leaky"], used_memory=2 * GIB, sm=30)]),
            FakeGpu(uuid=GPU_M, pci="00000000:2D:00.0", mem_used=GIB, health=dict(HEALTHY, mig_mode=1), processes=[
                FakeProcess(pid["migpod"], used_memory=GIB, sm=10, mig=0)]),
        ], migs=[FakeMig(gpu=3, index=0, uuid=MIG, mem_used=GIB)]))
        path = str(tmp / "history.db")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLTOP_FAKE_NVML_SCENARIO", str(scenario))
            sampler = Sampler(ProbeOptions(nvml_lib=str(fake_nvml_lib), cri_endpoint=cri_node.endpoint,
                                           pod_resources_socket=kubelet.endpoint, watch_events=False))
            recorder = Recorder(path, watch_engine=False).start()
            sweeps = []
            for pause in (1.2, 1.0, 0.0):
                sweeps.append(sampler.sweep())
                recorder.record(sweeps[-1])
                time.sleep(pause)
            recorder.flush()
        yield dict(pods=pods, sweeps=sweeps, engine=sampler.engine, path=path, scenario=str(scenario),
                   lib=str(fake_nvml_lib), kubelet=kubelet, cri=cri_node, worker_child=worker_child)
    finally:
        if recorder is not None:
            recorder.close()
        if sampler is not None:
            sampler.close()
        for pod in pods.values():
            cri_node.remove_pod(pod)
        kubelet.stop()


def _pod(snap, name):
    (c,) = [c for c in snap.containers if c.name == f"{NS}/{name}/main"]
    return c


def _k8s_findings(snap, previous):
    from mltop.diagnostics.checks import Thresholds
    from mltop.diagnostics.doctor import run_doctor

    result = run_doctor(snap, None, containers=[f"{NS}/{n}/main" for n in NAMES], previous=previous,
                        thresholds=Thresholds(gpu_alloc_unused_s=1.0))
    return sorted((f.code, f.container, f.title, f.evidence, f.fix) for f in result.findings
                  if f.code.startswith("k8s."))


def test_replay_gives_back_qos_allocations_and_the_kubelets_status(recorded):
    from mltop.probes.recording import RecordingStore
    from mltop.tui.widgets.containers_table import container_cells

    store = RecordingStore(recorded["path"])
    try:
        assert len(store.times) == 3
        for live in recorded["sweeps"]:
            replayed = store.snapshot(int(live.taken_at * 1000))
            for n in NAMES:
                was, now = _pod(live, n), _pod(replayed, n)
                fields = ("namespace", "pod", "pod_uid", "container", "qos", "gpus_allocated")
                assert [getattr(now.kubernetes, f) for f in fields] == [getattr(was.kubernetes, f) for f in fields]
                cells, live_cells = container_cells(now), container_cells(was)  # the dashboard's GPU and GPU ALLOC
                assert (cells["gpu"].plain, cells["gpu_alloc"].plain) == (live_cells["gpu"].plain,
                                                                          live_cells["gpu_alloc"].plain)
            (source,) = [s for s in replayed.host.sources if s.kind == "pod-resources"]
            assert source == next(s for s in live.host.sources if s.kind == "pod-resources") and source.ok
            (mig_gpu,) = [g for g in replayed.gpus if g.uuid == GPU_M]
            assert [(m.uuid, m.host_pids) for m in mig_gpu.mig_devices] == [
                (m.uuid, m.host_pids) for m in next(g for g in live.gpus if g.uuid == GPU_M).mig_devices]
        # what the replay shows, spelled out: the facts themselves, not only their equality with live
        last = store.snapshot(store.times[-1])
        first_t = recorded["sweeps"][0].taken_at
        holder = _pod(last, "holder").kubernetes
        assert holder.qos == "Guaranteed" and _pod(last, "leaky").kubernetes.qos == "BestEffort"
        (held,) = holder.gpus_allocated
        assert (held.device_id, held.index, held.in_use, held.unused_since) == (GPU_A, 0, False, first_t)
        (shared,) = _pod(last, "worker").kubernetes.gpus_allocated
        assert (shared.device_id, shared.replica, shared.in_use, shared.unused_since) == (f"{GPU_B}::1", 1, True, None)
        (mig,) = _pod(last, "migpod").kubernetes.gpus_allocated
        assert (mig.device_id, mig.mig, mig.in_use) == (MIG, True, True)
    finally:
        store.close()


async def test_the_replayed_dashboard_shows_gpu_alloc_beside_gpu(recorded):
    """`mltop replay` under pilot: the GPU ALLOC column is there, with each pod container's cells as live."""
    from conftest import until

    from mltop.probes.recording import RecordingSource
    from mltop.tui.app import MltopApp
    from mltop.tui.screens.dashboard import DashboardScreen

    app = MltopApp(nvml=False, source=RecordingSource(recorded["path"]))
    ids = {n: recorded["pods"][n].containers["main"] for n in NAMES}
    async with app.run_test(size=(200, 50)) as pilot:
        def ready():
            table = app.screen.table if isinstance(app.screen, DashboardScreen) else None
            return table is not None and all(i in table.keys_in_order for i in ids.values())
        await until(pilot, ready, timeout=30, what="the replayed pods")
        table = app.screen.table
        assert "gpu_alloc" in table.visible_columns
        shown = {n: (table.cell_text(i, "gpu").strip(), table.cell_text(i, "gpu_alloc").strip()) for n, i in ids.items()}
    assert shown == {"holder": ("", "0"), "worker": ("1", "1"), "leaky": ("2", ""), "migpod": ("3", "3")}


def test_replay_judges_the_k8s_findings_as_live_did(recorded):
    from mltop.probes.recording import RecordingStore

    store = RecordingStore(recorded["path"])
    try:
        live_prev, live = recorded["sweeps"][0], recorded["sweeps"][1]
        replayed = _k8s_findings(store.snapshot(int(live.taken_at * 1000)),
                                 store.snapshot(int(live_prev.taken_at * 1000)))
    finally:
        store.close()
    from_live = _k8s_findings(live, live_prev)
    assert replayed == from_live
    assert {(code, container) for code, container, *_ in from_live} == {
        ("k8s.gpu_allocated_unused", f"{NS}/holder/main"), ("k8s.gpu_used_unallocated", f"{NS}/leaky/main"),
        # allocated GPUs under the default runc: the same on both sides too
        *(("k8s.gpu_runtime", f"{NS}/{n}/main") for n in ("holder", "worker", "migpod"))}


def _doctor(recorded, *args):
    env = dict(os.environ, MLTOP_FAKE_NVML_SCENARIO=recorded["scenario"], MLTOP_CRI_ENDPOINT=recorded["cri"].endpoint,
               MLTOP_POD_RESOURCES_SOCKET=recorded["kubelet"].endpoint)
    done = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "doctor", "--interval", "0.25", "--json",
                           "--nvml-lib", recorded["lib"], "--gpu-alloc-unused-s", str(WINDOW_S), *args,
                           f"{NS}/holder/main", f"{NS}/worker/main"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode in (0, 1, 2), done.stdout + done.stderr
    return json.loads(done.stdout)


def test_doctor_takes_the_window_from_a_recording(recorded):
    """holder's GPU went unused from the recording's first sweep (> WINDOW_S before the doctor): fires, saying
    since when; worker's was in use at the recording's last sweep and is not now (its child is gone): it used
    its GPU within the window, silent, and not skipped either."""
    os.kill(recorded["worker_child"], signal.SIGKILL)  # a child of the test's own pod
    doc = _doctor(recorded, "--recording", recorded["path"])
    unused = [f for f in doc["findings"] if f["code"] == "k8s.gpu_allocated_unused"]
    assert [f["container"] for f in unused] == [f"{NS}/holder/main"], doc
    since = time.strftime("%H:%M:%S", time.localtime(recorded["sweeps"][0].taken_at))
    text = "\n".join(unused[0]["evidence"])
    assert f"on {GPU_A} since {since}" in text and f"gpu_alloc_unused_s={WINDOW_S}" in text
    assert f"as the recording {recorded['path']} (sweeps until" in text
    assert not [s for s in doc["checks_skipped"] if s["check"] == "k8s.gpu_allocated_unused"], doc["checks_skipped"]


def test_doctor_without_a_recording_says_it_needs_a_window(recorded, tmp_path):
    for args, said in ((["--no-recording"], "--no-recording"),
                       (["--recording", str(tmp_path / "none.db")], f"no recording at {tmp_path / 'none.db'}")):
        doc = _doctor(recorded, *args)
        assert not [f for f in doc["findings"] if f["code"] == "k8s.gpu_allocated_unused"], doc
        (reason,) = [s["reason"] for s in doc["checks_skipped"] if s["check"] == "k8s.gpu_allocated_unused"]
        assert f"{NS}/holder/main" in reason, doc["checks_skipped"]  # "(containers: …)"
        assert said in reason and f"gpu_alloc_unused_s={WINDOW_S:g} s" in reason
        assert "mltop serve --record PATH" in reason and "--recording PATH" in reason


def test_a_recording_that_ends_long_before_the_doctor_gives_no_window(recorded):
    from mltop.probes.recording import RecordingStore
    from mltop.probes.recording.allocation_history import with_recorded_allocations

    live = recorded["sweeps"][-1]
    store = RecordingStore(recorded["path"])
    try:
        found = with_recorded_allocations(live, store, live.taken_at + 3600)
        fresh = with_recorded_allocations(live, store, live.taken_at + 1)
    finally:
        store.close()
    holder = _pod(live, "holder")
    assert "ends at" in found.unknown[holder.id] and "before this run" in found.unknown[holder.id]
    assert fresh.unknown == {}
    (held,) = _pod(fresh.snapshot, "holder").kubernetes.gpus_allocated
    assert held.unused_since == recorded["sweeps"][0].taken_at


# --------------------------------------------------------------------------- a version-1 recording


def _v1_blob(cids, statuses, columns):
    """A container blob in the version-1 layout, written out here (not by the codec): n, m, cids, statuses,
    the nine figure columns, no GPU uses."""
    n = len(cids)
    ints = [*cids, *statuses, *[v for column in columns for v in column]]
    assert len(ints) == n * 11
    return zlib.compress(struct.pack(f"<II{len(ints)}I", n, 0, *ints), 6)


def test_a_version_1_recording_still_replays_and_is_carried_forward(recorded, tmp_path):
    """A recording from before pods were kept: its pod container replays with its pod from the kubelet's labels
    (no QoS, no allocations); a recorder opening it migrates it forward and records pods from then on."""
    from mltop.probes.recording import Recorder, RecordingStore
    from mltop.probes.recording import codec
    from mltop.probes.recording.schema import MIGRATIONS, SCHEMA_VERSION

    live = recorded["sweeps"][-1]
    holder = _pod(live, "holder")
    path = str(tmp_path / "v1.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(f"BEGIN;\n{MIGRATIONS[1]}\nPRAGMA user_version=1;\nCOMMIT;")
    hid = db.execute("INSERT INTO hosts(doc) VALUES (?)", (codec.host_doc(live.host),)).lastrowid
    t0 = int(live.taken_at * 1000) - 10_000
    cid = db.execute("INSERT INTO containers(id, name, image, config, first_t, last_t) VALUES (?,?,?,?,?,?)",
                     (holder.id, holder.name, holder.image, codec.config_doc(holder.config), t0, t0)).lastrowid
    none = 0xFFFFFFFF
    columns = [[150], [1024], [none], [0], [0], [0], [0], [3], [0]]  # 1.5 % CPU, 1 MiB, pids 3
    db.execute("INSERT INTO sweeps(t, interval_ms, hid, host_load, gpus, containers) VALUES (?,?,?,?,?,?)",
               (t0, 1000, hid, None, None, _v1_blob([cid], [0], columns)))
    db.close()

    store = RecordingStore(path)
    try:
        old = store.snapshot(t0)
    finally:
        store.close()
    (c,) = old.containers
    assert (c.name, c.cpu_percent, c.memory_bytes, c.pids) == (holder.name, 1.5, 1 << 20, 3)
    k = c.kubernetes
    assert (k.namespace, k.pod, k.container, k.qos, k.gpus_allocated) == (NS, "holder", "main", None, ())

    recorder = Recorder(path, watch_engine=False).start()
    try:
        recorder.record(live)
        recorder.flush()
    finally:
        recorder.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    check.close()
    store = RecordingStore(path)
    try:
        assert _pod(store.snapshot(t0), "holder").kubernetes.qos is None  # the old sweep as it was
        new = _pod(store.snapshot(int(live.taken_at * 1000)), "holder").kubernetes
        assert (new.qos, new.gpus_allocated) == ("Guaranteed", holder.kubernetes.gpus_allocated)
    finally:
        store.close()


def test_thinning_keeps_the_last_pod_facts_and_mig_devices(tmp_path):
    """Retention consolidates old sweeps into one a minute: each keeps its bucket's last pod facts (an allocation
    going out of use keeps when) and MIG devices, and a Docker container beside stays without any."""
    from builders import container, gpu, gpu_process, replace, snapshot

    from mltop.probes.model import GpuAllocation, KubernetesInfo, MigDevice
    from mltop.probes.recording import Recorder, RecordingStore

    now = time.time()
    start = (now - 2 * 3600) // 60 * 60  # two hours ago, on a minute: thinned to one sweep a minute
    labels = {"io.kubernetes.pod.namespace": NS, "io.kubernetes.pod.name": "p", "io.kubernetes.pod.uid": "u",
              "io.kubernetes.container.name": "main"}
    base = container(f"{NS}/p/main", config=replace(container().config, labels=labels))
    plain = container("plain")
    path = str(tmp_path / "h.db")
    recorder = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    try:
        for k in range(24):  # 2 minutes at 5 s; the GPU goes out of use at 70 s
            t = start + 5 * k
            in_use = t < start + 70
            alloc = GpuAllocation("nvidia.com/mig-1g.10gb", MIG, MIG, mig=True, index=0, in_use=in_use,
                                  unused_since=None if in_use else start + 70)
            pod = replace(base, kubernetes=KubernetesInfo(NS, "p", "u", "main", "Burstable", gpus_allocated=(alloc,)))
            mig = MigDevice(0, MIG, 1, 0, GIB, 10 * GIB, host_pids=(4000,) if in_use else (), profile="1g.10gb")
            g = replace(gpu(0), mig_devices=(mig,), processes=(gpu_process(4000, container=pod),) if in_use else ())
            recorder.record(snapshot([pod, plain], [g], taken_at=t))
        recorder.enforce_retention(int(now * 1000))
    finally:
        recorder.close()
    store = RecordingStore(path)
    try:
        kept = [store.snapshot(t) for t in store.times]
    finally:
        store.close()
    assert len(kept) == 2  # one per minute
    facts = [(next(c for c in s.containers if c.name == f"{NS}/p/main").kubernetes.gpus_allocated[0]) for s in kept]
    assert [(a.in_use, a.unused_since) for a in facts] == [(True, None), (False, start + 70)]
    assert [s.gpus[0].mig_devices[0].host_pids for s in kept] == [(4000,), ()]
    assert all(next(c for c in s.containers if c.name == "plain").kubernetes is None for s in kept)


def test_the_window_reaches_back_over_an_agent_restart_but_not_over_a_gap(tmp_path):
    """Two recorder runs of the same node (the agent restarted: its sampler counts unused_since afresh). The
    doctor's window reaches back into the first run when the second follows it without a gap and the first saw
    the device unused too; not over a gap, and not past a sweep that saw it in use."""
    from builders import container, replace, snapshot

    from mltop.probes.model import GpuAllocation, KubernetesInfo
    from mltop.probes.recording import Recorder, RecordingStore
    from mltop.probes.recording.allocation_history import with_recorded_allocations

    labels = {"io.kubernetes.pod.namespace": NS, "io.kubernetes.pod.name": "p", "io.kubernetes.pod.uid": "u",
              "io.kubernetes.container.name": "main"}
    base = container(f"{NS}/p/main", config=replace(container().config, labels=labels))

    def sweep(t, in_use, since):
        alloc = GpuAllocation("nvidia.com/gpu", GPU_A, GPU_A, index=0, in_use=in_use, unused_since=since)
        return snapshot([replace(base, kubernetes=KubernetesInfo(NS, "p", "u", "main", None, gpus_allocated=(alloc,)))],
                        taken_at=t, interval_s=1.0)

    def doctor_sees(runs):
        path = str(tmp_path / f"h{len(list(tmp_path.iterdir()))}.db")
        for run in runs:  # one recorder (an agent's run) each
            recorder = Recorder(path, watch_engine=False).start()
            for snap in run:
                recorder.record(snap)
            recorder.close()
        store = RecordingStore(path)
        try:
            now = runs[-1][-1].taken_at + 1
            found = with_recorded_allocations(sweep(now + 0.25, False, now), store, now)
        finally:
            store.close()
        assert found.unknown == {}
        return found.snapshot.containers[0].kubernetes.gpus_allocated[0].unused_since

    t = 1_800_000_000.0
    first_run = [sweep(t, True, None), sweep(t + 1, False, t + 1), sweep(t + 2, False, t + 1)]
    assert doctor_sees([first_run, [sweep(t + 5, False, t + 5), sweep(t + 6, False, t + 5)]]) == t + 1
    assert doctor_sees([first_run, [sweep(t + 500, False, t + 500)]]) == t + 500  # a gap: not before it
    in_use_at_its_end = first_run[:2] + [sweep(t + 2, True, None)]
    assert doctor_sees([in_use_at_its_end, [sweep(t + 5, False, t + 5)]]) == t + 5
