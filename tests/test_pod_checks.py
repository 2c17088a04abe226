"""The existing GPU checks on pod containers, in Kubernetes terms: CUDA too new for the driver, CUDA out of
memory, NCCL's locked-memory limit and an Xid on a pod's GPU. Real pods in the private containerd; the simulated
NVML lists their real host PIDs on its GPUs and delivers the Xids. Each finding names the pod, says `kubectl`, the
pod spec or the node where a Docker finding says `docker run`, and stays silent on a healthy look-alike."""

from __future__ import annotations

import dataclasses
import os
import re
import time

import pytest
from cri_harness import QOS_PARENT, ContainerSpec
from fakenvml import FakeGpu, FakeProcess, FakeScenario, FakeXid, write_scenario
from pod_resources_server import PodResourcesServer

GIB = 1 << 30
NS = "ml-team"
TORCH_OOM = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
             "of 79.11 GiB of which 1.19 GiB is free.")
HARMLESS = "step 100: peak memory 14.2 GiB, host memory 3.1 GiB, memory_efficient_attention on"
NCCL_ENV = {"NCCL_DEBUG": "INFO", "NCCL_IB_HCA": "mlx5", "WORLD_SIZE": "2"}
LOW_MEMLOCK = ["sh", "-c", "ulimit -l 64; exec sleep 600"]  # 64 KiB, below what containerd passes on
# a subshell starting 40 background sleeps over 4 s, past a pod limit of 8 whenever the test sets it (the refused
# fork ends the subshell; the container's main process lives on)
FORKY = ["sh", "-c", "(i=0; while [ $i -lt 40 ]; do sleep 600 & i=$((i+1)); sleep 0.1; done) & exec sleep 600"]
# What a pod finding never says: Docker's flags, commands and inspect fields.
DOCKER_WORDS = re.compile(r"docker |--gpus|--ulimit|--shm-size|--ipc=host|--pids-limit|--cpus|--memory\b|"
                          r"--device(?!-list)|--privileged|--pid=host|--restart(?!-loop-count)|"
                          r"daemon\.json|HostConfig|Config\.Env|State\.Error")
GPU_UUIDS = [f"GPU-f0000000-0000-0000-0000-00000000000{i}" for i in range(9)]


def _pod_pids_dir(pod) -> str:
    v1 = not os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    return f"/sys/fs/cgroup{'/pids' if v1 else ''}{QOS_PARENT[pod.qos]}/pod{pod.uid}"


def _a_disk() -> str:
    """MAJ:MIN of this machine's first disk (a throttle needs a real block device)."""
    for name in sorted(os.listdir("/sys/block")):
        if not name.startswith(("loop", "ram", "zram", "dm-", "md", "sr")):
            with open(f"/sys/block/{name}/dev") as f:
                return f.read().strip()
    return "254:0"


DISK = _a_disk()


def _throttle_reads(pod, device: str, bps: int) -> None:
    """What a node-level tool does (Kubernetes sets no read throttle): 1 MB/s on `device` in the container's cgroup."""
    cid = pod.containers["main"]
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        path, line = f"/sys/fs/cgroup{QOS_PARENT[pod.qos]}/pod{pod.uid}/{cid}/io.max", f"{device} rbps={bps}"
    else:
        path, line = f"/sys/fs/cgroup/blkio{QOS_PARENT[pod.qos]}/pod{pod.uid}/{cid}/blkio.throttle.read_bps_device", \
            f"{device} {bps}"
    with open(path, "w") as f:
        f.write(line)


def _echo(line: str) -> list[str]:
    return ["sh", "-c", f"echo '{line}'; exec sleep 600"]


@pytest.fixture(scope="module")
def judged(cri_node, fake_nvml_lib, tmp_path_factory):
    """Fifteen pods, nine simulated GPUs on a driver that supports CUDA 12.4, Xids 79 and 31 on GPU 4; the doctor
    over the pods after the Xids arrived."""
    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.host_facts import HostProbe
    from mltop.probes.sampler import ProbeOptions, Sampler

    specs = {
        "cudanew": [ContainerSpec("main", ["sleep", "600"], env={"CUDA_VERSION": "12.8.0"})],  # as NVIDIA's images
        "cudaok": [ContainerSpec("main", ["sleep", "600"], env={"CUDA_VERSION": "12.4.1"})],
        "oom": [ContainerSpec("main", _echo(TORCH_OOM))],
        "memok": [ContainerSpec("main", _echo(HARMLESS))],
        "ddp": [ContainerSpec("main", LOW_MEMLOCK, env=NCCL_ENV)],
        "single": [ContainerSpec("main", LOW_MEMLOCK, env=NCCL_ENV)],
        "ddpalloc": [ContainerSpec("main", LOW_MEMLOCK, env=NCCL_ENV)],  # given 2 GPUs, before NCCL's init
        "xidpod": [ContainerSpec("main", ["sleep", "600"])],
        "otherpod": [ContainerSpec("main", ["sleep", "600"])],
        "nogpu": [ContainerSpec("main", ["sleep", "600"], env={"CUDA_VERSION": "12.4.1"})],  # on no GPU
        "idle": [ContainerSpec("main", ["sleep", "600"])],  # holds memory on an idle GPU
        # runtimeClassName: nvidia, where the Docker engine beside it has no nvidia runtime nor the toolkit
        "withrt": [ContainerSpec("main", ["sleep", "600"], env={"NVIDIA_VISIBLE_DEVICES": GPU_UUIDS[7]})],
        "forky": [ContainerSpec("main", FORKY)],  # the kubelet's podPidsLimit 8 on its pod cgroup
        "calm": [ContainerSpec("main", ["sleep", "600"])],  # podPidsLimit 64, two processes
        "throttled": [ContainerSpec("main", ["sleep", "600"])],  # a read throttle written on the node
    }
    kubelet = PodResourcesServer()
    pods = {}
    sampler = None
    try:
        for name, containers in specs.items():
            pods[name] = cri_node.run_pod(NS, name, containers, runtime_handler="nvidia" if name == "withrt" else "")
        for name, limit in (("forky", 8), ("calm", 64)):  # as the kubelet writes podPidsLimit
            with open(_pod_pids_dir(pods[name]) + "/pids.max", "w") as f:
                f.write(str(limit))
        _throttle_reads(pods["throttled"], DISK, 1 << 20)
        kubelet.allocations = {(NS, "ddpalloc", "main"): [("nvidia.com/gpu", GPU_UUIDS[5:7])]}
        pid = {name: cri_node.init_pid(pod.containers["main"]) for name, pod in pods.items()}

        def on(*names, memory=2 * GIB):
            return [FakeProcess(pid[n], used_memory=memory, sm=40) for n in names]

        scenario = tmp_path_factory.mktemp("pod-checks") / "scenario.txt"
        write_scenario(scenario, FakeScenario(driver_version="550.54.15", cuda_version=12040, gpus=[
            FakeGpu(uuid=GPU_UUIDS[0], pci="00000000:10:00.0", util=40, mem_used=4 * GIB,
                    processes=on("cudanew", "cudaok")),
            FakeGpu(uuid=GPU_UUIDS[1], pci="00000000:11:00.0", util=90, mem_used=72 * GIB,
                    processes=on("oom", memory=70 * GIB) + on("memok")),
            FakeGpu(uuid=GPU_UUIDS[2], pci="00000000:12:00.0", util=60, mem_used=2 * GIB, processes=on("ddp")),
            FakeGpu(uuid=GPU_UUIDS[3], pci="00000000:13:00.0", util=60, mem_used=4 * GIB,
                    processes=on("ddp", "single")),
            FakeGpu(uuid=GPU_UUIDS[4], pci="00000000:14:00.0", util=50, mem_used=2 * GIB, processes=on("xidpod")),
            FakeGpu(uuid=GPU_UUIDS[5], pci="00000000:15:00.0", util=50, mem_used=2 * GIB, processes=on("otherpod")),
            FakeGpu(uuid=GPU_UUIDS[6], pci="00000000:16:00.0"),
            FakeGpu(uuid=GPU_UUIDS[7], pci="00000000:17:00.0", util=60, mem_used=2 * GIB, processes=on("withrt")),
            FakeGpu(uuid=GPU_UUIDS[8], pci="00000000:18:00.0", util=0, mem_used=3 * GIB,
                    processes=[FakeProcess(pid["idle"], used_memory=3 * GIB)]),
        ], xids=[FakeXid(gpu=4, code=79), FakeXid(gpu=4, code=31, at=0.2)]))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLTOP_FAKE_NVML_SCENARIO", str(scenario))
            mp.setenv("MLTOP_KMSG", str(scenario.parent / "no-kmsg"))  # no Xids from this machine's kernel log
            sampler = Sampler(ProbeOptions(nvml_lib=str(fake_nvml_lib), cri_endpoint=cri_node.endpoint,
                                           pod_resources_socket=kubelet.endpoint, watch_events=False))
            deadline = time.monotonic() + 20
            while True:  # until both Xids arrived and every pod's log holds its line
                snap = sampler.sweep()
                xids = {e.xid for g in snap.gpus if g.index == 4 for e in g.xid_events}
                with open(f"{_pod_pids_dir(pods['forky'])}/{pods['forky'].containers['main']}/pids.events") as f:
                    refused = int(f.read().split()[1])  # (cgroup v1 counts it where the fork was refused)
                if (xids >= {79, 31} and refused) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        names = [f"{NS}/{name}/main" for name in pods]
        host = HostProbe()
        result = run_doctor(snap, sampler.engine, containers=names, host=host)
        found = {}
        for f in result.findings:
            found.setdefault((f.code, f.container), []).append(f)
        facts = {c.id: host.container_facts(c, snap.host.cgroup_version) for c in snap.containers
                 if c.name in names}
        yield dataclasses.make_dataclass("Judged", ["snap", "result", "found", "facts", "names", "engine"])(
            snap, result, found, facts, names, sampler.engine)
    finally:
        if sampler is not None:
            sampler.close()
        for pod in pods.values():
            cri_node.remove_pod(pod)
        kubelet.stop()


def _one(judged, code, pod):
    (finding,) = judged.found[(code, f"{NS}/{pod}/main")]
    return finding


def _text(finding) -> str:
    return "\n".join([finding.title, *finding.evidence, finding.fix])


def _silent(judged, code, pod) -> bool:
    return (code, f"{NS}/{pod}/main") not in judged.found


def test_no_pod_finding_speaks_docker(judged):
    """Every finding on the pods (and the host findings naming them) says kubectl / the pod spec, never a docker
    command, flag or inspect field."""
    assert judged.result.findings
    for f in judged.result.findings:
        assert not DOCKER_WORDS.search(_text(f)), (f.code, f.container, DOCKER_WORDS.search(_text(f)).group(0))


def test_cuda_too_new_for_the_node_driver_names_the_pod_and_fixes_its_image(judged):
    finding = _one(judged, "driver.cuda_too_new", "cudanew")
    assert finding.title == "The image needs CUDA 12.8.0, newer than the node's CUDA 12.4"
    text = "\n".join(finding.evidence)
    assert f"needs CUDA 12.8.0: env CUDA_VERSION=12.8.0 — CRI ContainerStatus {NS}/cudanew/main" in text
    assert "host driver 550.54.15 supports CUDA up to 12.4" in text and "needs driver >= 570.26" in text
    assert finding.fix.startswith("Run container `main` from an image built for CUDA 12.4 (it runs ")
    assert f"`kubectl -n {NS} set image deployment/<its deployment> main=<image built for CUDA 12.4>`" in finding.fix
    assert f"`kubectl -n {NS} get pod cudanew -o yaml`" in finding.fix
    assert f"upgrade the node's driver to >= 570.26 (`kubectl drain {judged.snap.host.hostname} " in finding.fix
    assert _silent(judged, "driver.cuda_too_new", "cudaok")  # CUDA 12.4.1: what the driver supports


def test_cuda_oom_in_the_pods_log_gets_an_env_fix_and_kubectl_logs(judged):
    finding = _one(judged, "oom.cuda", "oom")
    assert finding.title.startswith("Out of GPU memory allocating 2.00 GiB on GPU 0; shared with container "
                                    f"{NS}/memok/main")
    text = "\n".join(finding.evidence)
    assert "log line 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in text
    assert f"/pods/{NS}_oom_" in text and "main/0.log (last 200 lines)" in text  # the kubelet's log file
    assert ("`containers: [{name: main, env: [{name: PYTORCH_CUDA_ALLOC_CONF, value: \"expandable_segments:True\"}]}]`"
            in finding.fix)
    assert f"`kubectl -n {NS} logs oom -c main`" in finding.fix and "request a whole GPU" in finding.fix
    assert _silent(judged, "oom.cuda", "memok")  # "memory" in its log, no out-of-memory


def test_nccl_memlock_on_a_two_gpu_pod_gets_the_node_runtimes_limit(judged):
    finding = _one(judged, "nccl.memlock", "ddp")
    assert finding.title.startswith("Uses 2 GPUs with locked memory limited to 64 KiB")
    text = "\n".join(finding.evidence)
    assert "2 GPUs: NVML shows it on GPUs 2, 3 — NVML processes joined to containers" in text and "Max locked memory 65536 bytes (soft)" in text
    assert finding.fix.startswith("Kubernetes has no per-pod ulimit: a pod's processes inherit the containerd "
                                  "runtime's own locked-memory limit")
    assert "LimitMEMLOCK=infinity" in finding.fix and "/etc/systemd/system/containerd.service.d/" in finding.fix
    assert "sudo systemctl restart containerd" in finding.fix and f"`kubectl -n {NS} delete pod ddp`" in finding.fix
    # given two GPUs by the kubelet, before any process of it runs on them
    allocated = _one(judged, "nccl.memlock", "ddpalloc")
    assert (f"2 GPUs: the kubelet allocated it {GPU_UUIDS[5]}, {GPU_UUIDS[6]} — kubelet pod-resources List"
            in allocated.evidence)
    assert _silent(judged, "nccl.memlock", "single")  # the same 64 KiB on one GPU: no NCCL across GPUs


def test_nccl_memlock_is_silent_on_the_same_pod_with_unlimited_memlock(judged):
    """The look-alike: the two-GPU pod with `ulimit -l unlimited` (no CAP_SYS_RESOURCE here to start a real one
    above containerd's own 8 MiB: its read limits file is replaced by the unlimited one's)."""
    from mltop.diagnostics.doctor import run_doctor

    (ddp,) = [c for c in judged.snap.containers if c.name == f"{NS}/ddp/main"]
    assert judged.facts[ddp.id].memlock_soft_bytes == 64 * 1024  # what the real pod has
    facts = dict(judged.facts)
    facts[ddp.id] = dataclasses.replace(facts[ddp.id], memlock_soft_bytes=-1)
    again = run_doctor(judged.snap, judged.engine, containers=[ddp.name], container_facts=facts)
    assert not [f for f in again.findings if f.code == "nccl.memlock"]
    assert [f.code for f in run_doctor(judged.snap, judged.engine, containers=[ddp.name],
                                       container_facts=judged.facts).findings].count("nccl.memlock") == 1


def test_an_xid_on_a_pods_gpu_names_that_pod_with_kubectl_steps(judged):
    xids = [f for (code, _), fs in judged.found.items() if code == "gpu.xid" for f in fs]
    by_code = {int(re.search(r"Xid (\d+)", f.title).group(1)): f for f in xids if f.title.startswith("GPU 4:")}
    hardware, application = by_code[79], by_code[31]
    node = judged.snap.host.hostname
    for finding in (hardware, application):
        assert finding.title.endswith(f"; affects {NS}/xidpod/main")
        assert f"on this GPU now: {NS}/xidpod/main" in "\n".join(finding.evidence)
        assert "otherpod" not in _text(finding)  # on GPU 5: not affected
    assert (f"keep new pods off this node first (`kubectl cordon {node}`), then `kubectl -n {NS} delete pod xidpod`"
            in hardware.fix and f"`kubectl uncordon {node}`" in hardware.fix)
    assert application.fix.endswith(f"; restart the pods on it: `kubectl -n {NS} delete pod xidpod` (their "
                                    "controllers start them again)")
    assert not [f for f in xids if not f.title.startswith("GPU 4:")]  # no Xid elsewhere, none naming otherpod


def test_a_cuda_pod_on_no_gpu_is_asked_for_nvidia_com_gpu(judged):
    finding = _one(judged, "gpu.not_visible", "nogpu")
    text = "\n".join(finding.evidence)
    assert "env CUDA_VERSION=12.4.1" in text
    assert "no GPU allocated to it (no `nvidia.com/gpu` in its resources.limits), runtime handler the default" in text
    assert finding.fix.startswith("Ask for GPUs in the pod spec: `containers: [{name: main, resources: {limits: "
                                  "{nvidia.com/gpu: 1}}}]` with `runtimeClassName: nvidia`")
    assert _silent(judged, "gpu.not_visible", "cudaok")  # the same env, its process on a GPU


def test_memory_held_on_an_idle_gpu_is_freed_by_deleting_the_pod(judged):
    finding = _one(judged, "gpu.idle_reserved", "idle")
    assert f"free the GPU: `kubectl -n {NS} delete pod idle`" in finding.fix
    assert _silent(judged, "gpu.idle_reserved", "xidpod")  # its GPU is busy


def test_a_pods_nvidia_runtime_handler_is_not_judged_by_dockers_runtimes(judged):
    """The pod runs under containerd's `nvidia` handler; the Docker engine beside it knows no nvidia runtime and
    this machine has no toolkit: no toolkit finding (Docker's words would be wrong here), and its GPU access is
    said as the pod's runtime handler."""
    assert "nvidia" not in judged.snap.host.runtimes
    assert not [k for k in judged.found if k[0].startswith("toolkit.")]
    (c,) = [c for c in judged.snap.containers if c.name == f"{NS}/withrt/main"]
    assert judged.snap.gpu_access(c) == ("runtime handler nvidia (runtimeClassName)",)


def test_a_pod_at_the_kubelets_pod_pids_limit_gets_pod_pids_limit(judged, cri_node):
    """The limit is the pod cgroup's (podPidsLimit), above the container's own (none): the pod's count against it."""
    finding = _one(judged, "pids.near_max", "forky")
    m = re.fullmatch(r"The pod is \(its containers share the pod cgroup's limit\) at its process/thread limit "
                     r"\((\d+) of 8\)", finding.title)
    assert m and int(m.group(1)) >= 7  # 8 (more when forks ran before the limit), less the refused subshell
    text = "\n".join(finding.evidence)
    assert re.search(r"pids.current \d+, pids.max 8 \(\d+%\) — /sys/fs/cgroup/\S*kubepods/burstable/pod", text)
    assert "forks refused so far" in text
    assert finding.fix.startswith("A pod's pids limit is the node's, not its spec's: raise the kubelet's "
                                  "`podPidsLimit`")
    assert _silent(judged, "pids.near_max", "calm")  # 2 of 64


def test_a_read_throttle_on_a_pod_is_the_nodes_not_a_docker_flag(judged):
    finding = _one(judged, "io.throttle_set", "throttled")
    assert re.search(re.escape(DISK) + r"\) rbps=1048576 — /sys/fs/cgroup/\S*kubepods/burstable/pod",
                     "\n".join(finding.evidence))
    assert finding.fix.startswith("Nothing to do while reads stay below it. Kubernetes sets no read throttle itself: "
                                  "something on the node wrote it into the pod's cgroup")
    assert not [k for k in judged.found if k[0].startswith("io.") and k[1] != f"{NS}/throttled/main"]


# --------------------------------------------------------------------------- from built snapshots
# (what a real pod here cannot show: an input-bound GPU, NVML lost after a daemon-reload, the timed read)


def _pod(name: str, **overrides):
    from builders import container
    from mltop.probes.model import KubernetesInfo

    return container(f"{NS}/{name}/main", runtime="containerd",
                     kubernetes=KubernetesInfo(NS, name, "uid-" + name, "main", "Burstable"), **overrides)


def _judge(snap, **fields):
    from mltop.diagnostics.checks import CheckContext, HostFacts, Thresholds
    from mltop.diagnostics.doctor import judge

    ctx = CheckContext(snapshot=snap, containers=snap.containers, logs=fields.pop("logs", {}), host=HostFacts(),
                       thresholds=Thresholds(), **fields)
    return judge(ctx).findings


def test_an_input_bound_pod_gets_resources_limits_cpu():
    from builders import GIB, gpu, gpu_process, gpu_use, replace, snapshot

    slow = _pod("loader", gpus=(gpu_use(0, 8 * GIB, 15.0),), cpu_limit_cores=2.0, cpu_limit_percent=99.0)
    g = gpu(0, utilization_percent=15.0, memory_used_bytes=8 * GIB, processes=(
        gpu_process(4242, 8 * GIB, 15.0, container=slow),))
    (f,) = [f for f in _judge(snapshot([slow], [g])) if f.code == "perf.input_bound"]
    assert "`containers: [{name: main, resources: {limits: {cpu: 4}}}]`" in f.fix and "num_workers" in f.fix
    assert not DOCKER_WORDS.search(f.fix)
    busy = replace(slow, gpus=(gpu_use(0, 8 * GIB, 90.0),))  # at its quota with a busy GPU: GPU-bound, silent
    g2 = replace(g, utilization_percent=90.0, processes=(gpu_process(4242, 8 * GIB, 90.0, container=busy),))
    assert not [f for f in _judge(snapshot([busy], [g2])) if f.code == "perf.input_bound"]


def test_nvml_lost_in_a_pod_recreates_the_pod():
    from builders import GIB, gpu, gpu_process, gpu_use, snapshot

    c = _pod("trainer", gpus=(gpu_use(0, 4 * GIB, 50.0),), config_overrides={"runtime": "nvidia"})  # its handler
    g = gpu(0, processes=(gpu_process(4242, 4 * GIB, 50.0, container=c),))
    logs = {c.id: ("Failed to initialize NVML: Unknown Error",)}
    (f,) = [f for f in _judge(snapshot([c], [g]), logs=logs) if f.code == "nvml.lost_in_container"]
    assert f.fix.startswith(f"Recreate the pod: `kubectl -n {NS} delete pod trainer`")
    assert not DOCKER_WORDS.search(f.fix)
    assert not [f for f in _judge(snapshot([c], [g])) if f.code == "nvml.lost_in_container"]  # no such line


def test_the_read_test_in_a_pod_is_a_cri_exec():
    from builders import MIB, snapshot
    from mltop.diagnostics.read_test import ReadTestResult

    c = _pod("reader")
    slow = ReadTestResult("/data/x", ("dd", "if=/data/x"), True, 64 * MIB, 3.2, 20.0, True, False, 0,
                          "67108864 bytes copied", "dd")
    (f,) = [f for f in _judge(snapshot([c]), read_tests={c.id: slow}) if f.code == "io.slow"]
    assert f"CRI ExecSync in {NS}/reader/main: dd if=/data/x" in "\n".join(f.evidence)
    fast = dataclasses.replace(slow, seconds=0.07, mb_per_s=900.0)
    assert not [f for f in _judge(snapshot([c]), read_tests={c.id: fast}) if f.code == "io.slow"]


def test_a_pod_the_runtime_refused_for_its_cuda_says_so_in_pod_terms():
    """The toolkit's start-time check (NVIDIA_REQUIRE_CUDA) refused the container: CRI's status message says why."""
    from builders import replace, snapshot

    message = ("failed to create containerd task: nvidia-container-cli: requirement error: unsatisfied condition: "
               "cuda>=12.8, please update your driver to a newer version")
    refused = _pod("trainer", status="exited", config_overrides={"error": message, "exit_code": 128,
                                                                  "env": (("NVIDIA_REQUIRE_CUDA", "cuda>=12.8"),)})
    (f,) = [f for f in _judge(snapshot([refused])) if f.code == "driver.cuda_too_new"]
    assert f.container == f"{NS}/trainer/main" and f.title.endswith("newer than the node's CUDA 12.4")
    assert f"status message {message!r} — CRI ContainerStatus {NS}/trainer/main" in f.evidence
    assert "set image deployment/<its deployment> main=<image built for CUDA 12.4>" in f.fix
    assert not DOCKER_WORDS.search("\n".join([f.title, *f.evidence, f.fix]))
    fits = replace(refused, status="running", config=replace(refused.config, error=None, exit_code=None,
                                                             env=(("NVIDIA_REQUIRE_CUDA", "cuda>=12.4"),)))
    assert not [f for f in _judge(snapshot([fits])) if f.code == "driver.cuda_too_new"]
