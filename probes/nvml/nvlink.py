"""NVLink and the NVSwitch fabric from NVML: each link's state and data-link error counters, and the GPU's fabric
registration (nvmlDeviceGetGpuFabricInfoV). Runs on the NVML worker thread, through the probe's timed call.

Cost: 8 GPUs x 18 links is 144 state and 576 counter calls. Link states change seldom and the counters are
cumulative, so both are read every `interval_s` (the first two reads one sweep apart, so that a one-shot doctor
already has a window of error counts), and a GPU that answers NOT_SUPPORTED for link 0 or for its fabric info
is never asked again in this session (a PCIe board has neither).
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..model import FABRIC_STATES, NVLINK_COUNTERS, GpuFabric, NvLink, NvLinkErrorWindow, NvLinkRise
from .errors import (ARGUMENT_VERSION_MISMATCH, FUNCTION_NOT_FOUND, INVALID_ARGUMENT, NOT_SUPPORTED, code_of,
                     field_reason, raise_if_fatal)

NO_NVLINK_REASON = "this GPU has no NVLink (a PCIe board, or NVLink is not supported by its driver)"
NO_FABRIC_REASON = "this GPU is not on an NVSwitch fabric (nvmlDeviceGetGpuFabricInfo not supported)"
MAX_LINKS_FALLBACK = 18


@dataclass
class _Gpu:
    """What the reader keeps of one GPU (by uuid) between sweeps."""

    links: tuple[NvLink, ...] = ()
    read_at: float | None = None  # unix time of the latest read
    reads: int = 0
    window: NvLinkErrorWindow | None = None
    no_nvlink: str | None = None  # why not, once known: then never asked again
    fabric: GpuFabric | None = None
    no_fabric: str | None = None
    fabric_function: list[str] = field(default_factory=list)


class NvLinkReader:
    """NVLink and fabric fields of GpuSample for the GPUs of one NVML session. `call(fn, *args)` is the probe's
    timed NVML call; a lost GPU or a broken session raise as from any read, every other error is a reason."""

    interval_s = 10.0  # between reads of a GPU's links, counters and fabric info (after the first two)

    def __init__(self, call: Callable[..., Any], clock: Callable[[], float] = time.monotonic):
        self._call = call
        self._clock = clock
        self._gpus: dict[str, _Gpu] = {}
        self._due: dict[str, float] = {}  # uuid -> monotonic time of the next read

    def forget(self) -> None:
        """A new NVML session: learn every GPU afresh."""
        self._gpus.clear()
        self._due.clear()

    def read(self, pynvml: Any, handle: Any, uuid: str, unavailable: dict[str, str]) -> dict[str, Any]:
        """GpuSample fields `nvlinks`, `nvlink_errors_at`, `nvlink_errors`, `fabric` for one GPU this sweep."""
        gpu = self._gpus.setdefault(uuid, _Gpu())
        now = self._clock()
        if now >= self._due.get(uuid, 0.0):
            self._read_links(pynvml, handle, gpu)
            self._read_fabric(pynvml, handle, gpu)
            # The second read follows at the next sweep, so a window exists early; then every interval_s.
            self._due[uuid] = now + (self.interval_s if gpu.reads >= 2 else 0.0)
        if gpu.no_nvlink is not None:
            unavailable["nvlinks"] = gpu.no_nvlink
        if gpu.no_fabric is not None:
            unavailable["fabric"] = gpu.no_fabric
        return {"nvlinks": gpu.links, "nvlink_errors_at": gpu.read_at if gpu.links else None,
                "nvlink_errors": gpu.window, "fabric": gpu.fabric}

    # ----------------------------------------------------------------- links

    def _read_links(self, pynvml: Any, handle: Any, gpu: _Gpu) -> None:
        if gpu.no_nvlink is not None:
            return
        links: list[NvLink] = []
        max_links = int(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", MAX_LINKS_FALLBACK))
        state_fn, counter_fn = pynvml.nvmlDeviceGetNvLinkState, pynvml.nvmlDeviceGetNvLinkErrorCounter
        call = self._call
        for link in range(max_links):
            try:
                active = bool(call(state_fn, handle, link))
            except pynvml.NVMLError as err:
                raise_if_fatal(err)
                code = code_of(err)
                if link == 0 and code in (NOT_SUPPORTED, FUNCTION_NOT_FOUND, INVALID_ARGUMENT):
                    gpu.no_nvlink = NO_NVLINK_REASON if code != FUNCTION_NOT_FOUND else \
                        field_reason(err, "nvmlDeviceGetNvLinkState")
                    return
                break  # past the GPU's last link: the list ends here
            counts: dict[str, int | None] = {}
            for name, counter in NVLINK_COUNTERS:
                try:
                    counts[name] = int(call(counter_fn, handle, link, counter))
                except pynvml.NVMLError as err:
                    raise_if_fatal(err)
                    counts[name] = None
            links.append(NvLink(link, active, **counts))
        read_at = time.time()
        if gpu.links and gpu.read_at is not None:
            gpu.window = _window(gpu.links, links, gpu.read_at, read_at)
        gpu.links, gpu.read_at = tuple(links), read_at
        gpu.reads += 1

    # ----------------------------------------------------------------- fabric

    def _read_fabric(self, pynvml: Any, handle: Any, gpu: _Gpu) -> None:
        if gpu.no_fabric is not None:
            return
        attempts = []
        if hasattr(pynvml, "nvmlDeviceGetGpuFabricInfoV") and hasattr(pynvml, "c_nvmlGpuFabricInfo_v2_t"):
            def versioned() -> Any:
                info = pynvml.c_nvmlGpuFabricInfo_v2_t()
                info.version = pynvml.nvmlGpuFabricInfo_v2
                self._call(pynvml.nvmlDeviceGetGpuFabricInfoV, handle, ctypes.byref(info))  # pynvml passes it on
                return info
            attempts.append(("nvmlDeviceGetGpuFabricInfoV", versioned))
        if hasattr(pynvml, "nvmlDeviceGetGpuFabricInfo") and hasattr(pynvml, "c_nvmlGpuFabricInfo_t"):
            def deprecated() -> Any:
                info = pynvml.c_nvmlGpuFabricInfo_t()
                self._call(pynvml.nvmlDeviceGetGpuFabricInfo, handle, ctypes.byref(info))
                return info
            attempts.append(("nvmlDeviceGetGpuFabricInfo", deprecated))
        if not attempts:
            gpu.no_fabric = "this nvidia-ml-py has no nvmlDeviceGetGpuFabricInfo"
            return
        reason = ""
        for function, attempt in attempts:
            try:
                info = attempt()
            except pynvml.NVMLError as err:
                raise_if_fatal(err)
                code = code_of(err)
                reason = NO_FABRIC_REASON if code == NOT_SUPPORTED else field_reason(err, function)
                if code in (FUNCTION_NOT_FOUND, ARGUMENT_VERSION_MISMATCH):  # not in this driver: the older call
                    continue
                if code == NOT_SUPPORTED:
                    gpu.no_fabric, gpu.fabric = reason, None
                return  # a passing error: keep the last answer
            status = int(info.status)
            try:
                status_text = pynvml.nvmlErrorString(status) if status else "Success"
                status_text = status_text.decode() if isinstance(status_text, bytes) else str(status_text)
            except Exception:
                status_text = f"NVML status {status}"
            health = getattr(info, "healthMask", None)
            gpu.fabric = GpuFabric(
                state=FABRIC_STATES.get(int(info.state), f"state {int(info.state)}"),
                status=status, status_text=status_text, clique_id=int(info.cliqueId),
                cluster_uuid=bytes(info.clusterUuid).hex() or None,
                health_mask=int(health) if health is not None else None, read_at=time.time())
            return
        gpu.no_fabric = reason


def _window(before: tuple[NvLink, ...], after: list[NvLink], start: float, end: float) -> NvLinkErrorWindow:
    """The counters that rose between two reads (a counter that fell was reset: no rise)."""
    old = {link.link: link for link in before}
    rises = []
    for link in after:
        prev = old.get(link.link)
        if prev is None:
            continue
        for name, _ in NVLINK_COUNTERS:
            a, b = getattr(prev, name), getattr(link, name)
            if a is not None and b is not None and b > a:
                rises.append(NvLinkRise(link.link, name, a, b))
    return NvLinkErrorWindow(start, end, tuple(rises))
