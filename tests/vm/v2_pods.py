"""Runs INSIDE the cgroup v2 guest, imported by tests/vm/v2_driver.py: Kubernetes pods on cgroup v2 with the
systemd cgroup driver, as a production GPU node runs them (containerd with `SystemdCgroup = true`, the kubelet's
systemd slices), and mltop's view of them next to the kernel's own counters.

A private containerd with its CRI plugin on its own socket (tests/cri_harness.py's CriNode, shared next to this
file: the host suite's pods, made the same way through mltop's own generated CRI stubs), runc's systemd driver,
each pod sandbox's cgroup_parent the slice name the kubelet's systemd driver gives it
(`kubepods-burstable-pod<uid_>.slice`; systemd nests it under kubepods.slice/kubepods-burstable.slice by its
dashes), so every container is `.../cri-containerd-<id>.scope`.
"""

from __future__ import annotations

import os
import time

NAMESPACE = "v2-pods"
NO_DOCKER = "none"  # the pods alone (--docker-host none: no engine asked, no alarm); the Docker phase has its own run

# pod -> (qos, [(container, command, memory limit, CPU quota in µs per 100 ms)]): one behaviour each
PODS = {
    # a busy loop at a 0.5-CPU quota (resources.limits.cpu: 500m): throttled
    "busy": ("Burstable", [("server", "while :; do :; done", 0, 50_000)]),
    # a child OOM-killed at the container's 32 MiB limit; the container lives on (the kubelet sees it running)
    "oomer": ("Burstable", [("loader", "tail /dev/zero; exec sleep 100000", 32 << 20, 0)]),
    # 60 MiB written into the sandbox's default 64 MiB /dev/shm (no memory-backed emptyDir)
    "shmfull": ("BestEffort", [("main", "dd if=/dev/zero of=/dev/shm/batch bs=1M count=60 2>/dev/null; "
                                        "exec sleep 100000", 0, 0)]),
    # the healthy look-alike: Guaranteed, the same kinds of limits, idle
    "steady": ("Guaranteed", [("main", "exec sleep 100000", 128 << 20, 50_000)]),
}


# made once the Docker phase is measured: a busy loop beside it (given the most CPUWeight then) took the CPU the
# Docker GPU job needed to reach its own quota, and its cpu.throttled went unseen
LATE = ("busy",)


def run_pod(node, name: str, made: dict) -> None:
    """One pod of PODS through the CRI, as the kubelet makes it; what the driver knows of it into `made`."""
    from cri_harness import ContainerSpec, pod_slice

    qos, containers = PODS[name]
    specs = [ContainerSpec(c, ["sh", "-c", cmd], memory_limit_bytes=mem, cpu_quota_us=quota)
             for c, cmd, mem, quota in containers]
    pod = node.run_pod(NAMESPACE, name, specs, qos=qos)
    for container, cid in pod.containers.items():
        made[f"{name}/{container}"] = {"id": cid, "pid": node.init_pid(cid), "uid": pod.uid, "qos": qos,
                                       "slice": pod_slice(qos, pod.uid)}


def start_pods(share: str):
    """The containerd and the pods but LATE: (node, {"pod/container": what the driver knows of it})."""
    from cri_harness import CriNode

    node = CriNode(systemd_cgroup=True, images_tar=os.path.join(share, "cri-images.tar"))
    made: dict = {}
    try:
        node.start()
        for name in PODS:
            if name not in LATE:
                run_pod(node, name, made)
    except BaseException:
        node.stop()
        raise
    return node, made


def measure_pods(node, pods: dict, cgroup_files, mltop) -> dict:
    """The kernel's files before and after `mltop snapshot`, then `mltop doctor` on the pods; the containerd
    is stopped at the end (its busy pod would load the phases after)."""
    out: dict = {"endpoint": node.endpoint, "cri_version": str(node.version).replace("\n", " "), "pods": pods}
    try:
        for name in LATE:
            run_pod(node, name, pods)
        oomer = pods["oomer/loader"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the loader's child killed at its limit before mltop looks
            if cgroup_files(oomer["id"], oomer["pid"]).get("memory.events", {}).get("oom_kill", 0) >= 1:
                break
            time.sleep(1)
        out["oom_wait_s"] = round(90 - (deadline - time.monotonic()), 1)
        time.sleep(3)  # the busy loop throttled at its quota for a while before the first reading
        common = ["--no-nvml", "--cri-endpoint", node.endpoint, "--docker-host", NO_DOCKER,
                  "--pod-resources-socket", "none"]
        out["before"] = {k: cgroup_files(p["id"], p["pid"]) for k, p in pods.items()}
        out["snapshot"] = mltop(*common, "snapshot", "--json", "--interval", "2")
        out["after"] = {k: cgroup_files(p["id"], p["pid"]) for k, p in pods.items()}
        out["doctor"] = mltop(*common, "doctor", "--json", "--interval", "2", "--no-recording",
                              "--containerd-config", f"{node.tmp}/config.toml",
                              *(f"{NAMESPACE}/{name}" for name in PODS))
    finally:
        node.stop()
    return out
