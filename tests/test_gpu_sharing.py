"""Time-sliced and MPS GPUs: who shares each GPU, each sharer's memory and SM, and the sum. Real pods from the
private containerd, allocations from the project's pod-resources server (time-slicing replicas `GPU-…::N`),
a real host process named nvidia-cuda-mps-server, and the simulated NVML listing their host PIDs on the GPUs
(MPS clients through NVML's MPS process call); checked in snapshot --json, the dashboard and serve's
exposition, with healthy look-alikes (a GPU one container uses, beside a desktop's graphics process)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest
from cri_harness import ContainerSpec
from fakenvml import HEALTHY, FakeGpu, FakeMig, FakeProcess, FakeScenario, write_scenario
from pod_resources_server import PodResourcesServer

GIB = 1 << 30
MIB = 1 << 20
GPU_T = "GPU-71000000-0000-0000-0000-000000000001"  # time-sliced: replicas ::0 ::1 ::2 to ts-a, ts-b, ts-idle
GPU_M = "GPU-3e000000-0000-0000-0000-000000000002"  # MPS: a host MPS server, two pods as its clients
GPU_S = "GPU-5a000000-0000-0000-0000-000000000003"  # shared, nobody asked: a hostile-named pod and a host process
GPU_H = "GPU-4e000000-0000-0000-0000-000000000004"  # healthy: one pod, and a desktop's graphics process
GPU_G = "GPU-61000000-0000-0000-0000-000000000005"  # MIG mode: MIG 0 time-sliced by two pods, MIG 1 one pod
MIG_0 = "MIG-00000000-0000-0000-0000-000000000050"
MIG_1 = "MIG-00000000-0000-0000-0000-000000000051"
HOSTILE = "[red]evil[bold]"  # a pod name that markup would eat

# pod -> (GPU index, memory, SM %, NVML process type, MIG slot)
USE = {
    "ts-a": (0, 6 * GIB, 40, "compute", None),
    "ts-b": (0, 2 * GIB, 25, "compute", None),
    "mps-a": (1, 3 * GIB, 50, "mps", None),
    "mps-b": (1, 1 * GIB, 30, "mps", None),
    HOSTILE: (2, 5 * GIB, 10, "compute", None),
    "solo": (3, 4 * GIB, 70, "compute", None),
    "mig-a": (4, 2 * GIB, 20, "compute", 0),
    "mig-b": (4, 1 * GIB, 15, "compute", 0),
    "mig-c": (4, 3 * GIB, 60, "compute", 1),
}
ALLOCATED = {
    "ts-a": f"{GPU_T}::0", "ts-b": f"{GPU_T}::1", "ts-idle": f"{GPU_T}::2",
    "mps-a": f"{GPU_M}::0", "mps-b": f"{GPU_M}::1", "solo": GPU_H,
    "mig-a": f"{MIG_0}::0", "mig-b": f"{MIG_0}::1", "mig-c": MIG_1,
}


def _host_process(tmp, name: str) -> subprocess.Popen:
    """A real host process whose /proc comm is `name` (cut to 15 characters by the kernel, as for the real one)."""
    binary = tmp / name
    if not binary.exists():
        shutil.copy(shutil.which("sleep"), binary)
    return subprocess.Popen([str(binary), "600"])


@pytest.fixture(scope="module")
def shared(cri_node, fake_nvml_lib, tmp_path_factory):
    from mltop.probes.sampler import ProbeOptions, Sampler

    tmp = tmp_path_factory.mktemp("gpu-sharing")
    kubelet = PodResourcesServer()
    names = [*USE, "ts-idle"]
    pods, hosts, sampler = {}, {}, None
    try:
        for name in names:
            pods[name] = cri_node.run_pod("ml-team", name, [ContainerSpec("main", ["sleep", "600"])])
        kubelet.allocations = {("ml-team", name, "main"): [
            ("nvidia.com/mig-1g.10gb" if device.startswith("MIG-") else "nvidia.com/gpu", [device])]
            for name, device in ALLOCATED.items()}
        hosts = {"mps": _host_process(tmp, "nvidia-cuda-mps-server"), "job": _host_process(tmp, "python3"),
                 "xorg": _host_process(tmp, "Xorg"), "xorg2": _host_process(tmp, "Xorg")}
        pid = {name: cri_node.init_pid(pod.containers["main"]) for name, pod in pods.items()}
        procs: dict[int, list[FakeProcess]] = {i: [] for i in range(5)}
        for name, (index, memory, sm, kind, mig) in USE.items():
            procs[index].append(FakeProcess(pid[name], type=kind, used_memory=memory, sm=sm, mig=mig))
        procs[1].append(FakeProcess(hosts["mps"].pid, used_memory=512 * MIB))  # the MPS server: compute
        procs[2].append(FakeProcess(hosts["job"].pid, used_memory=GIB, sm=5))  # a host job beside the pod
        procs[2].append(FakeProcess(hosts["xorg"].pid, type="graphics", used_memory=256 * MIB))
        procs[3].append(FakeProcess(hosts["xorg2"].pid, type="graphics", used_memory=256 * MIB))
        gpus = [FakeGpu(uuid=u, pci=f"00000000:{0x1A + i:02X}:00.0", mem_used=12 * GIB, processes=procs[i])
                for i, u in enumerate((GPU_T, GPU_M, GPU_S, GPU_H, GPU_G))]
        gpus[4].health = dict(HEALTHY, mig_mode=1)
        scenario = tmp / "scenario.txt"
        write_scenario(scenario, FakeScenario(gpus=gpus, migs=[
            FakeMig(gpu=4, index=0, uuid=MIG_0, mem_used=3 * GIB, gi=1),
            FakeMig(gpu=4, index=1, uuid=MIG_1, mem_used=3 * GIB, gi=2)]))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLTOP_FAKE_NVML_SCENARIO", str(scenario))
            sampler = Sampler(ProbeOptions(nvml_lib=str(fake_nvml_lib), cri_endpoint=cri_node.endpoint,
                                           pod_resources_socket=kubelet.endpoint, watch_events=False))
            snap = sampler.sweep()
        yield dict(snap=snap, pods=pods, pid=pid, hosts={k: p.pid for k, p in hosts.items()})
    finally:
        if sampler is not None:
            sampler.close()
        for p in hosts.values():
            p.kill()
            p.wait()
        for pod in pods.values():
            cri_node.remove_pod(pod)
        kubelet.stop()


def _name(pod: str) -> str:
    return f"ml-team/{pod}/main"


def _expected(shared, pods: list[str]) -> list[tuple]:
    """(name, pids, memory, SM) per pod sharer, from the scenario's figures."""
    return [(_name(p), (shared["pid"][p],) if p in USE else (), USE[p][1] if p in USE else 0,
             float(USE[p][2]) if p in USE else 0.0) for p in pods]


def _sharer_tuples(record) -> list[tuple]:
    return [(s["name"], tuple(s["pids"]), s["memory_bytes"], s["sm_percent"]) for s in record["sharers"]]


def test_snapshot_json_names_every_sharer_with_its_memory_and_sm_and_the_sum(shared):
    from mltop.diagnostics.actions.nvidia_smi import host_gpu_view
    from mltop.probes.model import snapshot_to_json

    doc = json.loads(json.dumps(snapshot_to_json(shared["snap"])))
    gpus = {g["uuid"]: g for g in doc["gpus"]}

    (ts,) = gpus[GPU_T]["sharing"]
    assert (ts["uuid"], ts["index"], ts["mig_index"], ts["mode"]) == (GPU_T, 0, None, "time-sliced")
    assert _sharer_tuples(ts) == _expected(shared, ["ts-a", "ts-b", "ts-idle"])  # most memory first
    assert [s["device_ids"] for s in ts["sharers"]] == [[f"{GPU_T}::0"], [f"{GPU_T}::1"], [f"{GPU_T}::2"]]
    assert ts["memory_used_sum"] == 8 * GIB and ts["sm_sum"] == 65.0
    assert ts["memory_total_bytes"] == 80 * GIB and ts["mps_server_pid"] is None

    (mps,) = gpus[GPU_M]["sharing"]
    assert mps["mode"] == "mps" and mps["mps_server_pid"] == shared["hosts"]["mps"]
    assert _sharer_tuples(mps) == _expected(shared, ["mps-a", "mps-b"])  # the server is no sharer
    assert mps["memory_used_sum"] == 4 * GIB and mps["sm_sum"] == 80.0
    clients = {p["host_pid"]: p["type"] for p in gpus[GPU_M]["processes"]}
    assert clients[shared["pid"]["mps-a"]] == "mps" and clients[shared["hosts"]["mps"]] == "compute"
    # `n` on a container without nvidia-smi: the host's view types an MPS client as nvidia-smi does, "M+C"
    view = host_gpu_view(shared["snap"], shared["snap"].container(shared["pods"]["mps-a"].containers["main"]))
    (row,) = [ln for ln in view.splitlines() if re.search(rf"\|\s+{shared['pid']['mps-a']} \|", ln)]
    assert "| M+C " in row and "3072MiB" in row and "50%" in row, row

    (s,) = gpus[GPU_S]["sharing"]  # a pod and a host job, nobody asked: "shared"; the X server is not counted
    assert s["mode"] == "shared"
    assert _sharer_tuples(s) == [(_name(HOSTILE), (shared["pid"][HOSTILE],), 5 * GIB, 10.0),
                                 ("host", (shared["hosts"]["job"],), GIB, 5.0)]
    assert s["sharers"][1]["container_id"] is None and s["memory_used_sum"] == 6 * GIB and s["sm_sum"] == 15.0

    (mig,) = gpus[GPU_G]["sharing"]  # per MIG device: MIG 0 shared by two replicas, MIG 1 by one pod alone
    assert (mig["uuid"], mig["mig_index"], mig["mode"]) == (MIG_0, 0, "time-sliced")
    assert _sharer_tuples(mig) == _expected(shared, ["mig-a", "mig-b"])
    assert mig["memory_used_sum"] == 3 * GIB and mig["memory_total_bytes"] == 10 * GIB and mig["sm_sum"] == 35.0

    assert gpus[GPU_H]["sharing"] == []  # one pod, and a desktop's graphics process: not shared


async def test_the_dashboard_says_shared_in_one_line_and_the_detail_lists_every_sharer(shared):
    from builders import replace
    from test_tui import until

    from mltop.probes.source import StaticSource
    from mltop.tui.app import MltopApp
    from mltop.tui.screens.detail import ContainerDetailScreen
    from mltop.tui.widgets.gpu_panel import GpuCard, gpu_title, gpu_users

    snap = shared["snap"]
    by_uuid = {g.uuid: g for g in snap.gpus}
    assert gpu_users(by_uuid[GPU_T]).plain.startswith("⇄ time-sliced ×3 8.0G SM 65%")
    assert gpu_users(by_uuid[GPU_M]).plain.startswith("⇄ mps ×2 4.0G SM 80%")
    assert gpu_users(by_uuid[GPU_G]).plain.startswith("⇄ MIG 0 time-sliced ×2 3.0G SM 35%")
    hostile = gpu_users(by_uuid[GPU_S]).plain
    assert hostile.startswith("⇄ shared ×2 6.0G SM 15%") and _name(HOSTILE) in hostile  # literally
    healthy = by_uuid[GPU_H]
    assert "⇄" not in gpu_users(healthy).plain and "⇄" not in gpu_title(healthy).plain
    assert gpu_title(by_uuid[GPU_T]).plain.endswith("⇄3")

    # 80x24: the time-sliced and the shared GPU beside the healthy one (two lines each fit), then the detail of
    # a sharer of each
    view = replace(snap, gpus=(by_uuid[GPU_T], by_uuid[GPU_S], healthy))
    ts_a = snap.container(shared["pods"]["ts-a"].containers["main"])
    evil = snap.container(shared["pods"][HOSTILE].containers["main"])

    app = MltopApp(source=StaticSource([view]), interval=0.5)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: len(app.screen.query(GpuCard)) == 3, what="three GPU cards")
        card = next(c for c in app.screen.query(GpuCard) if c.uuid == GPU_T)
        users = card.query_one(".gpu-users")
        await until(pilot, lambda: "⇄ time-sliced ×3" in str(users.render()), what="the sharing line")
        line = "⇄ time-sliced ×3 8.0G SM 65%"
        await until(pilot, lambda: users.region.width > 0, what="the users line laid out")
        assert str(users.render()).startswith(line) and users.region.width >= len(line)  # within 80 columns
        assert users.region.right <= 80
        await until(pilot, lambda: app.screen.table.move_to_key(ts_a.id), what="the ts-a row")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), what="the detail")
        config = str(app.screen.query_one("#config").render())
        assert "shared    GPU 0 time-sliced, 3 sharers" in config
        for pod, memory, sm, replica in (("ts-a", "6.0G", "40%", 0), ("ts-b", "2.0G", "25%", 1),
                                         ("ts-idle", "0B", "0%", 2)):
            (row,) = [ln for ln in config.splitlines() if _name(pod) in ln]
            assert f"{memory}  SM {sm:>4}" in row and f"replica {replica}" in row, row
        (total,) = [ln for ln in config.splitlines() if ln.strip().startswith("sum")]
        assert "8.0G  SM  65%" in total and "of 80G" in total
        await pilot.press("escape")
        await until(pilot, lambda: app.screen.table.move_to_key(evil.id), what="the hostile row")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), what="the detail")
        config = str(app.screen.query_one("#config").render())
        assert "shared    GPU 2 shared, 2 sharers" in config and _name(HOSTILE) in config
        (host,) = [ln for ln in config.splitlines() if ln.strip().startswith("host ")]
        assert "1.0G  SM   5%" in host and f"pid {shared['hosts']['job']}" in host
        await app.workers.wait_for_complete()
        await pilot.pause()


def test_serve_exposes_sharers_per_gpu_and_passes_promtool(shared):
    from mltop.tui.serve.loop import ServeState
    from mltop.tui.serve.metrics import Exposition

    snap = shared["snap"]
    state = ServeState(snapshot=snap, swept_at=time.monotonic(), sweeps=1, last_good_gpus=snap.gpus)
    text = Exposition(lambda: state, "test").render().decode()
    lines = text.splitlines()

    def value(prefix: str, *labels: str) -> float:
        (line,) = [ln for ln in lines if ln.startswith(prefix + "{") and all(lb in ln for lb in labels)]
        return float(line.rsplit(" ", 1)[1])

    ts = (f'UUID="{GPU_T}"', 'gpu="0"', 'mode="time-sliced"', 'GPU_I_ID=""')
    assert value("mltop_gpu_sharers", *ts) == 3
    assert value("mltop_gpu_shared_memory_bytes", *ts) == 8 * GIB
    assert value("mltop_gpu_shared_sm_utilization_percent", *ts) == 65
    for pod in ("ts-a", "ts-b"):
        who = (f'name="{_name(pod)}"', 'namespace="ml-team"', f'pod="{pod}"', 'container="main"', *ts)
        assert value("mltop_container_gpu_sharer_memory_bytes", *who) == USE[pod][1]
        assert value("mltop_container_gpu_sharer_sm_utilization_percent", *who) == USE[pod][2]
    mps = (f'UUID="{GPU_M}"', 'mode="mps"')
    assert value("mltop_gpu_sharers", *mps) == 2 and value("mltop_gpu_shared_sm_utilization_percent", *mps) == 80
    mig = (f'UUID="{GPU_G}"', 'GPU_I_ID="1"', 'mode="time-sliced"')
    assert value("mltop_gpu_sharers", *mig) == 2 and value("mltop_gpu_shared_memory_bytes", *mig) == 3 * GIB
    host = (f'UUID="{GPU_S}"', 'container=""', 'container_id=""')
    assert value("mltop_container_gpu_sharer_memory_bytes", *host) == GIB
    assert not [ln for ln in lines if ln.startswith("mltop_gpu_sharers{") and GPU_H in ln]  # healthy: no series
    assert 'pod="[red]evil[bold]"' in text
    if shutil.which("promtool"):
        done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        # (the one lint: dcgm-exporter's own camelCase label modelName, kept for its dashboards)
        errors = [ln for ln in (done.stdout + done.stderr).splitlines()
                  if not re.match(r"^DCGM_FI_\w+ label names should be written in 'snake_case' not 'camelCase'$", ln)]
        assert not errors, errors


def test_a_recording_replays_the_sharing_it_can_see(shared, tmp_path):
    """Allocations are not recorded: replay finds the sharers again from the recorded processes; the MPS GPU
    stays "mps" (the server's name and the clients' type are recorded), a time-sliced one replays as "shared"."""
    from mltop.probes.recording import Recorder, RecordingSource

    path = str(tmp_path / "h.db")
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    rec.record(shared["snap"])
    rec.flush()
    rec.close()
    replayed = {g.uuid: g for g in RecordingSource(path).latest().gpus}
    (mps,) = replayed[GPU_M].sharing
    assert mps.mode == "mps" and [(s.memory_bytes, s.sm_percent) for s in mps.sharers] == [(3 * GIB, 50.0),
                                                                                          (GIB, 30.0)]
    (ts,) = replayed[GPU_T].sharing
    assert ts.mode == "shared" and len(ts.sharers) == 2 and ts.memory_used_sum == 8 * GIB  # ts-idle: no process
    assert replayed[GPU_H].sharing == ()
