"""GPU allocation beside GPU use for pod containers: the kubelet's pod-resources API (a grpcio server of the
test's own on a unix socket, fed the real pods' names from the private containerd) joined to what the simulated
NVML shows the pods' host PIDs using. Each finding fires on its case and stays silent on a healthy look-alike."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time

import pytest
from cri_harness import ContainerSpec
from fakenvml import HEALTHY, FakeGpu, FakeMig, FakeProcess, FakeScenario, write_scenario
from pod_resources_server import PodResourcesServer

GIB = 1 << 30
GPU_A = "GPU-a0000000-0000-0000-0000-00000000000a"  # allocated to holder, used by nobody
GPU_B = "GPU-b0000000-0000-0000-0000-00000000000b"  # time-sliced: replica 1 to worker, which uses it
GPU_C = "GPU-c0000000-0000-0000-0000-00000000000c"  # used by leaky, allocated to nobody
GPU_M = "GPU-d0000000-0000-0000-0000-00000000000d"  # MIG mode: its MIG device to migpod, which uses it
MIG = "MIG-e0000000-0000-0000-0000-00000000000e"
WINDOW_S = 1.0


@pytest.fixture(scope="module")
def kubelet():
    server = PodResourcesServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gpu_pods(cri_node, kubelet, fake_nvml_lib, tmp_path_factory):
    """Four real pods; the kubelet's table allocates to three of them; the simulated NVML lists three of their
    init PIDs on GPUs; two sweeps WINDOW_S apart (the doctor's window set to WINDOW_S)."""
    from mltop.probes.sampler import ProbeOptions, Sampler

    names = ("holder", "worker", "leaky", "migpod")
    pods = {name: cri_node.run_pod("ml-team", name, [ContainerSpec("main", ["sleep", "600"])]) for name in names}
    sampler = None
    try:
        kubelet.allocations = {
            ("ml-team", "holder", "main"): [("nvidia.com/gpu", [GPU_A])],
            ("ml-team", "worker", "main"): [("nvidia.com/gpu", [f"{GPU_B}::1"])],
            ("ml-team", "migpod", "main"): [("nvidia.com/mig-1g.10gb", [MIG])],
            ("other", "elsewhere", "main"): [("nvidia.com/gpu", [GPU_C])],  # a pod not on this runtime
        }
        pid = {name: cri_node.init_pid(pod.containers["main"]) for name, pod in pods.items()}
        scenario = tmp_path_factory.mktemp("pod-gpus") / "scenario.txt"
        write_scenario(scenario, FakeScenario(gpus=[
            FakeGpu(uuid=GPU_A, pci="00000000:1A:00.0"),
            FakeGpu(uuid=GPU_B, pci="00000000:1B:00.0", util=60, mem_used=9 * GIB, processes=[
                FakeProcess(pid["worker"], used_memory=8 * GIB, sm=60)]),
            FakeGpu(uuid=GPU_C, pci="00000000:1C:00.0", util=30, mem_used=3 * GIB, processes=[
                FakeProcess(pid["leaky"], used_memory=2 * GIB, sm=30)]),
            FakeGpu(uuid=GPU_M, pci="00000000:1D:00.0", mem_used=GIB, health=dict(HEALTHY, mig_mode=1), processes=[
                FakeProcess(pid["migpod"], used_memory=GIB, sm=10, mig=0)]),
        ], migs=[FakeMig(gpu=3, index=0, uuid=MIG, mem_used=GIB)]))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLTOP_FAKE_NVML_SCENARIO", str(scenario))
            sampler = Sampler(ProbeOptions(nvml_lib=str(fake_nvml_lib), cri_endpoint=cri_node.endpoint,
                                           pod_resources_socket=kubelet.endpoint, watch_events=False))
            first = sampler.sweep()
            time.sleep(WINDOW_S + 0.2)
            second = sampler.sweep()
        yield dict(pods=pods, first=first, second=second, engine=sampler.engine, scenario=str(scenario),
                   lib=str(fake_nvml_lib))
    finally:
        if sampler is not None:
            sampler.close()
        for pod in pods.values():
            cri_node.remove_pod(pod)


def _c(snap, name):
    (c,) = [c for c in snap.containers if c.name == f"ml-team/{name}/main"]
    return c


def _findings(run, snap, previous=None):
    from mltop.diagnostics.checks import Thresholds
    from mltop.diagnostics.doctor import run_doctor

    names = [f"ml-team/{n}/main" for n in run["pods"]]
    result = run_doctor(snap, run["engine"], containers=names, previous=previous,
                        thresholds=Thresholds(gpu_alloc_unused_s=WINDOW_S))
    return result


def test_allocations_join_pod_containers_by_namespace_pod_and_container(gpu_pods):
    from mltop.probes.model import snapshot_to_json

    snap = gpu_pods["second"]
    (source,) = [s for s in snap.host.sources if s.kind == "pod-resources"]
    assert source.ok and source.runtime == "kubelet"
    (held,) = _c(snap, "holder").kubernetes.gpus_allocated
    assert (held.uuid, held.index, held.replica, held.mig, held.in_use) == (GPU_A, 0, None, False, False)
    assert held.unused_since == pytest.approx(gpu_pods["first"].taken_at)
    (shared,) = _c(snap, "worker").kubernetes.gpus_allocated
    assert (shared.device_id, shared.uuid, shared.replica, shared.index, shared.in_use) == (
        f"{GPU_B}::1", GPU_B, 1, 1, True)
    (mig,) = _c(snap, "migpod").kubernetes.gpus_allocated
    assert (mig.uuid, mig.mig, mig.index, mig.in_use, mig.resource_name) == (MIG, True, 3, True, "nvidia.com/mig-1g.10gb")
    assert _c(snap, "leaky").kubernetes.gpus_allocated == ()
    doc = json.loads(json.dumps(snapshot_to_json(snap)))
    (worker,) = [c for c in doc["containers"] if c["name"] == "ml-team/worker/main"]
    assert worker["kubernetes"]["gpus_allocated"] == [{
        "resource_name": "nvidia.com/gpu", "device_id": f"{GPU_B}::1", "uuid": GPU_B, "replica": 1, "mig": False,
        "index": 1, "in_use": True, "unused_since": None}]


def test_gpu_allocated_unused_fires_after_its_window_and_not_on_a_used_allocation(gpu_pods):
    first = _findings(gpu_pods, gpu_pods["first"])
    assert not [f for f in first.findings if f.code == "k8s.gpu_allocated_unused"], "no window has passed yet"
    second = _findings(gpu_pods, gpu_pods["second"], previous=gpu_pods["first"])
    (finding,) = [f for f in second.findings if f.code == "k8s.gpu_allocated_unused"]
    assert finding.container == "ml-team/holder/main"  # worker and migpod use theirs: silent
    text = "\n".join(finding.evidence)
    assert f"nvidia.com/gpu {GPU_A} (GPU 0)" in text and "gpu_alloc_unused_s=1.0" in text
    assert "kubectl -n ml-team delete pod holder" in finding.fix


def test_gpu_used_unallocated_fires_on_a_stray_process_and_not_on_allocated_ones(gpu_pods):
    result = _findings(gpu_pods, gpu_pods["second"], previous=gpu_pods["first"])
    (finding,) = [f for f in result.findings if f.code == "k8s.gpu_used_unallocated"]
    assert finding.container == "ml-team/leaky/main"  # worker (a time-sliced replica) and migpod: silent
    text = "\n".join(finding.evidence)
    assert "allocated to ml-team/leaky/main: no GPU" in text and f"runs on GPU 2 ({GPU_C})" in text
    assert "nvidia.com/gpu" in finding.fix


def test_the_dashboard_and_serve_show_allocation_beside_use(gpu_pods):
    from prometheus_client import CollectorRegistry, generate_latest

    from mltop.tui.serve.metrics import gpu_allocated_family
    from mltop.tui.serve.pod_labels import label_pods
    from mltop.tui.widgets.containers_table import container_cells

    snap = gpu_pods["second"]
    cells = {n: container_cells(_c(snap, n)) for n in gpu_pods["pods"]}
    assert {n: (c["gpu"].plain, c["gpu_alloc"].plain) for n, c in cells.items()} == {
        "holder": ("", "0"), "worker": ("1", "1"), "leaky": ("2", ""), "migpod": ("3", "3")}

    class Collector:
        def collect(self):
            yield from label_pods([gpu_allocated_family(snap.containers)], snap, snap.gpus)

    registry = CollectorRegistry()
    registry.register(Collector())
    text = generate_latest(registry).decode()
    holder = _c(snap, "holder")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("mltop_container_gpu_allocated{") and GPU_A in ln]
    for label in (f'container="main"', f'container_id="{holder.id}"', f'device_id="{GPU_A}"', 'gpu="0"',
                  'name="ml-team/holder/main"', 'namespace="ml-team"', 'pod="holder"', 'resource="nvidia.com/gpu"',
                  f'UUID="{GPU_A}"'):
        assert label in line, (label, line)
    assert line.endswith(" 0.0")
    assert f'device_id="{GPU_B}::1"' in text and "UUID=\"%s\"" % GPU_B in text
    if shutil.which("promtool"):
        done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_without_the_kubelets_socket_it_says_so_once_and_carries_on(cri_node, tmp_path):
    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.sampler import ProbeOptions, Sampler

    pod = cri_node.run_pod("ml-team", "nokubelet", [ContainerSpec("main", ["sleep", "300"])])
    missing = str(tmp_path / "kubelet.sock")
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=cri_node.endpoint, pod_resources_socket=missing,
                                   watch_events=False))
    said: list[str] = []

    class Keep(logging.Handler):  # on the logger itself: the CLI's logging set-up (other tests) may stop propagation
        def emit(self, record):
            said.append(record.getMessage())

    logger = logging.getLogger("mltop.probes.cri.podresources")
    handler, level = Keep(logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        snaps = [sampler.sweep() for _ in range(3)]
        result = run_doctor(snaps[-1], sampler.engine, containers=["ml-team/nokubelet/main"])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        sampler.close()
        cri_node.remove_pod(pod)
    assert all(s.container(pod.containers["main"]) is not None for s in snaps)
    (source,) = [s for s in snaps[-1].host.sources if s.kind == "pod-resources"]
    assert source.status == "unreachable" and missing in source.error
    assert said.count(source.error) == 1, said
    assert not [f for f in result.findings if f.code.startswith("k8s.gpu_")]


def test_a_host_without_kubernetes_asks_no_kubelet(monkeypatch, tmp_path):
    from mltop.probes.cri.podresources import PodResourcesSource

    monkeypatch.delenv("MLTOP_POD_RESOURCES_SOCKET", raising=False)
    source = PodResourcesSource()
    assert source.list(pods_seen=False) == (None, {}) or os.path.exists("/var/lib/kubelet/pod-resources/kubelet.sock")
    monkeypatch.setenv("MLTOP_POD_RESOURCES_SOCKET", "none")
    assert PodResourcesSource().list(pods_seen=True) == (None, {})


async def test_the_dashboard_shows_gpu_alloc_beside_gpu(gpu_pods, cri_node, kubelet, monkeypatch):
    """Under pilot: the GPU ALLOC column appears (some pod container holds an allocation) beside GPU."""
    from conftest import until

    from mltop.tui.app import MltopApp
    from mltop.tui.screens.dashboard import DashboardScreen

    monkeypatch.setenv("MLTOP_FAKE_NVML_SCENARIO", gpu_pods["scenario"])
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", cri_node.endpoint)
    monkeypatch.setenv("MLTOP_POD_RESOURCES_SOCKET", kubelet.endpoint)
    app = MltopApp(nvml_lib=gpu_pods["lib"], interval=0.5)
    worker = gpu_pods["pods"]["worker"].containers["main"]
    holder = gpu_pods["pods"]["holder"].containers["main"]
    async with app.run_test(size=(200, 50)) as pilot:
        def ready():
            table = app.screen.table if isinstance(app.screen, DashboardScreen) else None
            return table is not None and worker in table.keys_in_order and table.cell_text(worker, "gpu").strip()
        await until(pilot, ready, timeout=30, what="the pods with their GPUs")
        table = app.screen.table
        assert "gpu_alloc" in table.visible_columns
        assert (table.cell_text(worker, "gpu").strip(), table.cell_text(worker, "gpu_alloc").strip()) == ("1", "1")
        assert (table.cell_text(holder, "gpu").strip(), table.cell_text(holder, "gpu_alloc").strip()) == ("", "0")
