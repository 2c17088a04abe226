"""The cgroup v2 tier's Kubernetes pods: what production GPU nodes run (cgroup v2, systemd, containerd with
`SystemdCgroup = true`, the kubelet's systemd slices), measured in the same guest and driver run as the Docker
workloads (tests/vm/v2_pods.py, imported by tests/vm/v2_driver.py).

A private containerd with CRI on its own socket runs four pods made the way the host suite makes them
(tests/cri_harness.py): a busy loop at a 0.5-CPU quota, a container whose child is OOM-killed at 32 MiB, 60 MiB
written into the sandbox's 64 MiB /dev/shm, and a Guaranteed idle pod with limits (the healthy look-alike).
`mltop snapshot --json` and `mltop doctor --json` run on them with `--cri-endpoint`; every figure is held against
the kernel's own files in the container's `cri-containerd-<id>.scope`, read just before and just after.

    python -m pytest -m cgroup_v2
"""

from __future__ import annotations

import re

import pytest
from test_cgroup_v2 import between, run  # noqa: F401  (run: the fixture; the guest boots once per session)

pytestmark = pytest.mark.cgroup_v2

MIB = 1 << 20
NAMESPACE = "v2-pods"
# the kubelet's systemd driver: kubepods.slice, then the QoS class's slice (none for Guaranteed), then the pod's
QOS_SLICES = {"Guaranteed": "kubepods.slice", "Burstable": "kubepods.slice/kubepods-burstable.slice",
              "BestEffort": "kubepods.slice/kubepods-besteffort.slice"}
# (code, pod/container) the doctor must name on these pods, and nothing else (steady/main: nothing)
PLANTED = {("cpu.throttled", "busy/server"), ("oom.killed", "oomer/loader"), ("shm.too_small", "shmfull/main")}
DOCKER_WORDS = re.compile(r"docker |--cpus|--memory\b|--shm-size|HostConfig|State\.OOMKilled")


def pods(run) -> dict:
    return run["pods"]


def pod_containers(run) -> dict[str, dict]:
    """mltop's snapshot of the pods, by `pod/container`."""
    snap = pods(run)["snapshot"]
    assert "json" in snap, f"[{run['host_line']}] mltop snapshot on the pods printed no JSON: {snap}"
    prefix = NAMESPACE + "/"
    return {c["name"][len(prefix):]: c for c in snap["json"]["containers"] if c["name"].startswith(prefix)}


def pod_findings(run) -> dict[tuple[str, str], dict]:
    doc = pods(run)["doctor"]
    assert "json" in doc, f"[{run['host_line']}] mltop doctor on the pods printed no JSON: {doc}"
    prefix = NAMESPACE + "/"
    return {(f["code"], f["container"][len(prefix):]): f for f in doc["json"]["findings"]
            if (f["container"] or "").startswith(prefix)}


def test_pods_are_cri_containerd_scopes_in_the_kubelets_systemd_slices(run):
    """runc's systemd driver puts each container in `cri-containerd-<id>.scope` under the pod's slice, which
    systemd nests by its dashes; mltop names it `namespace/pod/container`, with the QoS class the slice says."""
    seen = pod_containers(run)
    assert set(seen) == set(pods(run)["pods"]), f"[{run['host_line']}] {sorted(seen)}"
    for key, p in pods(run)["pods"].items():
        path = f"/{QOS_SLICES[p['qos']]}/{p['slice']}/cri-containerd-{p['id']}.scope"
        assert pods(run)["before"][key]["proc_cgroup"] == f"0::{path}\n", run["host_line"]
        c = seen[key]
        assert c["cgroup_path"] == f"/sys/fs/cgroup{path}", (key, c["cgroup_path"])
        assert (c["runtime"], c["id"], c["status"]) == ("containerd", p["id"], "running"), key
        k, (pod, container) = c["kubernetes"], key.split("/")
        assert (k["namespace"], k["pod"], k["pod_uid"], k["container"], k["qos"]) == \
            (NAMESPACE, pod, p["uid"], container, p["qos"]), (key, k)
        assert c["pids"] == int(pods(run)["after"][key]["pids.current"]), key


def test_pod_cpu_at_its_quota_and_throttling_as_cpu_stat_counts_it(run):
    """resources.limits.cpu 500m: cpu.max `50000 100000`; CPU % near the quota and the kernel's own rate;
    usage and nr_throttled between the kernel's readings."""
    c = pod_containers(run)["busy/server"]
    before, after = pods(run)["before"]["busy/server"], pods(run)["after"]["busy/server"]
    assert before["cpu.max"].split() == ["50000", "100000"] and c["cpu_limit_cores"] == 0.5, run["host_line"]
    rate = (after["cpu.stat"]["usage_usec"] - before["cpu.stat"]["usage_usec"]) / (after["t"] - before["t"]) / 1e4
    assert 25 <= c["cpu_percent"] <= 60, f"[{run['host_line']}] cpu_percent {c['cpu_percent']} (kernel {rate:.1f})"
    assert c["cpu_percent"] == pytest.approx(rate, abs=10), run["host_line"]
    between(c["cpu_usage_seconds"] * 1e6, before["cpu.stat"]["usage_usec"], after["cpu.stat"]["usage_usec"],
            "pod cpu usage (usec)", run)
    between(c["cpu_throttled_periods"], before["cpu.stat"]["nr_throttled"], after["cpu.stat"]["nr_throttled"],
            "pod nr_throttled", run)
    assert c["cpu_throttled_periods"] > 0
    idle = pod_containers(run)["steady/main"]  # the same quota, idle: never throttled
    assert idle["cpu_limit_cores"] == 0.5 and idle["cpu_throttled_periods"] == 0 == \
        pods(run)["after"]["steady/main"]["cpu.stat"]["nr_throttled"]


def test_pod_memory_within_the_kernels_bounds(run):
    """working set = memory.current − inactive_file, cache = memory.stat `file`, shm = `shmem`, limit =
    memory.max ("max": none), for every pod container."""
    seen = pod_containers(run)
    for key in pods(run)["pods"]:
        c, before, after = seen[key], pods(run)["before"][key], pods(run)["after"][key]

        def ws(r):
            return int(r["memory.current"]) - r["memory.stat"]["inactive_file"]

        between(c["memory_bytes"], ws(before), ws(after), f"{key} working set", run)
        between(c["memory_cache_bytes"], before["memory.stat"]["file"], after["memory.stat"]["file"],
                f"{key} cache", run)
        between(c["shm_bytes"], before["memory.stat"]["shmem"], after["memory.stat"]["shmem"], f"{key} shm", run)
        limit = before["memory.max"].strip()
        assert c["memory_limit_bytes"] == (None if limit == "max" else int(limit)), (key, limit)
    assert seen["oomer/loader"]["memory_limit_bytes"] == 32 * MIB
    assert seen["steady/main"]["memory_limit_bytes"] == 128 * MIB
    assert 60 * MIB <= seen["shmfull/main"]["shm_bytes"] <= 61 * MIB, seen["shmfull/main"]["shm_bytes"]


def test_pod_oom_kill_counted_from_memory_events(run):
    """The loader's `tail` killed at the 32 MiB limit while its shell lives on: oom_kill 1 in memory.events,
    counted by mltop; the container is running, not OOMKilled (containerd's status says reason OOMKilled all
    the same: tests/test_cri_pods.py), and the doctor says so in a pod spec's terms."""
    c = pod_containers(run)["oomer/loader"]
    before, after = pods(run)["before"]["oomer/loader"], pods(run)["after"]["oomer/loader"]
    between(c["oom_kills"], before["memory.events"]["oom_kill"], after["memory.events"]["oom_kill"], "oom_kill",
            run)
    assert c["oom_kills"] == 1 and c["status"] == "running" and c["config"]["oom_killed"] is False, run["host_line"]
    f = pod_findings(run)[("oom.killed", "oomer/loader")]
    assert f["title"].startswith("1 process(es) in the container were OOM-killed (the container lives on"), f
    text = "\n".join(f["evidence"])
    assert f"oom_kill 1 — {c['cgroup_path']}/memory.events" in text, text
    assert "resources.limits.memory 33554432 bytes (32.0 MiB)" in text
    assert "`containers: [{name: loader, resources: {limits: {memory: 64Mi}}}]`" in f["fix"]


def test_pod_throttling_named_with_resources_limits_cpu(run):
    f = pod_findings(run)[("cpu.throttled", "busy/server")]
    c = pod_containers(run)["busy/server"]
    assert f"{c['cgroup_path']}/cpu.stat" in "\n".join(f["evidence"]), f["evidence"]
    assert "CPU limit 0.5 cores" in "\n".join(f["evidence"])
    assert "`containers: [{name: server, resources: {limits: {cpu: 1}}}]`" in f["fix"]


def test_pod_dev_shm_named_with_a_memory_backed_empty_dir(run):
    f = pod_findings(run)[("shm.too_small", "shmfull/main")]
    c = pod_containers(run)["shmfull/main"]
    text = "\n".join(f["evidence"])
    assert "/dev/shm 67108864 bytes (64.0 MiB) (the pod's own tmpfs" in text, text
    assert f"{c['cgroup_path']}/memory.stat shmem" in text
    assert "emptyDir: {medium: Memory" in f["fix"] and "mountPath: /dev/shm" in f["fix"]


def test_pod_doctor_names_every_planted_fault_and_nothing_on_the_guaranteed_idle_pod(run):
    found = pod_findings(run)
    assert set(found) == PLANTED, (f"[{run['host_line']}]", sorted(set(found) - PLANTED),
                                   sorted(PLANTED - set(found)))
    for (code, who), f in found.items():
        text = "\n".join([f["title"], *f["evidence"], f["fix"]])
        assert not DOCKER_WORDS.search(text), (code, who, DOCKER_WORDS.search(text).group(0))


def test_a_node_of_pods_alone_raises_no_docker_engine_finding(run):
    """`--docker-host none` on the pods' node: Docker is not asked, so nothing says it is down."""
    doc = pods(run)["doctor"]["json"]
    assert not [f for f in doc["findings"] if f["code"].startswith("engine.")], doc["findings"]
    docker = [s for s in pods(run)["snapshot"]["json"]["host"]["sources"] if s["kind"] == "docker"]
    assert docker and docker[0]["status"] == "disabled", docker
