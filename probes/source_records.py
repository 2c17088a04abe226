"""The snapshot's records of container sources and pods: which source answered (Docker, a CRI runtime) and
the pod a container belongs to. Part of probes/model.py's records (re-exported there), kept in their own file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SourceStatus:
    """One source of containers (the Docker engine, a CRI runtime): whether it answered, what it is, why not.

    status: "ok", "unreachable", "permission_denied", "error", "disabled", "no_cri" (a socket that answers
    gRPC without the CRI: Docker's own containerd), "absent" (not on this host, and nobody asked for it)."""

    kind: str  # "docker" | "cri"
    endpoint: str  # "unix:///var/run/docker.sock", "unix:///run/containerd/containerd.sock"
    status: str
    error: str | None = None
    runtime: str | None = None  # "docker", "containerd", "cri-o" once it answered
    version: str | None = None  # the runtime's version, e.g. "1.7.2"
    containers: int = 0  # how many containers it named this sweep

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def quiet(self) -> bool:
        """Not answering, and rightly so: nothing to warn about (absent, turned off, no CRI plugin)."""
        return self.status in ("absent", "disabled", "no_cri")


@dataclass(frozen=True)
class KubernetesInfo:
    """The pod a container belongs to (kubelet labels; containerd's io.kubernetes.cri.* annotations as the
    fallback; the pod UID and QoS class also from the cgroup path). snapshot --json's `kubernetes`."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    qos: str | None  # "Guaranteed" | "Burstable" | "BestEffort" (from the cgroup path); None when not known

    @property
    def display_name(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"
