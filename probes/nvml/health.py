"""A GPU's health from NVML: clocks, P-state, fan, ECC, retired pages, row remapping, PCIe, codecs, compute and
MIG mode; throttle reasons in words; the sample of a GPU that cannot be read."""

from __future__ import annotations

from typing import Any, Callable

from ..model import GpuSample, MigDevice

# query(field, (function, args), ...) -> the first function's answer that is not a fall-back error, or None
# with the reason in the GPU's `unavailable` (NvmlProbe builds it per GPU).
Query = Callable[..., Any]

# Clocks event ("throttle") reason bits, as nvml.h names them.
THROTTLE_REASON_NAMES: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)

COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}

# The fields a GPU that cannot be read says are unavailable.
GPU_FIELDS = (
    "utilization_percent",
    "memory_utilization_percent",
    "memory_used_bytes",
    "memory_total_bytes",
    "temperature_c",
    "power_w",
    "power_limit_w",
    "throttle_reasons",
    "persistence_mode",
    "pci_bus_id",
    "processes",
)


def throttle_reason_names(mask: int) -> tuple[str, ...]:
    names = [name for bit, name in THROTTLE_REASON_NAMES if mask & bit]
    known = 0
    for bit, _ in THROTTLE_REASON_NAMES:
        known |= bit
    rest = mask & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"unknown_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return tuple(names)


def text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def read_health(pynvml: Any, handle: Any, query: Query) -> dict[str, Any]:
    """Clocks, P-state, fan, ECC, retired pages, row remapping, PCIe, codecs, compute and MIG mode.

    Each read fails soft: None, with the reason in `unavailable` (via `query`).
    """
    out: dict[str, Any] = {}

    def get(field: str, fn: Callable[..., Any], *args: Any) -> Any:
        return query(field, (fn, (handle, *args)))

    clock_sm, clock_mem = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM
    out["sm_clock_mhz"] = get("sm_clock_mhz", pynvml.nvmlDeviceGetClockInfo, clock_sm)
    out["sm_clock_max_mhz"] = get("sm_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, clock_sm)
    out["memory_clock_mhz"] = get("memory_clock_mhz", pynvml.nvmlDeviceGetClockInfo, clock_mem)
    out["memory_clock_max_mhz"] = get("memory_clock_max_mhz", pynvml.nvmlDeviceGetMaxClockInfo, clock_mem)
    out["performance_state"] = get("performance_state", pynvml.nvmlDeviceGetPerformanceState)
    fan = get("fan_percent", pynvml.nvmlDeviceGetFanSpeed)
    out["fan_percent"] = float(fan) if fan is not None else None
    ecc = get("ecc_enabled", pynvml.nvmlDeviceGetEccMode)
    out["ecc_enabled"] = bool(ecc[0]) if ecc is not None else None
    if out["ecc_enabled"]:
        for field, error_type, counter in (
            ("ecc_volatile_corrected", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC),
            ("ecc_volatile_uncorrected", pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC),
            ("ecc_aggregate_corrected", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC),
            ("ecc_aggregate_uncorrected", pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
             pynvml.NVML_AGGREGATE_ECC),
        ):
            out[field] = get(field, pynvml.nvmlDeviceGetTotalEccErrors, error_type, counter)
    pending = get("retired_pages_pending", pynvml.nvmlDeviceGetRetiredPagesPendingStatus)
    out["retired_pages_pending"] = bool(pending) if pending is not None else None
    rows = get("remapped_rows_pending", pynvml.nvmlDeviceGetRemappedRows)
    if rows is not None:
        corr, unc, rows_pending, failed = rows
        out.update(remapped_rows_correctable=int(corr), remapped_rows_uncorrectable=int(unc),
                   remapped_rows_pending=bool(rows_pending), remapped_rows_failed=bool(failed))
    out["pcie_generation"] = get("pcie_generation", pynvml.nvmlDeviceGetCurrPcieLinkGeneration)
    out["pcie_generation_max"] = get("pcie_generation_max", pynvml.nvmlDeviceGetMaxPcieLinkGeneration)
    out["pcie_width"] = get("pcie_width", pynvml.nvmlDeviceGetCurrPcieLinkWidth)
    out["pcie_width_max"] = get("pcie_width_max", pynvml.nvmlDeviceGetMaxPcieLinkWidth)
    # NVML samples these over ~20 ms each on real hardware: the dearest reads here.
    tx = get("pcie_tx_bytes_per_s", pynvml.nvmlDeviceGetPcieThroughput, pynvml.NVML_PCIE_UTIL_TX_BYTES)
    rx = get("pcie_rx_bytes_per_s", pynvml.nvmlDeviceGetPcieThroughput, pynvml.NVML_PCIE_UTIL_RX_BYTES)
    out["pcie_tx_bytes_per_s"] = tx * 1024.0 if tx is not None else None  # NVML gives KB/s
    out["pcie_rx_bytes_per_s"] = rx * 1024.0 if rx is not None else None
    enc = get("encoder_percent", pynvml.nvmlDeviceGetEncoderUtilization)
    dec = get("decoder_percent", pynvml.nvmlDeviceGetDecoderUtilization)
    out["encoder_percent"] = float(enc[0]) if enc is not None else None
    out["decoder_percent"] = float(dec[0]) if dec is not None else None
    mode = get("compute_mode", pynvml.nvmlDeviceGetComputeMode)
    out["compute_mode"] = COMPUTE_MODES.get(mode, f"mode {mode}") if mode is not None else None
    mig = get("mig_enabled", pynvml.nvmlDeviceGetMigMode)
    out["mig_enabled"] = bool(mig[0]) if mig is not None else None
    if out["mig_enabled"]:
        out["mig_devices"] = mig_devices(pynvml, handle, query)
    return out


def mig_devices(pynvml: Any, handle: Any, query: Query) -> tuple[MigDevice, ...]:
    """Each MIG device of a GPU with its memory and the host PIDs NVML lists on it."""
    count = query("mig_devices", (pynvml.nvmlDeviceGetMaxMigDeviceCount, (handle,))) or 0
    out = []
    for slot in range(count):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except pynvml.NVMLError:
            continue  # an empty slot answers NOT_FOUND

        def soft(fn: Callable[..., Any], *args: Any) -> Any:
            try:
                return fn(mig, *args)
            except pynvml.NVMLError:
                return None

        memory = soft(pynvml.nvmlDeviceGetMemoryInfo)
        pids: list[int] = []
        mps = getattr(pynvml, "nvmlDeviceGetMPSComputeRunningProcesses", None)  # MPS clients (MPS on MIG)
        for fn in (pynvml.nvmlDeviceGetComputeRunningProcesses, pynvml.nvmlDeviceGetGraphicsRunningProcesses, mps):
            if fn is None:
                continue
            pids += [int(p.pid) for p in soft(fn) or () if int(p.pid) not in pids]
        out.append(MigDevice(
            index=slot, uuid=text(soft(pynvml.nvmlDeviceGetUUID) or ""),
            gpu_instance_id=soft(pynvml.nvmlDeviceGetGpuInstanceId),
            compute_instance_id=soft(pynvml.nvmlDeviceGetComputeInstanceId),
            memory_used_bytes=int(memory.used) if memory is not None else None,
            memory_total_bytes=int(memory.total) if memory is not None else None,
            host_pids=tuple(pids),
            profile=mig_profile(soft(pynvml.nvmlDeviceGetName)),
        ))
    return tuple(out)


def mig_profile(name: Any) -> str | None:
    """"NVIDIA H100 80GB HBM3 MIG 1g.10gb" -> "1g.10gb" (the GPU instance profile, as DCGM names it)."""
    if not name:
        return None
    _, sep, profile = text(name).rpartition(" MIG ")
    return (profile.strip() or None) if sep else None


def unreachable_gpu(index: int, uuid: str, name: str, reason: str) -> GpuSample:
    return GpuSample(
        index=index,
        uuid=uuid,
        name=name,
        utilization_percent=None,
        memory_utilization_percent=None,
        memory_used_bytes=None,
        memory_total_bytes=None,
        temperature_c=None,
        power_w=None,
        power_limit_w=None,
        throttle_reasons=(),
        persistence_mode=None,
        processes=(),
        pci_bus_id=None,
        unavailable={field: reason for field in GPU_FIELDS},
    )
