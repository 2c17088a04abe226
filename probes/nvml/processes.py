"""The processes on a GPU: who holds memory (compute, graphics, MPS clients) and how much of the SMs each used."""

from __future__ import annotations

from typing import Any, Callable

from ..model import GpuProcess
from .errors import FALL_BACK_ERRORS, NOT_FOUND, field_reason, code_of, raise_if_fatal
from .health import Query


class GpuProcesses:
    """Reads each GPU's processes; remembers per GPU the newest utilisation sample seen, so each read takes only
    the samples since the last (NVML's own cursor)."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call  # the probe's timed, abandonable NVML call
        self._last_seen_us: dict[str, int] = {}  # newest process-utilisation timestamp per GPU uuid

    def forget(self) -> None:
        """A new NVML session: its timestamps start afresh."""
        self._last_seen_us.clear()

    def read(self, pynvml: Any, handle: Any, uuid: str, query: Query,
             unavailable: dict[str, str]) -> tuple[GpuProcess, ...]:
        found: dict[int, tuple[str, int | None]] = {}  # pid -> (type, memory); a C+G process counts once
        # MPS clients first: NVML lists them by their own call (nvidia-smi's "M+C"); the MPS server itself is
        # an ordinary compute process. No MPS call (older driver) or none supported: simply no MPS clients.
        for info in self._mps_clients(pynvml, handle):
            found.setdefault(int(info.pid), ("mps", _memory(pynvml, info.usedGpuMemory)))
        for kind, v3, v2 in (
            ("compute", pynvml.nvmlDeviceGetComputeRunningProcesses_v3, pynvml.nvmlDeviceGetComputeRunningProcesses_v2),
            ("graphics", pynvml.nvmlDeviceGetGraphicsRunningProcesses_v3, pynvml.nvmlDeviceGetGraphicsRunningProcesses_v2),
        ):
            infos = query("processes", (v3, (handle,)), (v2, (handle,)))
            for info in infos or ():
                found.setdefault(int(info.pid), (kind, _memory(pynvml, info.usedGpuMemory)))

        sm = self._sm_percent(pynvml, handle, uuid, unavailable) if found else {}
        return tuple(
            GpuProcess(
                host_pid=pid,
                type=kind,
                gpu_memory_bytes=int(memory) if memory is not None else None,
                sm_percent=None if sm is None else float(sm.get(pid, 0.0)),
                name=process_name(pid),
            )
            for pid, (kind, memory) in found.items()
        )

    def _mps_clients(self, pynvml: Any, handle: Any) -> list[Any]:
        for name in ("nvmlDeviceGetMPSComputeRunningProcesses_v3", "nvmlDeviceGetMPSComputeRunningProcesses_v2"):
            function = getattr(pynvml, name, None)
            if function is None:
                continue
            try:
                return list(self._call(function, handle) or ())
            except pynvml.NVMLError as err:
                raise_if_fatal(err)
                if code_of(err) not in FALL_BACK_ERRORS:
                    return []
        return []

    def _sm_percent(self, pynvml: Any, handle: Any, uuid: str, unavailable: dict[str, str]) -> dict[int, float] | None:
        """SM % per pid from the samples newer than the last ones seen; None when NVML cannot say."""
        last_seen = self._last_seen_us.get(uuid, 0)
        try:
            samples = self._call(pynvml.nvmlDeviceGetProcessUtilization, handle, last_seen)
        except pynvml.NVMLError as err:
            if code_of(err) == NOT_FOUND:
                return {}  # no sample newer than the last: every process was idle since
            raise_if_fatal(err)
            unavailable["sm_percent"] = field_reason(err, "nvmlDeviceGetProcessUtilization")
            return None
        newest: dict[int, tuple[int, float]] = {}
        for s in samples:
            pid, stamp = int(s.pid), int(s.timeStamp)
            if pid not in newest or stamp >= newest[pid][0]:
                newest[pid] = (stamp, float(s.smUtil))
            last_seen = max(last_seen, stamp)
        self._last_seen_us[uuid] = last_seen
        return {pid: value for pid, (_, value) in newest.items()}


def _memory(pynvml: Any, value: int | None) -> int | None:
    if value is not None and value == pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value:
        return None
    return value


def process_name(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None
