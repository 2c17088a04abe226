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
class GpuAllocation:
    """A device the kubelet gave a pod container (its pod-resources API), beside whether the container uses it.

    device_id is the device plugin's word: a GPU UUID, `GPU-<uuid>::<n>` for time-slicing replica n, or a
    `MIG-<uuid>`; uuid is the NVML UUID it names (the replica suffix dropped)."""

    resource_name: str  # "nvidia.com/gpu", "nvidia.com/mig-1g.10gb"
    device_id: str
    uuid: str
    replica: int | None = None  # time-slicing replica; None for a whole GPU or a MIG device
    mig: bool = False
    index: int | None = None  # the NVML index of the GPU it names (of the parent GPU for MIG); None: not seen
    in_use: bool = False  # a process of the container runs on this device (NVML) in this sweep
    unused_since: float | None = None  # unix time since which no process of the container ran on it


@dataclass(frozen=True)
class ContainerAttempt:
    """An earlier run of a pod container: the kubelet restarts a container by creating a new one with the same
    name in the same pod (`metadata.attempt` n, log file `<name>/<n>.log`) and keeps the dead one until its
    garbage collection. What CRI's ContainerStatus says of how it ended, as `kubectl describe pod` shows it."""

    attempt: int  # CRI metadata.attempt (the kubelet's restartCount when it was created)
    container_id: str
    status: str  # "exited" (the engine's word), or "running"/"unknown" for a runtime that says so
    exit_code: int | None  # None while its status is not known yet (a cold start asks it in the background)
    reason: str  # CRI's reason: "Error", "OOMKilled", "Completed", "" when not known
    started_at: str | None
    finished_at: str | None
    log_path: str | None  # its own log file, `<pod log dir>/<name>/<attempt>.log`


@dataclass(frozen=True)
class KubernetesInfo:
    """The pod a container belongs to (kubelet labels; containerd's io.kubernetes.cri.* annotations as the
    fallback; the pod UID and QoS class also from the cgroup path). snapshot --json's `kubernetes`."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    qos: str | None  # "Guaranteed" | "Burstable" | "BestEffort" (from the cgroup path); None when not known
    # The devices the kubelet allocated to it (pod-resources API); () when none or not known (see host.sources)
    gpus_allocated: tuple[GpuAllocation, ...] = ()
    # The earlier attempts of this container that the runtime still keeps (the kubelet keeps dead ones until
    # its garbage collection), newest first; one container (the newest attempt) is listed per pod container.
    previous_attempts: tuple[ContainerAttempt, ...] = ()

    @property
    def display_name(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"
