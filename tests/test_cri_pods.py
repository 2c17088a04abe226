"""Pods on a real containerd with its CRI plugin (tests/cri_harness.py), seen by mltop's probes."""

from __future__ import annotations

import os

from cri_harness import ContainerSpec

from mltop.probes.identity import CgroupIdentity, identity_of_pid


def test_harness_pods_look_like_the_kubelets(cri_pods):
    """The harness's pods carry the kubelet's labels and cgroup layout, so what mltop reads of them is what it
    reads on a node: the identity of a pod container's process names the pod and its QoS class."""
    node = cri_pods.node
    assert node.version.runtime_name == "containerd" and node.version.runtime_api_version == "v1"
    pod = cri_pods.run("ml-team", "trainer", [ContainerSpec("main", ["sleep", "300"],
                                                               memory_limit_bytes=64 << 20,
                                                               cpu_quota_us=50_000)], qos="Guaranteed")
    cid = pod.containers["main"]
    pid = node.init_pid(cid)
    assert identity_of_pid(pid) == CgroupIdentity(None, cid, pod.uid, "Guaranteed")
    listed = {c.id: c for c in node.client.list_containers()}
    assert listed[cid].labels["io.kubernetes.pod.namespace"] == "ml-team"
    assert listed[cid].metadata.name == "main"
    assert pod.sandbox_id not in listed  # CRI lists sandboxes apart from containers
    with open(f"/proc/{pid}/cgroup") as f:
        assert f"/kubepods/pod{pod.uid}/{cid}" in f.read()
    node.remove_pod(pod)
    assert not os.path.exists(f"/proc/{pid}") or identity_of_pid(pid) is None
    assert cid not in {c.id for c in node.client.list_containers()}


def test_pods_are_sampled_beside_docker_containers(cri_pods, containers, monkeypatch):
    """Both sources answer: a Docker container and pod containers side by side, each measured from its own
    cgroup; the pod's sandbox is not a workload; a pod container carries runtime and kubernetes."""
    from mltop.probes.sampler import ProbeOptions, Sampler

    node = cri_pods.node
    docker_one = containers.run(["sleep", "300"])
    pod = cri_pods.run("ml-team", "trainer", [
        ContainerSpec("main", ["sh", "-c", "while :; do :; done"], cpu_quota_us=50_000, memory_limit_bytes=64 << 20),
        ContainerSpec("sidecar", ["sleep", "300"]),
    ], qos="Burstable", labels={"app": "trainer"}, annotations={"team": "vision"})
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=node.endpoint))
    try:
        sampler.sweep()
        import time
        time.sleep(1.0)
        snap = sampler.sweep()
    finally:
        sampler.close()
    kinds = {s.kind: s for s in snap.host.sources}
    assert kinds["docker"].ok and kinds["cri"].ok
    assert kinds["cri"].runtime == "containerd" and kinds["cri"].version
    assert snap.container(docker_one.id).runtime == "docker" and snap.container(docker_one.id).kubernetes is None
    main = snap.container(pod.containers["main"])
    assert main.name == "ml-team/trainer/main"
    assert main.runtime == "containerd"
    k = main.kubernetes
    assert (k.namespace, k.pod, k.pod_uid, k.container, k.qos) == ("ml-team", "trainer", pod.uid, "main", "Burstable")
    assert main.status == "running"
    assert f"pod{pod.uid}/{main.id}" in main.cgroup_path
    assert main.cpu_limit_cores == 0.5 and main.memory_limit_bytes == 64 << 20
    # it burns, held to half a core by its quota (on a loaded machine it may get less than its half; a CFS
    # period's slack can put a 1 s window a little above it)
    assert 1 < main.cpu_percent <= 75, main.cpu_percent
    assert main.config.pod_labels["app"] == "trainer" and main.config.pod_annotations["team"] == "vision"
    assert main.config.log_path.endswith("main/0.log")
    assert main.processes and all(p.cmdline for p in main.processes)
    assert snap.container(pod.containers["sidecar"]).name == "ml-team/trainer/sidecar"
    assert snap.container(pod.sandbox_id) is None  # the pause container is no workload


def test_snapshot_json_lists_pods_with_the_docker_engine_unreachable(cri_pods, tmp_path):
    """DOCKER_HOST at a dead socket: the pods are still listed, each source has its own status."""
    import json
    import subprocess
    import sys

    node = cri_pods.node
    pod = cri_pods.run("serving", "api", [ContainerSpec("server", ["sleep", "300"])], qos="BestEffort")
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/dead.sock", "MLTOP_CRI_ENDPOINT": node.endpoint}
    done = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "snapshot", "--json", "--no-nvml"],
                          capture_output=True, text=True, env=env, timeout=120)
    doc = json.loads(done.stdout)
    sources = {s["kind"]: s for s in doc["host"]["sources"]}
    assert sources["docker"]["status"] == "unreachable" and sources["cri"]["status"] == "ok"
    assert sources["cri"]["runtime"] == "containerd" and sources["cri"]["containers"] >= 1
    (server,) = [c for c in doc["containers"] if c["id"] == pod.containers["server"]]
    assert server["runtime"] == "containerd"
    assert server["kubernetes"] == {"namespace": "serving", "pod": "api", "pod_uid": pod.uid,
                                    "container": "server", "qos": "BestEffort",
                                    "gpus_allocated": [],  # no kubelet here: none known
                                    "previous_attempts": []}  # never restarted
    assert server["memory_bytes"] is not None  # measured from its cgroup, not from CRI stats
    assert done.returncode == 3  # an engine that was named and does not answer is still said


def test_a_node_without_docker_is_no_alarm():
    """The Docker source is 'absent' (not down) only where nobody named an engine, its default socket is
    missing and a CRI runtime answers; then nothing reports the engine down."""
    import dataclasses

    from builders import snapshot

    from mltop.probes.model import EngineStatus, SourceStatus
    from mltop.probes.sources import docker_source_status

    down = EngineStatus("unreachable", "No Docker engine at unix:///var/run/docker.sock", "unix:///var/run/docker.sock")
    cri = SourceStatus("cri", "unix:///run/containerd/containerd.sock", "ok", None, "containerd", "1.7.2", 3)
    no_cri = SourceStatus("cri", "unix:///run/containerd/containerd.sock", "no_cri", "no CRI")
    absent = docker_source_status(down, None, 0, named=False, others=[cri], socket_exists=False)
    assert absent.status == "absent" and absent.error is None
    assert docker_source_status(down, None, 0, named=True, others=[cri], socket_exists=False).status == "unreachable"
    assert docker_source_status(down, None, 0, named=False, others=[no_cri], socket_exists=False).status == "unreachable"
    assert docker_source_status(down, None, 0, named=False, others=[cri], socket_exists=True).status == "unreachable"

    snap = snapshot()
    node = dataclasses.replace(snap, host=dataclasses.replace(snap.host, engine=down, sources=(absent, cri)))
    assert not node.host.engine_down
    assert check_engine_findings(node) == []
    docker_down = dataclasses.replace(snap, host=dataclasses.replace(snap.host, engine=down, sources=(
        dataclasses.replace(absent, status="unreachable"), cri)))
    assert docker_down.host.engine_down and check_engine_findings(docker_down)


def check_engine_findings(snap):
    from types import SimpleNamespace

    from mltop.diagnostics.checks.driver import check_engine

    return check_engine(SimpleNamespace(snapshot=snap))  # the engine check reads the snapshot alone


def test_healthz_gives_each_source_its_status():
    import dataclasses
    import time

    from builders import snapshot

    from mltop.probes.model import SourceStatus
    from mltop.tui.serve.http import health
    from mltop.tui.serve.loop import ServeState

    snap = snapshot()
    sources = (SourceStatus("docker", "unix:///var/run/docker.sock", "absent"),
               SourceStatus("cri", "unix:///run/containerd/containerd.sock", "ok", None, "containerd", "1.7.2", 4),
               SourceStatus("cri", "unix:///var/run/crio/crio.sock", "permission_denied", "Permission denied on x"))
    snap = dataclasses.replace(snap, host=dataclasses.replace(snap.host, sources=sources))
    state = ServeState(snapshot=snap, swept_at=time.monotonic())
    code, text = health(state, 1.0)
    assert code == 200
    assert text.endswith("; sources: docker absent, containerd (CRI) ok, cri (CRI) permission_denied "
                         "(Permission denied on x)")


def test_gpu_processes_of_a_pod_container_are_attributed_to_it(cri_pods, nvml_scenario):
    """The simulated NVML lists a pod container's host PID: the GPU's process and the container carry the pod,
    whatever the pod asked for (no nvidia.com/gpu request here: attribution is by who uses the GPU)."""
    import json

    from fakenvml import FakeGpu, FakeProcess

    from mltop.probes.model import snapshot_to_json
    from mltop.probes.sampler import ProbeOptions, Sampler

    node = cri_pods.node
    pod = cri_pods.run("ml-team", "trainer", [ContainerSpec("main", ["sleep", "300"])], qos="Burstable")
    cid = pod.containers["main"]
    pid = node.init_pid(cid)
    lib = nvml_scenario(gpus=[FakeGpu(uuid="GPU-aaaa", util=80, mem_used=12 << 30, processes=[
        FakeProcess(pid=pid, used_memory=10 << 30, sm=70)])])
    sampler = Sampler(ProbeOptions(nvml_lib=lib, cri_endpoint=node.endpoint))
    try:
        snap = sampler.sweep()
    finally:
        sampler.close()
    (proc,) = snap.gpus[0].processes
    assert proc.container_id == cid and proc.container_name == "ml-team/trainer/main"
    assert proc.runtime == "containerd" and proc.kubernetes.pod_uid == pod.uid
    main = snap.container(cid)
    assert main.gpu_memory_bytes == 10 << 30 and main.gpu_sm_percent == 70
    doc = json.loads(json.dumps(snapshot_to_json(snap)))
    assert doc["gpus"][0]["processes"][0]["kubernetes"] == {
        "namespace": "ml-team", "pod": "trainer", "pod_uid": pod.uid, "container": "main", "qos": "Burstable",
        "gpus_allocated": [], "previous_attempts": []}


def test_doctor_reads_a_pod_containers_log_from_its_cri_log_file(cri_pods):
    """Log-based checks see a pod container's log (the kubelet's file): a CUDA OOM line becomes oom.cuda,
    its evidence naming the file. (Actions in pods: tests/test_cri_actions.py.)"""
    import time

    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.sampler import ProbeOptions, Sampler

    node = cri_pods.node
    line = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity"
    pod = cri_pods.run("ml-team", "oomgpu", [ContainerSpec("main", ["sh", "-c", f"echo '{line}'; exec sleep 300"])])
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=node.endpoint, watch_events=False))
    try:
        deadline = time.monotonic() + 20
        while True:
            snap = sampler.sweep()
            c = snap.container(pod.containers["main"])
            if c.config.log_path and os.path.getsize(c.config.log_path) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        result = run_doctor(snap, sampler.engine, containers=[c.name])
    finally:
        sampler.close()
    (finding,) = [f for f in result.findings if f.code == "oom.cuda"]
    assert finding.container == "ml-team/oomgpu/main"
    assert any(c.config.log_path in e for e in finding.evidence)


def test_a_cold_start_answers_from_the_list_and_asks_statuses_in_the_background(cri_pods):
    """The dashboard's first frame on a busy node: pod containers come from the list at once, measured from
    cgroups found by pod UID and id (no PID yet), their verbose statuses arriving on later sweeps."""
    import time

    from mltop.probes.sampler import ProbeOptions, Sampler

    node = cri_pods.node
    pods = [cri_pods.run("cold", f"p{i}", [ContainerSpec("a", ["sleep", "300"]), ContainerSpec("b", ["sleep", "300"])],
                         qos=("Burstable", "BestEffort", "Guaranteed")[i % 3]) for i in range(3)]
    ids = [cid for pod in pods for cid in pod.containers.values()]
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=node.endpoint, watch_events=False,
                                   inspect_in_background=True))
    try:
        first = sampler.sweep()
        cold = [first.container(cid) for cid in ids]
        assert all(c is not None and c.name.startswith("cold/") for c in cold)
        pending = [c for c in cold if c.config_pending]
        assert pending, "six new containers: their statuses are asked in the background"
        for c in pending:  # measured all the same, from the cgroup the kubelet's layout names
            assert c.memory_bytes is not None and c.cgroup_path.endswith(c.id), c.cgroup_path
            assert c.pid is None and c.kubernetes.pod_uid in c.cgroup_path
        deadline = time.monotonic() + 20
        while True:
            snap = sampler.sweep()
            done = [snap.container(cid) for cid in ids]
            if all(not c.config_pending for c in done) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        sampler.close()
    assert all(not c.config_pending and c.pid and c.kubernetes.qos for c in done)
    assert {c.kubernetes.qos for c in done} == {"Burstable", "BestEffort", "Guaranteed"}


def test_a_child_oom_killed_in_a_running_pod_container_is_no_container_oom_kill(cri_pods):
    """containerd writes reason OOMKilled into a container's status on any OOM kill in its cgroup, also while the
    container runs on (here its shell outlives the killed `tail`). The kubelet reads the reason only once a
    container has exited; so does mltop: the container lives on, its processes' kills are counted from the cgroup
    (oom_kills), and the doctor says a process was killed, not the container (it said "The container was killed
    for running out of memory", with "State.OOMKilled true, ExitCode None")."""
    import time

    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.sampler import ProbeOptions, Sampler

    node = cri_pods.node
    pod = cri_pods.run("ml-team", "oomer", [ContainerSpec("loader", ["sh", "-c", "tail /dev/zero; exec sleep 300"],
                                                          memory_limit_bytes=32 << 20)])
    cid = pod.containers["loader"]
    deadline = time.monotonic() + 30
    while node.client.container_status(cid).status.reason != "OOMKilled":  # what containerd says of it
        assert time.monotonic() < deadline, node.client.container_status(cid).status
        time.sleep(0.2)
    assert node.client.container_status(cid).status.state == 1  # CONTAINER_RUNNING
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=node.endpoint, watch_events=False))
    try:
        previous, snap = sampler.sweep_pair(0.5)
    finally:
        sampler.close()
    loader = snap.container(cid)
    assert loader.running and loader.config.oom_killed is False and loader.oom_kills == 1
    (finding,) = [f for f in run_doctor(snap, sampler.engine, containers=[loader.name], previous=previous).findings
                  if f.code == "oom.killed"]
    assert finding.title.startswith("1 process(es) in the container were OOM-killed (the container lives on")
    assert not any("OOMKilled" in e for e in finding.evidence), finding.evidence
    assert "resources.limits.memory 33554432 bytes (32.0 MiB)" in "\n".join(finding.evidence)
