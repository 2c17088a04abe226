"""The snapshot's GPU records: one GPU as a sweep saw it (NVML's figures, health, GPM, MIG devices, the processes
on it and who shares it). Part of probes/model.py's records (re-exported there), kept in their own file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .sharing_records import GpuSharing
from .source_records import KubernetesInfo


@dataclass(frozen=True)
class GpuProcess:
    """A process NVML reports on one GPU. PIDs are host PIDs: the driver knows no PID namespaces."""

    host_pid: int
    type: str  # "compute" | "graphics" | "mps" (a client of the MPS server: NVML's MPS process list)
    gpu_memory_bytes: int | None  # None when the driver does not say (e.g. no permission, MIG)
    sm_percent: float | None  # None when process utilisation is unavailable on this driver/GPU
    name: str | None = None  # process name from /proc, when visible
    container_id: str | None = None  # full id, set by attribution
    container_name: str | None = None
    # "docker" | "containerd" | "cri-o" | "podman" (probes/identity.py); None: a host process, or a pod's
    # container under the cgroupfs driver that no source named (the path does not say which runtime)
    runtime: str | None = None
    kubernetes: KubernetesInfo | None = None  # the pod the process's container belongs to


@dataclass(frozen=True)
class XidEvent:
    """One Xid error the driver reported for a GPU, kept with when it happened."""

    xid: int
    time: float  # unix time
    source: str  # "NVML events" | "/dev/kmsg" (the kernel log, for Xids from before mltop started)
    pci_bus_id: str | None = None
    text: str | None = None  # the kernel log line, verbatim


@dataclass(frozen=True)
class SXidEvent:
    """One SXid (an NVSwitch error) from the kernel log: the switch's, not a GPU's."""

    sxid: int
    time: float  # unix time
    switch: str  # "nvswitch3"
    pci_bus_id: str  # the switch's
    severity: str | None  # "Fatal" | "Non-fatal"
    text: str  # the kernel log line, verbatim


@dataclass(frozen=True)
class GpmMetrics:
    """GPU Performance Metrics (NVML GPM, Hopper and newer) between two samples one sweep apart: what the SMs,
    tensor pipes and memory really did, where `utilization_percent` only says a kernel was running. Percent
    0-100 and bytes/s; None where this GPU's NVML does not give the metric."""

    interval_s: float  # between the two samples
    graphics_active_percent: float | None  # time the graphics/compute engine was busy (DCGM GR_ENGINE_ACTIVE)
    sm_active_percent: float | None  # share of SMs busy (DCGM SM_ACTIVE)
    sm_occupancy_percent: float | None  # resident warps vs the maximum (DCGM SM_OCCUPANCY)
    tensor_active_percent: float | None  # any tensor pipe busy (DCGM PIPE_TENSOR_ACTIVE)
    fp64_active_percent: float | None  # non-tensor FP64 pipe (DCGM PIPE_FP64_ACTIVE)
    fp32_active_percent: float | None
    fp16_active_percent: float | None
    dram_active_percent: float | None  # DRAM bandwidth used vs peak (DCGM DRAM_ACTIVE)
    pcie_tx_bytes_per_s: float | None
    pcie_rx_bytes_per_s: float | None
    nvlink_tx_bytes_per_s: float | None
    nvlink_rx_bytes_per_s: float | None


@dataclass(frozen=True)
class MigDevice:
    """One MIG instance of a GPU. Its processes are also on the parent GPU's list (by host PID), where they
    are attributed to containers like any other: `GpuSample.mig_processes(mig)` gives them back."""

    index: int  # the slot on its GPU
    uuid: str  # "MIG-..."
    gpu_instance_id: int | None
    compute_instance_id: int | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    host_pids: tuple[int, ...] = ()
    profile: str | None = None  # the GPU instance profile, e.g. "1g.10gb" (from the MIG device's name)
    gpm: GpmMetrics | None = None  # of its GPU instance (shared by the compute instances in it)


# NVLink DL error counters, as NvLink fields name them, with NVML's NVML_NVLINK_ERROR_DL_* counter numbers.
NVLINK_COUNTERS: tuple[tuple[str, int], ...] = (("replay", 0), ("recovery", 1), ("crc_flit", 2), ("crc_data", 3))


@dataclass(frozen=True)
class NvLink:
    """One NVLink of a GPU: up or not, and its data-link error counters since the driver loaded (cumulative:
    judge a rise, never a level). None: the counter could not be read."""

    link: int
    active: bool
    replay: int | None = None  # NVML_NVLINK_ERROR_DL_REPLAY: packets sent again after a CRC error
    recovery: int | None = None  # DL_RECOVERY: the link retrained to recover
    crc_flit: int | None = None  # DL_CRC_FLIT: flow-control unit CRC errors
    crc_data: int | None = None  # DL_CRC_DATA: data CRC errors


@dataclass(frozen=True)
class NvLinkRise:
    link: int
    counter: str  # one of NVLINK_COUNTERS' names
    before: int
    after: int


@dataclass(frozen=True)
class NvLinkErrorWindow:
    """How a GPU's NVLink error counters moved between the probe's last two reads of them (they are read less
    often than every sweep, so the window is carried in the snapshot rather than left to two snapshots)."""

    start: float  # unix time of the earlier read
    end: float  # unix time of the later read
    rises: tuple[NvLinkRise, ...] = ()  # the counters that rose, by link; empty: none did


# NVML_GPU_FABRIC_STATE_* in words
FABRIC_STATES = {0: "not_supported", 1: "not_started", 2: "in_progress", 3: "completed"}


@dataclass(frozen=True)
class GpuFabric:
    """The GPU's place in the NVSwitch fabric (nvmlDeviceGetGpuFabricInfoV): Fabric Manager registers the GPUs of
    an HGX board with the NVSwitches; until it has (state "completed", status 0), CUDA fails with error 802."""

    state: str  # "not_supported" (no NVSwitch: PCIe boards) | "not_started" | "in_progress" | "completed"
    status: int  # an nvmlReturn_t: 0 success, else why registration failed
    status_text: str  # NVML's words for the status
    clique_id: int | None = None
    cluster_uuid: str | None = None
    health_mask: int | None = None  # v2 and later; 0 or None: nothing to report
    read_at: float | None = None  # unix time


@dataclass(frozen=True)
class GpuSample:
    index: int
    uuid: str
    name: str
    utilization_percent: float | None
    memory_utilization_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    throttle_reasons: tuple[str, ...]  # names, e.g. ("sw_power_cap", "hw_thermal_slowdown")
    persistence_mode: bool | None
    processes: tuple[GpuProcess, ...]
    pci_bus_id: str | None = None
    # field name -> reason, for the fields NVML could not give (e.g. {"power_w": "not supported"})
    unavailable: Mapping[str, str] = field(default_factory=dict)
    # Health (None where NVML cannot say; the reason is in `unavailable`).
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    memory_clock_mhz: int | None = None
    memory_clock_max_mhz: int | None = None
    performance_state: int | None = None  # 0 (fastest) .. 15
    fan_percent: float | None = None
    ecc_enabled: bool | None = None
    ecc_volatile_corrected: int | None = None  # since the last driver load
    ecc_volatile_uncorrected: int | None = None
    ecc_aggregate_corrected: int | None = None  # over the GPU's life
    ecc_aggregate_uncorrected: int | None = None
    retired_pages_pending: bool | None = None  # a page retirement waits for the next reset/reboot
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remapped_rows_pending: bool | None = None  # a row remap waits for the next reset
    remapped_rows_failed: bool | None = None  # a remap failed: the GPU needs service
    pcie_generation: int | None = None
    pcie_generation_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    pcie_tx_bytes_per_s: float | None = None
    pcie_rx_bytes_per_s: float | None = None
    encoder_percent: float | None = None
    decoder_percent: float | None = None
    compute_mode: str | None = None  # "default" | "exclusive_thread" | "prohibited" | "exclusive_process"
    mig_enabled: bool | None = None
    mig_devices: tuple[MigDevice, ...] = ()
    xid_events: tuple[XidEvent, ...] = ()  # oldest first
    gpm: GpmMetrics | None = None  # None: not supported or not yet two samples; the reason in unavailable["gpm"]
    sharing: tuple[GpuSharing, ...] = ()  # the GPU, or its MIG devices, used by 2+ sharers (probes/gpu_sharing.py)
    # NVLink: empty on a GPU without it (a PCIe board; the reason in unavailable["nvlinks"])
    nvlinks: tuple[NvLink, ...] = ()
    nvlink_errors_at: float | None = None  # unix time the counters in `nvlinks` were read
    nvlink_errors: NvLinkErrorWindow | None = None  # None: fewer than two reads yet
    fabric: GpuFabric | None = None  # None: NVML cannot say (older driver; the reason in unavailable["fabric"])

    @property
    def nvlinks_active(self) -> int:
        return sum(1 for link in self.nvlinks if link.active)

    def mig_processes(self, mig: MigDevice) -> tuple[GpuProcess, ...]:
        """The processes on one MIG device, as attributed on this GPU."""
        return tuple(p for p in self.processes if p.host_pid in mig.host_pids)
