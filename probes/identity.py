"""Who a cgroup belongs to: (runtime, container id, pod UID, QoS class) from its path, for every runtime.

The one place that knows how Docker, containerd, CRI-O and podman name their containers' cgroups, with the
cgroupfs and the systemd drivers, on cgroup v1 and v2 (cAdvisor's container factories each decide whether a
path is theirs the same way). GPU attribution, the CRI source and the in-container actions all ask here.

| runtime and driver     | path below the hierarchy root                                                    |
| ---------------------- | -------------------------------------------------------------------------------- |
| Docker, cgroupfs       | /docker/<id>                                                                     |
| Docker, systemd        | /system.slice/docker-<id>.scope                                                  |
| Kubernetes, cgroupfs   | /kubepods[/burstable|/besteffort]/pod<uid>/<id>                                  |
| Kubernetes, systemd    | /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/     |
|                        |   cri-containerd-<id>.scope (CRI-O: crio-<id>.scope; cri-dockerd: docker-<id>.scope) |
| podman                 | /machine.slice/libpod-<id>.scope, /user.slice/.../libpod-<id>.scope              |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Runtimes as mltop names them (snapshot --json's containers[].runtime)
DOCKER = "docker"
CONTAINERD = "containerd"
CRIO = "cri-o"
PODMAN = "podman"

# Kubernetes' own spelling of the QoS classes (kubectl's QOS column)
GUARANTEED = "Guaranteed"
BURSTABLE = "Burstable"
BEST_EFFORT = "BestEffort"

_ID = r"[0-9a-f]{64}"
# A systemd scope names its runtime: docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope,
# libpod-<id>.scope (and crio-conmon-<id>.scope, the monitor process, which is no container).
_SCOPE = re.compile(rf"^(docker|cri-containerd|crio|libpod)-({_ID})\.scope$")
_SCOPE_RUNTIME = {"docker": DOCKER, "cri-containerd": CONTAINERD, "crio": CRIO, "libpod": PODMAN}
_BARE_ID = re.compile(rf"^{_ID}$")
# cgroupfs: pod<uid>; systemd: kubepods-<qos>-pod<uid with _>.slice or kubepods-pod<uid>.slice (Guaranteed)
_POD_CGROUPFS = re.compile(r"^pod([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f-]{8,})$")
# (kind and k3s-in-docker nest the kubelet's slices under their own: kubelet-kubepods-…-pod<uid>.slice)
_POD_SYSTEMD = re.compile(r"^(?:[\w.-]+-)?kubepods(?:-(burstable|besteffort))?-pod([0-9a-f_]+)\.slice$")
_KUBEPODS = re.compile(r"^(?:[\w.-]+-)?kubepods(?:\.slice)?$")
_QOS_SYSTEMD = re.compile(r"^(?:[\w.-]+-)?kubepods-(burstable|besteffort)\.slice$")
_QOS = {"burstable": BURSTABLE, "besteffort": BEST_EFFORT}


@dataclass(frozen=True)
class CgroupIdentity:
    """What a cgroup path says about its owner. `runtime` is None where the path does not name it (a pod's
    container under the cgroupfs driver is a bare id, whichever runtime made it); `pod_uid` and `qos` are
    None outside Kubernetes pods."""

    runtime: str | None
    container_id: str
    pod_uid: str | None = None
    qos: str | None = None


def identity_from_path(path: str) -> CgroupIdentity | None:
    """The container a cgroup path (below the hierarchy root) belongs to, or None for a host cgroup.

    The outermost container segment wins: a container's own sub-cgroups (`/docker/<id>/init.scope`, a nested
    engine's `/docker/<id>/docker/<inner>`) belong to the container the host's runtime knows."""
    segments = [s for s in path.split("/") if s]
    pod_uid = qos = None
    in_kubepods = False
    for segment in segments:
        if not in_kubepods and _KUBEPODS.match(segment):
            in_kubepods, qos = True, GUARANTEED
            continue
        if in_kubepods and pod_uid is None:
            if segment in _QOS:
                qos = _QOS[segment]
                continue
            m = _QOS_SYSTEMD.match(segment)
            if m:
                qos = _QOS[m.group(1)]
                continue
            m = _POD_SYSTEMD.match(segment)
            if m:
                pod_uid = m.group(2).replace("_", "-")
                qos = _QOS.get(m.group(1) or "", GUARANTEED)
                continue
            m = _POD_CGROUPFS.match(segment)
            if m:
                pod_uid = m.group(1)
                continue
        m = _SCOPE.match(segment)
        if m:
            return CgroupIdentity(_SCOPE_RUNTIME[m.group(1)], m.group(2), pod_uid, qos if pod_uid else None)
        if _BARE_ID.match(segment):
            if pod_uid is not None:
                return CgroupIdentity(None, segment, pod_uid, qos)
            if in_kubepods:
                return None  # an id right under a QoS slice is no container layout we know
            runtime = _bare_runtime(segments, segment)
            if runtime is not None:
                return CgroupIdentity(runtime, segment)
    return None


def _bare_runtime(segments: list[str], segment: str) -> str | None:
    """The runtime of a bare-id segment outside pods, from its parent: /docker/<id> (Docker's cgroupfs
    driver), /libpod_parent/.../<id> (podman, cgroupfs), /<containerd namespace>/<id> (ctr, nerdctl)."""
    index = segments.index(segment)
    parent = segments[index - 1] if index else ""
    if parent == "docker":
        return DOCKER
    if parent.startswith("libpod") or "libpod_parent" in segments[:index]:
        return PODMAN
    if parent in ("k8s.io", "moby", "default") or "containerd" in parent:
        return CONTAINERD
    return None


def pod_cgroup_guesses(pod_uid: str, container_id: str, runtime: str | None) -> tuple[str, ...]:
    """Where the kubelet puts a pod container's cgroup, for each QoS class and both drivers: to find it by id
    before the runtime has said its PID (identity_from_path reads these paths back)."""
    if not pod_uid:
        return ()
    scope = {CONTAINERD: "cri-containerd", CRIO: "crio", DOCKER: "docker"}.get(runtime or "", "cri-containerd")
    uid_ = pod_uid.replace("-", "_")
    return (
        f"kubepods/burstable/pod{pod_uid}/{container_id}",
        f"kubepods/besteffort/pod{pod_uid}/{container_id}",
        f"kubepods/pod{pod_uid}/{container_id}",
        f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/{scope}-{container_id}.scope",
        f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/{scope}-{container_id}.scope",
        f"kubepods.slice/kubepods-pod{uid_}.slice/{scope}-{container_id}.scope",
    )


def identity_from_proc_cgroup(text: str) -> CgroupIdentity | None:
    """The container a process is in, from the text of /proc/<pid>/cgroup (v1: one line per hierarchy;
    v2: the single `0::` line). None for a host process."""
    found = None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        identity = identity_from_path(path)
        if identity is None:
            continue
        if line.startswith("0::") or identity.pod_uid is not None:
            return identity  # the unified line, or a pod's: nothing better can follow
        found = found or identity
    return found


def identity_of_pid(pid: int) -> CgroupIdentity | None:
    """The container host PID `pid` is in; None for a host process or a PID this process cannot see."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return identity_from_proc_cgroup(f.read())
    except OSError:
        return None
