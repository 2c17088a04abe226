"""The snapshot's records of shared GPUs (GpuSample.sharing): who shares a GPU or a MIG device, how, and the
sums. Part of probes/model.py's records (re-exported there), kept in their own file; computed by
probes/gpu_sharing.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSharer:
    """One user of a shared GPU: a container, or the host's processes in no container (container_id None)."""

    container_id: str | None
    name: str  # the container's name (a pod's `namespace/pod/container`, a Docker name), or "host"
    runtime: str | None  # "docker" | "containerd" | ... ; None for the host
    device_ids: tuple[str, ...]  # what the kubelet allocated it of this device ("GPU-…::0"); () when nothing
    pids: tuple[int, ...]  # host PIDs of its processes on the device
    # Sums over its processes on the device (NVML); None when it has processes and NVML gave no figure for any
    memory_bytes: int | None
    sm_percent: float | None


@dataclass(frozen=True)
class GpuSharing:
    """A GPU (or a MIG device of it) used by two or more sharers. snapshot --json's `gpus[].sharing[]`.

    sm_sum adds the sharers' per-process SM figures (NVML: the share of the last sample period in which a kernel
    of the process ran). Time-sliced, they are shares of time and add up to at most about 100; under MPS the
    clients' kernels run at once and the sum can pass 100."""

    uuid: str  # the shared device: the GPU's UUID, or the MIG device's
    index: int  # the GPU's NVML index
    mig_index: int | None  # the MIG device's slot on the GPU; None for a whole GPU
    mode: str  # "mps" | "time-sliced" | "shared"
    sharers: tuple[GpuSharer, ...]  # most memory first, the host last
    memory_used_sum: int | None  # the sharers' memory together; None when NVML gave no figure
    memory_total_bytes: int | None  # of the shared device (the MIG device's own for MIG)
    sm_sum: float | None
    mps_server_pid: int | None = None
