"""GPU Performance Metrics (NVML GPM): one sample per GPU (and MIG GPU instance) per sweep, metrics between the
last two. Runs on the NVML worker thread, through the probe's timed call, under its deadline."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable

from ..model import GpmMetrics, MigDevice
from .errors import FUNCTION_NOT_FOUND, NO_PERMISSION, NOT_SUPPORTED, code_of, raise_if_fatal

MIB = 1 << 20

# (GpmMetrics field, NVML_GPM_METRIC_* id, scale to the field's unit). Ids as nvidia-ml-py names them; NVML
# gives the byte rates in MiB/s.
METRICS: tuple[tuple[str, int, float], ...] = (
    ("graphics_active_percent", 1, 1.0),  # GRAPHICS_UTIL
    ("sm_active_percent", 2, 1.0),  # SM_UTIL
    ("sm_occupancy_percent", 3, 1.0),  # SM_OCCUPANCY
    ("tensor_active_percent", 5, 1.0),  # ANY_TENSOR_UTIL
    ("dram_active_percent", 10, 1.0),  # DRAM_BW_UTIL
    ("fp64_active_percent", 11, 1.0),  # FP64_UTIL
    ("fp32_active_percent", 12, 1.0),  # FP32_UTIL
    ("fp16_active_percent", 13, 1.0),  # FP16_UTIL
    ("pcie_tx_bytes_per_s", 20, MIB),  # PCIE_TX_PER_SEC
    ("pcie_rx_bytes_per_s", 21, MIB),  # PCIE_RX_PER_SEC
    ("nvlink_rx_bytes_per_s", 60, MIB),  # NVLINK_TOTAL_RX_PER_SEC
    ("nvlink_tx_bytes_per_s", 61, MIB),  # NVLINK_TOTAL_TX_PER_SEC
)

NOT_SUPPORTED_REASON = ("this GPU has no GPU Performance Metrics (GPM needs a Hopper or newer GPU: H100, H200, "
                        "B200); utilisation shows only that a kernel was running")
OLD_DRIVER_REASON = ("this driver's NVML has no GPU Performance Metrics ({function} not found): update the "
                     "NVIDIA driver to one that supports GPM")
NO_PERMISSION_REASON = ("no permission to read GPU Performance Metrics: the driver restricts profiling counters to "
                        "admin users (NVreg_RestrictProfilingToAdminUsers=1, the default): run mltop as root")
FIRST_SAMPLE_REASON = "first GPM sample taken: the figures come with the next sweep"


def reason_for(err: BaseException, function: str) -> str:
    code = code_of(err)
    if code == NOT_SUPPORTED:
        return NOT_SUPPORTED_REASON
    if code == FUNCTION_NOT_FOUND:
        return OLD_DRIVER_REASON.format(function=function)
    if code == NO_PERMISSION:
        return NO_PERMISSION_REASON
    return f"GPM: NVML error: {err}"


class _Slot:
    """Two NVML samples of one GPU or GPU instance: the newest taken and a spare to take the next into."""

    __slots__ = ("newest", "spare", "taken_at")

    def __init__(self, newest: Any, spare: Any, taken_at: float | None):
        self.newest, self.spare, self.taken_at = newest, spare, taken_at


class GpmSampler:
    """GPM for the GPUs of one NVML session. `call(fn, *args)` is the probe's timed NVML call; a lost GPU or a
    broken session raise as from any read (errors.raise_if_fatal), every other error becomes a reason."""

    def __init__(self, call: Callable[..., Any]):
        self._call = call
        self._support: dict[str, str | None] = {}  # uuid -> None (supported) or why not; a GPU keeps its answer
        self._slots: dict[tuple[str, int | None], _Slot] = {}
        self._seen: set[tuple[str, int | None]] = set()
        self._request: Any = None  # one c_nvmlGpmMetricsGet_t, reused (it holds 477 metric records)

    # ----------------------------------------------------------------- per sweep

    def read(self, pynvml: Any, handle: Any, uuid: str, migs: tuple[MigDevice, ...],
             unavailable: dict[str, str]) -> dict[str, Any]:
        """GpuSample fields: `gpm`, and `mig_devices` with each instance's figures; the reason when none goes
        into `unavailable["gpm"]`."""
        gpm, reason, per_instance = self.sample(
            pynvml, handle, uuid, (m.gpu_instance_id for m in migs if m.gpu_instance_id is not None))
        if reason is not None:
            unavailable["gpm"] = reason
        out: dict[str, Any] = {"gpm": gpm}
        if per_instance:
            out["mig_devices"] = tuple(dataclasses.replace(m, gpm=per_instance.get(m.gpu_instance_id))
                                       for m in migs)
        return out

    def sample(self, pynvml: Any, handle: Any, uuid: str, gpu_instances: Iterable[int] = ()
               ) -> tuple[GpmMetrics | None, str | None, dict[int, GpmMetrics | None]]:
        """(the GPU's metrics or None, why None, {GPU instance id: metrics or None}) for one GPU this sweep."""
        reason = self._supported(pynvml, handle, uuid)
        if reason is not None:
            return None, reason, {}
        metrics, reason = self._take(pynvml, (uuid, None), lambda s: self._call(pynvml.nvmlGpmSampleGet, handle, s))
        instances: dict[int, GpmMetrics | None] = {}
        for gi in sorted(set(gpu_instances)):
            instances[gi], _ = self._take(
                pynvml, (uuid, gi), lambda s, gi=gi: self._call(pynvml.nvmlGpmMigSampleGet, handle, gi, s))
        return metrics, reason, instances

    def end_sweep(self, pynvml: Any) -> None:
        """Free the samples of GPUs and instances this sweep did not sample (gone, lost, MIG reconfigured)."""
        for key in [k for k in self._slots if k not in self._seen]:
            self._free(pynvml, self._slots.pop(key))
        self._seen.clear()

    def close(self, pynvml: Any) -> None:
        """Free every sample (before nvmlShutdown) and forget what was learnt of this session's GPUs."""
        for slot in self._slots.values():
            self._free(pynvml, slot)
        self._slots.clear()
        self._seen.clear()
        self._support.clear()
        self._request = None

    # ----------------------------------------------------------------- inside

    def _supported(self, pynvml: Any, handle: Any, uuid: str) -> str | None:
        if uuid in self._support:
            return self._support[uuid]
        try:
            support = self._call(pynvml.nvmlGpmQueryDeviceSupport, handle)
            reason = None if support.isSupportedDevice else NOT_SUPPORTED_REASON
        except pynvml.NVMLError as err:
            raise_if_fatal(err)
            reason = reason_for(err, "nvmlGpmQueryDeviceSupport")
        self._support[uuid] = reason
        return reason

    def _take(self, pynvml: Any, key: tuple[str, int | None], get: Callable[[Any], Any]
              ) -> tuple[GpmMetrics | None, str | None]:
        self._seen.add(key)
        slot = self._slots.get(key)
        try:
            if slot is None:
                slot = _Slot(None, self._call(pynvml.nvmlGpmSampleAlloc), None)
                self._slots[key] = slot
            if slot.spare is None:
                slot.spare = self._call(pynvml.nvmlGpmSampleAlloc)
            get(slot.spare)
            taken_at = time.monotonic()
        except pynvml.NVMLError as err:
            raise_if_fatal(err)
            return None, reason_for(err, "nvmlGpmSampleGet")
        # The new sample becomes the newest; the one before it is the spare for the next sweep (no alloc/free).
        previous, previous_at = slot.newest, slot.taken_at
        slot.newest, slot.spare, slot.taken_at = slot.spare, previous, taken_at
        if previous is None or previous_at is None:
            return None, FIRST_SAMPLE_REASON
        try:
            values = self._metrics(pynvml, previous, slot.newest)
        except pynvml.NVMLError as err:
            raise_if_fatal(err)
            return None, reason_for(err, "nvmlGpmMetricsGet")
        return GpmMetrics(interval_s=taken_at - previous_at, **values), None

    def _metrics(self, pynvml: Any, first: Any, second: Any) -> dict[str, float | None]:
        request = self._request
        if request is None:
            request = self._request = pynvml.c_nvmlGpmMetricsGet_t()
            request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = len(METRICS)
        for i, (_, metric_id, _) in enumerate(METRICS):
            request.metrics[i].metricId = metric_id  # NVML may rewrite the records: set the ids every time
        request.sample1, request.sample2 = first, second
        self._call(pynvml.nvmlGpmMetricsGet, request)
        out: dict[str, float | None] = {}
        for i, (field, _, scale) in enumerate(METRICS):
            record = request.metrics[i]
            out[field] = record.value * scale if record.nvmlReturn == 0 else None
        return out

    def _free(self, pynvml: Any, slot: _Slot) -> None:
        for sample in (slot.newest, slot.spare):
            if sample is not None:
                try:
                    pynvml.nvmlGpmSampleFree(sample)
                except Exception:
                    pass  # the session may be gone already; nothing else holds the sample
        slot.newest = slot.spare = None
