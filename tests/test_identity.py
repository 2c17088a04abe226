"""probes/identity.py: one function maps any runtime's cgroup path to (runtime, container id, pod UID, QoS),
and GPU processes are attributed through it (real-looking paths from Docker, containerd, CRI-O, podman and
the kubelet with both cgroup drivers, on cgroup v1 and v2)."""

from __future__ import annotations

import os

import pytest

from mltop.probes.identity import CgroupIdentity, identity_from_path, identity_from_proc_cgroup, identity_of_pid

A, B, C = "a" * 64, "0123456789abcdef" * 4, "fedcba9876543210" * 4
UID = "5f2d3a1c-8e4b-4c2a-9f1e-0a1b2c3d4e5f"
UID_ = UID.replace("-", "_")


@pytest.mark.parametrize("path, expected", [
    # Docker
    (f"/docker/{A}", CgroupIdentity("docker", A)),
    (f"/system.slice/docker-{A}.scope", CgroupIdentity("docker", A)),
    (f"/docker/{A}/init.scope", CgroupIdentity("docker", A)),  # a container's own sub-cgroup
    (f"/docker/{A}/docker/{B}", CgroupIdentity("docker", A)),  # docker-in-docker: the host's container
    # Kubernetes, cgroupfs driver: the three QoS classes
    (f"/kubepods/pod{UID}/{B}", CgroupIdentity(None, B, UID, "Guaranteed")),
    (f"/kubepods/burstable/pod{UID}/{B}", CgroupIdentity(None, B, UID, "Burstable")),
    (f"/kubepods/besteffort/pod{UID}/{B}", CgroupIdentity(None, B, UID, "BestEffort")),
    # Kubernetes, systemd driver: containerd, CRI-O, cri-dockerd
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{B}.scope",
     CgroupIdentity("containerd", B, UID, "Burstable")),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{C}.scope",
     CgroupIdentity("cri-o", C, UID, "BestEffort")),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{B}.scope",
     CgroupIdentity("containerd", B, UID, "Guaranteed")),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{A}.scope",
     CgroupIdentity("docker", A, UID, "Burstable")),
    # podman
    (f"/machine.slice/libpod-{C}.scope", CgroupIdentity("podman", C)),
    (f"/machine.slice/libpod-{C}.scope/container", CgroupIdentity("podman", C)),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{C}.scope", CgroupIdentity("podman", C)),
    (f"/libpod_parent/libpod-{C}", None),  # conmon's parent, not the container
    (f"/libpod_parent/{C}", CgroupIdentity("podman", C)),
    # containerd without Kubernetes (ctr, nerdctl): /<namespace>/<id>
    (f"/k8s.io/{B}", CgroupIdentity("containerd", B)),
    # host cgroups
    ("/", None),
    ("/user.slice/user-1000.slice/session-3.scope", None),
    ("/system.slice/containerd.service", None),
    ("/kubepods/burstable", None),
    (f"/kubepods/burstable/pod{UID}", None),  # the pod's own cgroup: no container
    (f"/system.slice/crio-conmon-{C}.scope", None),  # CRI-O's monitor process
    (f"/docker/{A[:12]}", None),  # a short id is no container cgroup
])
def test_identity_from_path(path, expected):
    assert identity_from_path(path) == expected


def test_kubelet_prefixed_slices_give_the_pod():
    """kind and k3s-in-docker prefix the kubelet's slices (kubelet-kubepods-…-pod<uid>.slice); the pod UID
    must still come out, not only the container."""
    path = (f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
            f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{B}.scope")
    assert identity_from_path(path) == CgroupIdentity("containerd", B, UID, "BestEffort")


def test_proc_cgroup_v1_pod_container():
    """cgroup v1: one line per hierarchy, the pod's path on each; name=systemd and the empty v2 line of a
    hybrid host name nothing."""
    text = "".join(f"{n}:{c}:/kubepods/burstable/pod{UID}/{B}\n" for n, c in
                   [(12, "memory"), (11, "cpu,cpuacct"), (10, "pids"), (1, "name=systemd")]) + "0::/\n"
    assert identity_from_proc_cgroup(text) == CgroupIdentity(None, B, UID, "Burstable")


def test_proc_cgroup_v1_docker_and_v2_lines():
    v1 = f"12:memory:/docker/{A}\n11:cpu,cpuacct:/docker/{A}\n1:name=systemd:/docker/{A}\n"
    assert identity_from_proc_cgroup(v1) == CgroupIdentity("docker", A)
    v2 = f"0::/system.slice/docker-{A}.scope\n"
    assert identity_from_proc_cgroup(v2) == CgroupIdentity("docker", A)
    v2_pod = f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{C}.scope\n"
    assert identity_from_proc_cgroup(v2_pod) == CgroupIdentity("cri-o", C, UID, "Burstable")
    assert identity_from_proc_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n") is None
    assert identity_from_proc_cgroup("") is None


def test_identity_of_a_host_process_and_a_gone_pid():
    own = identity_of_pid(os.getpid())
    # the test runs on the host or in a container; either way the answer matches its own /proc file
    with open("/proc/self/cgroup") as f:
        assert own == identity_from_proc_cgroup(f.read())
    assert identity_of_pid(2 ** 22 + 12345) is None


def test_the_guessed_pod_paths_read_back_as_that_pod():
    """pod_cgroup_guesses (finding a pod container's cgroup before its PID is known) names exactly the layouts
    identity_from_path reads: each guess gives back the pod UID, its QoS class and the container."""
    from mltop.probes.identity import pod_cgroup_guesses

    for runtime in ("containerd", "cri-o"):
        guesses = pod_cgroup_guesses(UID, B, runtime)
        read = [identity_from_path("/" + g) for g in guesses]
        assert {(i.container_id, i.pod_uid) for i in read} == {(B, UID)}
        assert sorted(i.qos for i in read) == sorted(["Burstable", "BestEffort", "Guaranteed"] * 2)
        assert {i.runtime for i in read} == {None, runtime}
    assert pod_cgroup_guesses("", B, "containerd") == ()


def test_a_pods_namespace_and_name_select_its_containers():
    """`mltop report ml-team/trainer` / `mltop doctor ml-team/trainer`: a pod selects its containers; a
    container's own name still selects it alone, and a pod that is not there is reported missing."""
    import builders as b
    from mltop.probes.model import KubernetesInfo

    def pod_container(pod: str, name: str):
        k = KubernetesInfo("ml-team", pod, "uid-" + pod, name, "Burstable")
        return b.replace(b.container(f"ml-team/{pod}/{name}"), kubernetes=k)

    snap = b.snapshot([pod_container("trainer", "main"), pod_container("trainer", "loader"),
                       pod_container("trainer-2", "main"), b.container("notebook")])
    chosen, missing = snap.select(["ml-team/trainer", "notebook", "ml-team/trainer/main", "ml-team/gone"])
    assert sorted(c.name for c in chosen[:2]) == ["ml-team/trainer/loader", "ml-team/trainer/main"]
    assert [c.name for c in chosen[2:]] == ["notebook"]  # (the pod's container named again: no repeat)
    assert missing == ("ml-team/gone",)
    chosen, _ = snap.select(["ml-team/trainer/loader"])
    assert [c.name for c in chosen] == ["ml-team/trainer/loader"]
