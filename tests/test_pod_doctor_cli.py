"""Issue 21's "done when", end to end: `mltop doctor --json` on a node of test pods (real pods in the private
containerd; the project's pod-resources server as the kubelet's; the simulated NVML listing the pods' real PIDs;
a device-plugins directory with the kubelet's socket and no NVIDIA plugin; a containerd config without an
`nvidia` runtime; no Docker engine) names every planted fault, and only those, each with a Kubernetes fix and no
Docker word, and says nothing of the healthy look-alikes. Each finding's own wording is tested beside its check
(test_cri_doctor, test_cri_crashloop, test_pod_gpus, test_pod_checks, test_node_runtime); this test is the
command a user runs, whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from cri_harness import ContainerSpec
from fakenvml import FakeGpu, FakeProcess, FakeScenario, write_scenario
from pod_resources_server import PodResourcesServer
from test_node_runtime import kubelet_dir
from test_pod_checks import DOCKER_WORDS, HARMLESS, TORCH_OOM

NS = "oncall"
GIB = 1 << 30
GPU = [f"GPU-0c000000-0000-0000-0000-00000000000{i}" for i in range(4)]
SHM = 1 << 30  # a GPU pod's memory-backed emptyDir at /dev/shm (the pods whose fault is elsewhere have one)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (code, pod/container) the doctor must name; nothing else on these pods
PLANTED = {
    ("oom.killed", "oomer/loader"),  # a child killed at the container's 32 MiB memory limit
    ("cpu.throttled", "busy/server"),  # a busy loop at a 0.5-CPU quota
    ("shm.too_small", "shmfull/main"),  # 60 MiB written to the sandbox's 64 MiB /dev/shm
    ("container.restart_loop", "crasher/train"),  # exits 3, restarted four times as the kubelet does
    ("k8s.gpu_runtime", "nort/main"),  # the device plugin's env under runc, containerd without `nvidia`
    ("k8s.gpu_used_unallocated", "leaky/main"),  # on GPU 2 (cdiok's), allocated nothing
    ("driver.cuda_too_new", "cudanew/main"),  # CUDA 12.8 image on a 12.4 driver
    ("oom.cuda", "cudaoom/main"),  # torch's CUDA OOM in its log
}
HEALTHY = ("steady/main", "gpuok/main", "once/main", "shmok/main", "quietlog/main", "cdiok/main")


def _echo(line: str) -> list[str]:
    return ["sh", "-c", f"echo '{line}'; exec sleep 600"]


@pytest.fixture(scope="module")
def node(cri_node, fake_nvml_lib, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pod-doctor")
    specs = {
        "oomer": ([ContainerSpec("loader", ["sh", "-c", "tail /dev/zero; sleep 600"], memory_limit_bytes=32 << 20)],
                  {}),
        "busy": ([ContainerSpec("server", ["sh", "-c", "while :; do :; done"], cpu_quota_us=50_000)], {}),
        "shmfull": ([ContainerSpec("main", ["sh", "-c", "dd if=/dev/zero of=/dev/shm/b bs=1M count=60 2>/dev/null; "
                                                        "exec sleep 600"])], {}),
        "crasher": ([ContainerSpec("train", ["sh", "-c", "echo 'RuntimeError: shard 7 is corrupt' >&2; exit 3"])],
                    {}),
        "nort": ([ContainerSpec("main", ["sleep", "600"], env={"NVIDIA_VISIBLE_DEVICES": GPU[3]}, shm_bytes=SHM)],
                 {}),
        "leaky": ([ContainerSpec("main", ["sleep", "600"], shm_bytes=SHM)], {}),
        "cudanew": ([ContainerSpec("main", ["sleep", "600"], env={"CUDA_VERSION": "12.8.0"}, shm_bytes=SHM)],
                    {"runtime_handler": "nvidia"}),
        "cudaoom": ([ContainerSpec("main", _echo(TORCH_OOM), shm_bytes=SHM)], {"runtime_handler": "nvidia"}),
        # the look-alikes: limits at rest, a GPU pod given what it uses under NVIDIA's handler with a CUDA the
        # driver supports, a container restarted once, a little /dev/shm, "memory" in a log without an OOM
        "steady": ([ContainerSpec("main", ["sleep", "600"], memory_limit_bytes=128 << 20, cpu_quota_us=50_000)],
                   {"qos": "Guaranteed"}),
        "gpuok": ([ContainerSpec("main", ["sleep", "600"], env={"CUDA_VERSION": "12.4.1",
                                                               "NVIDIA_VISIBLE_DEVICES": GPU[0]}, shm_bytes=SHM)],
                  {"runtime_handler": "nvidia"}),
        "once": ([ContainerSpec("main", ["sh", "-c", "echo bye; exit 3"])], {}),
        "shmok": ([ContainerSpec("main", ["sh", "-c", "dd if=/dev/zero of=/dev/shm/b bs=1M count=8 2>/dev/null; "
                                                      "exec sleep 600"])], {}),
        "quietlog": ([ContainerSpec("main", _echo(HARMLESS), shm_bytes=SHM)], {"runtime_handler": "nvidia"}),
        # given its GPU by CDI (the device plugin's cdi-annotations strategy) under the default runc
        "cdiok": ([ContainerSpec("main", ["sleep", "600"], shm_bytes=SHM, env={"CUDA_VERSION": "12.4.1"},
                                 annotations={"cdi.k8s.io/nvidia-device-plugin_main": "nvidia.com/gpu=0"})], {}),
    }
    kubelet = PodResourcesServer()
    pods = {}
    try:
        for name, (containers, kwargs) in specs.items():
            pods[name] = cri_node.run_pod(NS, name, containers, **kwargs)
        cri_node.steady_cpu(pods["busy"])
        cri_node.crash_loop(pods["crasher"], "train", 4)
        running = ["sh", "-c", "echo up again; exec sleep 600"]
        cri_node.crash_loop(pods["once"], "main", 1, command=running)
        kubelet.allocations = {  # (nort: given GPU 3 by the device plugin, which set its env; no runtime to inject it)
            (NS, "nort", "main"): [("nvidia.com/gpu", [GPU[3]])],
            (NS, "gpuok", "main"): [("nvidia.com/gpu", [GPU[0]])],
            (NS, "cudanew", "main"): [("nvidia.com/gpu", [GPU[1]])],
            (NS, "cudaoom", "main"): [("nvidia.com/gpu", [f"{GPU[1]}::1"])],
            (NS, "quietlog", "main"): [("nvidia.com/gpu", [f"{GPU[1]}::2"])],
            (NS, "cdiok", "main"): [("nvidia.com/gpu", [GPU[2]])],
        }
        pid = {name: cri_node.init_pid(pod.containers[next(iter(pod.containers))]) for name, pod in pods.items()
               if name not in ("crasher", "once")}
        scenario = tmp / "scenario.txt"
        write_scenario(scenario, FakeScenario(driver_version="550.54.15", cuda_version=12040, gpus=[
            FakeGpu(uuid=GPU[0], pci="00000000:20:00.0", util=70, mem_used=6 * GIB,
                    processes=[FakeProcess(pid["gpuok"], used_memory=6 * GIB, sm=70)]),
            FakeGpu(uuid=GPU[1], pci="00000000:21:00.0", util=90, mem_used=76 * GIB, processes=[
                FakeProcess(pid["cudanew"], used_memory=4 * GIB, sm=30),
                FakeProcess(pid["cudaoom"], used_memory=70 * GIB, sm=50),
                FakeProcess(pid["quietlog"], used_memory=2 * GIB, sm=10)]),
            FakeGpu(uuid=GPU[2], pci="00000000:22:00.0", util=60, mem_used=5 * GIB, processes=[
                FakeProcess(pid["leaky"], used_memory=3 * GIB, sm=40),
                FakeProcess(pid["cdiok"], used_memory=2 * GIB, sm=20)]),
            FakeGpu(uuid=GPU[3], pci="00000000:23:00.0"),
        ]))
        config = tmp / "config.toml"  # the node's containerd: runc only
        config.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
                          'default_runtime_name = "runc"\n'
                          '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
                          'runtime_type = "io.containerd.runc.v2"\n')
        plugins = kubelet_dir(tmp)  # the kubelet's socket, no NVIDIA plugin's
        oom_cgroup = f"/sys/fs/cgroup/memory/kubepods/burstable/pod{pods['oomer'].uid}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the loader's child killed at its limit before the doctor looks
            try:
                with open(f"{oom_cgroup}/{pods['oomer'].containers['loader']}/memory.oom_control") as f:
                    if "oom_kill 1" in f.read():
                        break
            except OSError:
                pass
            time.sleep(0.3)
        env = dict(os.environ, MLTOP_FAKE_NVML_SCENARIO=str(scenario), MLTOP_KMSG=str(tmp / "no-kmsg"))
        run = subprocess.run(
            [sys.executable, "-m", "mltop.tui.cli", "doctor", "--json", "--interval", "1", "--no-recording",
             "--docker-host", "unix:///nonexistent/mltop-test-docker.sock", "--cri-endpoint", cri_node.endpoint,
             "--pod-resources-socket", kubelet.endpoint, "--nvml-lib", str(fake_nvml_lib),
             "--containerd-config", str(config), "--device-plugins-dir", plugins,
             *(f"{NS}/{name}" for name in pods)],  # a pod's namespace/pod selects its containers
            capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
        yield run
    finally:
        for pod in pods.values():
            cri_node.remove_pod(pod)
        kubelet.stop()


def _on_pods(run) -> dict[tuple[str, str], dict]:
    doc = json.loads(run.stdout)
    return {(f["code"], f["container"][len(NS) + 1:]): f for f in doc["findings"]
            if (f["container"] or "").startswith(NS + "/")}


def test_mltop_doctor_names_every_planted_fault_and_only_those(node):
    assert node.returncode in (1, 2), node.stderr  # warnings (exit 1) or worse
    found = _on_pods(node)
    assert set(found) == PLANTED, (sorted(set(found) - PLANTED), sorted(PLANTED - set(found)))
    for name in HEALTHY:
        assert not [k for k in found if k[1] == name], name


def test_the_node_without_nvidias_device_plugin_is_named_once_for_the_host(node):
    doc = json.loads(node.stdout)
    (plugin,) = [f for f in doc["findings"] if f["code"] == "k8s.device_plugin_missing"]
    assert plugin["container"] is None and "kubectl describe node" in plugin["fix"]


def test_every_pod_finding_gives_a_kubernetes_fix_and_no_docker_word(node):
    for (code, who), f in _on_pods(node).items():
        text = "\n".join([f["title"], *f["evidence"], f["fix"]])
        assert not DOCKER_WORDS.search(text), (code, who, DOCKER_WORDS.search(text).group(0))
        assert ("kubectl" in f["fix"] or "resources.limits" in f["fix"] or "runtimeClassName" in f["fix"]
                or "containers: [{name:" in f["fix"] or "emptyDir" in f["fix"]), (code, who, f["fix"])
