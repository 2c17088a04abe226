"""dcgm-exporter's GPU families from the last snapshot: device fields (DCGM_FI_DEV_*, NVLink errors included) and, from GPU Performance
Metrics, the profiling fields (DCGM_FI_PROF_*) as ratios 0-1 and bytes per second, the way DCGM reports them."""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mltop.probes.model import FABRIC_STATES, NVLINK_COUNTERS, GpmMetrics, GpuSample

MIB = 1 << 20

# dcgm-exporter's label set for device metrics (etc/default-counters.csv fields; labels from its collector).
DCGM_LABELS = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"]
# ... and for the profiling fields, which dcgm-exporter reports per MIG GPU instance too (empty on a whole GPU).
DCGM_PROF_LABELS = DCGM_LABELS + ["GPU_I_PROFILE", "GPU_I_ID"]

# (name, help, GpuSample -> value or None); all gauges, in dcgm-exporter's units.
DCGM_GAUGES: tuple[tuple[str, str, Callable[[GpuSample], float | None]], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda g: g.utilization_percent),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", lambda g: g.memory_utilization_percent),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).",
     lambda g: g.memory_used_bytes // MIB if g.memory_used_bytes is not None else None),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).",
     lambda g: max(g.memory_total_bytes - g.memory_used_bytes, 0) // MIB
     if g.memory_total_bytes is not None and g.memory_used_bytes is not None else None),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda g: g.temperature_c),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lambda g: g.power_w),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", lambda g: getattr(g, "sm_clock_mhz", None)),
    ("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", lambda g: g.memory_clock_mhz),
    ("DCGM_FI_DEV_MAX_SM_CLOCK", "Maximum SM clock frequency (in MHz).", lambda g: g.sm_clock_max_mhz),
    ("DCGM_FI_DEV_MAX_MEM_CLOCK", "Maximum memory clock frequency (in MHz).", lambda g: g.memory_clock_max_mhz),
    ("DCGM_FI_DEV_PSTATE", "Performance state (P0 fastest .. P15).", lambda g: g.performance_state),
    ("DCGM_FI_DEV_FAN_SPEED", "Fan speed (in %).", lambda g: g.fan_percent),
    ("DCGM_FI_DEV_ENC_UTIL", "Encoder utilization (in %).", lambda g: g.encoder_percent),
    ("DCGM_FI_DEV_DEC_UTIL", "Decoder utilization (in %).", lambda g: g.decoder_percent),
    ("DCGM_FI_DEV_PCIE_LINK_GEN", "PCIe current link generation.", lambda g: g.pcie_generation),
    ("DCGM_FI_DEV_PCIE_LINK_WIDTH", "PCIe current link width (lanes).", lambda g: g.pcie_width),
    ("DCGM_FI_DEV_PCIE_MAX_LINK_GEN", "PCIe max link generation.", lambda g: g.pcie_generation_max),
    ("DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH", "PCIe max link width (lanes).", lambda g: g.pcie_width_max),
    # dcgm-exporter declares the error counts below `counter`, but a counter's samples must end in `_total`
    # (prometheus-client appends it, promtool lints it): they are gauges here so the names stay dcgm-exporter's
    # and its dashboards and rules work unchanged. increase()/rate() work on them all the same.
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Total number of single-bit volatile ECC errors (since the driver loaded).",
     lambda g: g.ecc_volatile_corrected),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors (since the driver loaded).",
     lambda g: g.ecc_volatile_uncorrected),
    ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "Total number of single-bit persistent ECC errors (over the GPU's life).",
     lambda g: g.ecc_aggregate_corrected),
    ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "Total number of double-bit persistent ECC errors (over the GPU's life).",
     lambda g: g.ecc_aggregate_uncorrected),
    ("DCGM_FI_DEV_RETIRED_PENDING", "1 when a page retirement waits for the next GPU reset (pre-Ampere).",
     lambda g: _flag(g.retired_pages_pending)),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for correctable errors.",
     lambda g: g.remapped_rows_correctable),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "Number of remapped rows for uncorrectable errors.",
     lambda g: g.remapped_rows_uncorrectable),
    ("DCGM_FI_DEV_ROW_REMAP_PENDING", "1 when a row remap waits for the next GPU reset.",
     lambda g: _flag(g.remapped_rows_pending)),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "Whether remapping of rows has failed (1: the GPU needs service).",
     lambda g: _flag(g.remapped_rows_failed)),
    # 0 when none was seen, as dcgm-exporter. `unavailable["xid_events"]` only says the kernel log (Xids from
    # before mltop started) cannot be read: new Xids still arrive as NVML events.
    ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered (0: none seen).",
     lambda g: g.xid_events[-1].xid if g.xid_events else 0),
)


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def gpu_families(gpus: tuple[GpuSample, ...], hostname: str) -> Iterator[Metric]:
    for name, help_text, value in DCGM_GAUGES:
        family = GaugeMetricFamily(name, help_text, labels=DCGM_LABELS)
        for g in gpus:
            v = value(g)
            if v is not None:
                family.add_metric(_dcgm_labels(g, hostname), float(v))
        yield family
    yield from prof_families(gpus, hostname)
    yield from nvlink_families(gpus, hostname)


def _dcgm_labels(g: GpuSample, hostname: str) -> list[str]:
    return [str(g.index), g.uuid, g.pci_bus_id or "", f"nvidia{g.index}", g.name, hostname]


# (name, help, GpmMetrics field, scale): DCGM's profiling fields from GPM. DCGM gives activity as a ratio 0-1
# (GPM: percent) and PCIe/NVLink traffic in bytes per second. Gauges: the byte fields are rates, not counters.
DCGM_PROF_GAUGES: tuple[tuple[str, str, str, float], ...] = (
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active.", "graphics_active_percent", 0.01),
    ("DCGM_FI_PROF_SM_ACTIVE", "The ratio of cycles an SM has at least 1 warp assigned.", "sm_active_percent", 0.01),
    ("DCGM_FI_PROF_SM_OCCUPANCY", "The ratio of number of warps resident on an SM.", "sm_occupancy_percent", 0.01),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "Ratio of cycles the tensor (HMMA) pipe is active.",
     "tensor_active_percent", 0.01),
    ("DCGM_FI_PROF_PIPE_FP64_ACTIVE", "Ratio of cycles the fp64 pipes are active.", "fp64_active_percent", 0.01),
    ("DCGM_FI_PROF_PIPE_FP32_ACTIVE", "Ratio of cycles the fp32 pipes are active.", "fp32_active_percent", 0.01),
    ("DCGM_FI_PROF_PIPE_FP16_ACTIVE", "Ratio of cycles the fp16 pipes are active.", "fp16_active_percent", 0.01),
    ("DCGM_FI_PROF_DRAM_ACTIVE", "Ratio of cycles the device memory interface is active sending or receiving data.",
     "dram_active_percent", 0.01),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", "The rate of data transmitted over the PCIe bus, headers and payload "
     "(in bytes per second).", "pcie_tx_bytes_per_s", 1.0),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", "The rate of data received over the PCIe bus, headers and payload "
     "(in bytes per second).", "pcie_rx_bytes_per_s", 1.0),
    ("DCGM_FI_PROF_NVLINK_TX_BYTES", "The rate of data transmitted over NVLink, not including protocol headers "
     "(in bytes per second).", "nvlink_tx_bytes_per_s", 1.0),
    ("DCGM_FI_PROF_NVLINK_RX_BYTES", "The rate of data received over NVLink, not including protocol headers "
     "(in bytes per second).", "nvlink_rx_bytes_per_s", 1.0),
)


def prof_families(gpus: tuple[GpuSample, ...], hostname: str) -> Iterator[Metric]:
    """DCGM_FI_PROF_* per GPU and per MIG GPU instance that has GPM figures; none for a GPU without."""
    units: list[tuple[list[str], GpmMetrics]] = []
    for g in gpus:
        labels = _dcgm_labels(g, hostname)
        if g.gpm is not None:
            units.append((labels + ["", ""], g.gpm))
        seen: set[int] = set()
        for m in g.mig_devices:
            if m.gpm is not None and m.gpu_instance_id is not None and m.gpu_instance_id not in seen:
                seen.add(m.gpu_instance_id)  # one series per GPU instance (its compute instances share it)
                units.append((labels + [m.profile or "", str(m.gpu_instance_id)], m.gpm))
    for name, help_text, field, scale in DCGM_PROF_GAUGES:
        family = GaugeMetricFamily(name, help_text, labels=DCGM_PROF_LABELS)
        for labels, gpm in units:
            value = getattr(gpm, field)
            if value is not None:
                family.add_metric(labels, value * scale)
        yield family


# --------------------------------------------------------------------------- NVLink and the fabric

# dcgm-exporter's NVLink error fields (its counters CSVs), totals over the GPU's links; gauges for the reason the
# ECC counts above are. NvLink field -> (name, help).
DCGM_NVLINK_TOTALS: dict[str, tuple[str, str]] = {
    "crc_flit": ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "Total number of NVLink flow-control CRC errors."),
    "crc_data": ("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "Total number of NVLink data CRC errors."),
    "replay": ("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", "Total number of NVLink retries."),
    "recovery": ("DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", "Total number of NVLink recovery errors."),
}
MLTOP_GPU_LABELS = ["gpu", "UUID"]  # as mltop's other per-GPU families (mltop_gpu_xid_errors)
FABRIC_STATE_VALUES = {name: value for value, name in FABRIC_STATES.items()}


def nvlink_families(gpus: tuple[GpuSample, ...], hostname: str) -> Iterator[Metric]:
    """NVLink error totals under dcgm-exporter's names; per link, its state and counters, and each GPU's fabric
    registration under mltop_ names (dcgm-exporter has none for them). Nothing for a GPU without NVLink."""
    linked = [g for g in gpus if g.nvlinks]
    for field, (name, help_text) in DCGM_NVLINK_TOTALS.items():
        family = GaugeMetricFamily(name, help_text, labels=DCGM_LABELS)
        for g in linked:
            values = [getattr(link, field) for link in g.nvlinks]
            if any(v is not None for v in values):
                family.add_metric(_dcgm_labels(g, hostname), float(sum(v for v in values if v is not None)))
        yield family
    up = GaugeMetricFamily("mltop_gpu_nvlink_up", "1 when the NVLink is active, 0 when it is down "
                           "(nvmlDeviceGetNvLinkState).", labels=MLTOP_GPU_LABELS + ["link"])
    errors = CounterMetricFamily("mltop_gpu_nvlink_errors", "NVLink data-link errors of one link since the driver "
                                 "loaded, by counter: replay, recovery, crc_flit, crc_data "
                                 "(nvmlDeviceGetNvLinkErrorCounter).", labels=MLTOP_GPU_LABELS + ["link", "counter"])
    for g in linked:
        labels = [str(g.index), g.uuid]
        for link in g.nvlinks:
            up.add_metric(labels + [str(link.link)], float(link.active))
            for field, _ in NVLINK_COUNTERS:
                value = getattr(link, field)
                if value is not None:
                    errors.add_metric(labels + [str(link.link), field], float(value))
    yield up
    yield errors
    state = GaugeMetricFamily("mltop_gpu_fabric_state", "The GPU's NVSwitch fabric registration "
                              "(nvmlDeviceGetGpuFabricInfoV): 0 not supported, 1 not started, 2 in progress, "
                              "3 completed; the state also as a label.", labels=MLTOP_GPU_LABELS + ["state"])
    status = GaugeMetricFamily("mltop_gpu_fabric_status", "The fabric registration's status, an nvmlReturn_t "
                               "(0: success).", labels=MLTOP_GPU_LABELS)
    for g in gpus:
        if g.fabric is None:
            continue
        labels = [str(g.index), g.uuid]
        state.add_metric(labels + [g.fabric.state], float(FABRIC_STATE_VALUES.get(g.fabric.state, -1)))
        status.add_metric(labels, float(g.fabric.status))
    yield state
    yield status
