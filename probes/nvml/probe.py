"""The NVML probe: GPUs, their health, processes and Xids through the real pynvml bindings, with every call made
on a worker thread that a hung driver cannot stall the sampler behind."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from ..model import GpuSample, NvmlStatus
from .errors import (
    FALL_BACK_ERRORS,
    SESSION_ERRORS,
    Abandoned,
    GpuLost,
    InitFailed,
    NvmlState,
    SessionBroken,
    code_of,
    field_reason,
    raise_if_fatal,
    status_for_code,
    timeout_message,
)
from .gpm import GpmSampler
from .health import read_health, text, throttle_reason_names, unreachable_gpu
from .library import LibraryNotLoaded, forget_library, load_library
from .nvlink import NvLinkReader
from .processes import GpuProcesses
from .worker import NvmlWorker
from .xid import XidEvents

log = logging.getLogger(__name__)


def format_cuda_version(value: int) -> str:
    """12040 -> "12.4"."""
    return f"{value // 1000}.{(value % 1000) // 10}"


class NvmlProbe:
    """GPUs and their processes from NVML, or a status that says in words why not. sample() never raises.

    pynvml keeps one library per process, so use one NvmlProbe at a time.
    """

    # Init retry backoff after a failure: retry_min_s, doubling up to retry_max_s.
    retry_min_s = 1.0
    retry_max_s = 10.0

    def __init__(self, library_path: str | None = None, deadline_s: float = 2.0, kmsg_path: str | None = None):
        """`kmsg_path`: the kernel log to read earlier Xids from (None: /dev/kmsg as root, or $MLTOP_KMSG;
        "": none)."""
        self.library_path = library_path
        self.deadline_s = deadline_s
        self._worker: NvmlWorker | None = None
        self._pending: Future | None = None  # the sweep still running after its deadline passed
        self._closed = False
        # State below is touched only on the worker thread.
        self._initialized = False
        self._library_in_use: str | None = None
        self._driver_version: str | None = None
        self._cuda_version: str | None = None
        self._init_failure: NvmlStatus | None = None
        self._init_failures = 0
        self._retry_at = 0.0
        self._identity: dict[int, tuple[str, str]] = {}  # index -> (uuid, name), for GPUs later lost
        self._processes = GpuProcesses(self._call)
        self._xids = XidEvents(self._call, kmsg_path)
        self._calling: tuple[str, float] | None = None  # (function, perf_counter at start) of the call made now
        self._sweep_slowest: tuple[str, float] | None = None
        self.last_slowest_call: tuple[str, float] | None = None  # of the latest completed sweep
        self._gpm = GpmSampler(self._call)  # GPU Performance Metrics, one sample per GPU per sweep
        self._nvlink = NvLinkReader(self._call)  # NVLink states and error counters, fabric registration

    # ----------------------------------------------------------------- public

    def sample(self) -> tuple[NvmlStatus, tuple[GpuSample, ...]]:
        try:
            return self._sample()
        except Exception as err:  # never raise into the sampler
            log.warning("NVML probe failed", exc_info=True)
            return self._status(NvmlState.ERROR, f"NVML probe failed: {err!r}"), ()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._xids.close()
        worker, self._worker = self._worker, None
        if worker is None:
            return
        stuck = self._pending is not None and not self._pending.done()
        if not stuck:
            done = worker.submit(self._shutdown)
            try:
                done.result(timeout=self.deadline_s)
            except Exception:
                log.debug("NVML shutdown did not finish cleanly", exc_info=True)
        # When stuck, the sweep sees _closed after the driver call returns and stops (Abandoned); the
        # NVML session is left as it is rather than shut down behind a newer probe's back.
        worker.stop()

    @property
    def slowest_call(self) -> tuple[str, float] | None:
        """(NVML function, seconds) of the slowest call of the latest sample(); a call still stuck in the
        driver counts with the time it has taken so far."""
        calling = self._calling
        if self._pending is not None and calling is not None:
            return calling[0], time.perf_counter() - calling[1]
        return self.last_slowest_call

    # ----------------------------------------------------------------- sampling

    def _sample(self) -> tuple[NvmlStatus, tuple[GpuSample, ...]]:
        if self._closed:
            return self._status(NvmlState.DISABLED, "NVML probe is closed"), ()
        if self._pending is not None:
            if not self._pending.done():
                # Do not queue behind a call stuck in the driver; say so at once.
                return self._status(NvmlState.TIMEOUT, timeout_message(self.deadline_s)), ()
            self._pending = None  # finished late: its data is stale, sweep afresh
        if self._worker is None:
            self._worker = NvmlWorker()
        future = self._worker.submit(self._timed_sweep)
        try:
            return future.result(timeout=self.deadline_s)
        except FutureTimeout:
            self._pending = future
            return self._status(NvmlState.TIMEOUT, timeout_message(self.deadline_s)), ()

    def _status(self, state: str, error: str | None) -> NvmlStatus:
        return NvmlStatus(
            status=state,
            error=error,
            driver_version=self._driver_version,
            cuda_driver_version=self._cuda_version,
            library_path=self._library_in_use or self.library_path,
            sxid_events=self._xids.sxids,
        )

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Every NVML call goes through here, on the worker thread (timed: the slowest shows in the header)."""
        if self._closed:
            raise Abandoned()
        self._calling = (getattr(fn, "__name__", "?"), time.perf_counter())
        try:
            return fn(*args)
        finally:
            took = time.perf_counter() - self._calling[1]
            if self._sweep_slowest is None or took > self._sweep_slowest[1]:
                self._sweep_slowest = (self._calling[0], took)
            self._calling = None

    def _timed_sweep(self) -> tuple[NvmlStatus, tuple[GpuSample, ...]]:
        self._sweep_slowest = None
        try:
            return self._sweep()
        finally:
            self.last_slowest_call = self._sweep_slowest

    def _sweep(self) -> tuple[NvmlStatus, tuple[GpuSample, ...]]:
        import pynvml

        if not self._initialized:
            now = time.monotonic()
            if self._init_failure is not None and now < self._retry_at:
                return self._init_failure, ()
            try:
                self._init()
            except InitFailed as failed:
                self._init_failures += 1
                delay = min(self.retry_max_s, self.retry_min_s * 2 ** (self._init_failures - 1))
                self._retry_at = time.monotonic() + delay
                self._init_failure = failed.status
                return failed.status, ()
            self._init_failure = None
            self._init_failures = 0

        try:
            count = self._call(pynvml.nvmlDeviceGetCount)
            gpus: list[GpuSample] = []
            lost: list[str] = []
            for index in range(count):
                sample, lost_reason = self._sample_gpu(pynvml, index)
                gpus.append(sample)
                if lost_reason:
                    lost.append(lost_reason)
        except pynvml.NVMLError as err:
            return self._session_broken(code_of(err), str(err)), ()
        except SessionBroken as err:
            return self._session_broken(err.code, err.text), ()

        self._gpm.end_sweep(pynvml)
        gpus = self._xids.attach(pynvml, gpus)
        if lost:
            error = "; ".join(lost) + ": check `dmesg` for Xid 79, then reset the GPU or reboot the host"
            return self._status(NvmlState.GPU_LOST, error), tuple(gpus)
        return self._status(NvmlState.OK, None), tuple(gpus)

    def _session_broken(self, code: int | None, text: str) -> NvmlStatus:
        state, message = status_for_code(code, text, self.library_path, self.deadline_s)
        if code in SESSION_ERRORS:
            self._shutdown()  # init again at the next sample
        return self._status(state, message)

    # ----------------------------------------------------------------- init and shutdown

    def _init(self) -> None:
        import pynvml

        try:
            self._library_in_use = load_library(pynvml, self.library_path)
        except LibraryNotLoaded as err:
            raise InitFailed(self._status(NvmlState.LIBRARY_NOT_FOUND, str(err))) from None
        try:
            self._call(pynvml.nvmlInit)
        except pynvml.NVMLError as err:
            state, message = status_for_code(code_of(err), str(err), self.library_path, self.deadline_s)
            raise InitFailed(self._status(state, message)) from None
        self._initialized = True
        self._processes.forget()
        self._nvlink.forget()
        try:
            self._driver_version = self._call(pynvml.nvmlSystemGetDriverVersion)
        except pynvml.NVMLError:
            self._driver_version = None
        self._cuda_version = None
        for getter in (pynvml.nvmlSystemGetCudaDriverVersion_v2, pynvml.nvmlSystemGetCudaDriverVersion):
            try:
                self._cuda_version = format_cuda_version(self._call(getter))
                break
            except pynvml.NVMLError:
                continue
        self._xids.register(pynvml)

    def _shutdown(self) -> None:
        """End the NVML session and forget the library, so another probe or a fixed driver starts clean."""
        import pynvml

        if self._initialized:
            self._initialized = False
            self._gpm.close(pynvml)
            self._xids.free(pynvml)
            try:
                pynvml.nvmlShutdown()
            except Exception:
                log.debug("nvmlShutdown failed", exc_info=True)
        forget_library(pynvml, self._library_in_use)

    # ----------------------------------------------------------------- one GPU

    def _sample_gpu(self, pynvml: Any, index: int) -> tuple[GpuSample, str | None]:
        unavailable: dict[str, str] = {}

        def query(field: str, *functions: tuple[Callable[..., Any], tuple]) -> Any:
            """Try each (function, args) in turn, falling back while the function is missing; None on failure."""
            err: BaseException | None = None
            name = ""
            for fn, args in functions:
                name = getattr(fn, "__name__", str(fn))
                try:
                    return self._call(fn, *args)
                except pynvml.NVMLError as e:
                    raise_if_fatal(e)
                    err = e
                    if code_of(e) not in FALL_BACK_ERRORS:
                        break
            assert err is not None
            unavailable[field] = field_reason(err, name)
            return None

        uuid, name = self._identity.get(index, ("", ""))
        try:
            handle = query("handle", (pynvml.nvmlDeviceGetHandleByIndex, (index,)))
            if handle is None:
                return unreachable_gpu(index, uuid, name, unavailable.pop("handle")), None
            uuid = query("uuid", (pynvml.nvmlDeviceGetUUID, (handle,))) or uuid
            name = query("name", (pynvml.nvmlDeviceGetName, (handle,))) or name
            self._identity[index] = (uuid, name)

            util = query("utilization_percent", (pynvml.nvmlDeviceGetUtilizationRates, (handle,)))
            if util is None:
                unavailable["memory_utilization_percent"] = unavailable["utilization_percent"]
            memory = query(
                "memory_used_bytes",
                (pynvml.nvmlDeviceGetMemoryInfo, (handle, pynvml.nvmlMemory_v2)),
                (pynvml.nvmlDeviceGetMemoryInfo, (handle,)),
            )
            if memory is None:
                unavailable["memory_total_bytes"] = unavailable["memory_used_bytes"]
            temperature = query(
                "temperature_c", (pynvml.nvmlDeviceGetTemperature, (handle, pynvml.NVML_TEMPERATURE_GPU))
            )
            power_mw = query("power_w", (pynvml.nvmlDeviceGetPowerUsage, (handle,)))
            limit_mw = query(
                "power_limit_w",
                (pynvml.nvmlDeviceGetEnforcedPowerLimit, (handle,)),
                (pynvml.nvmlDeviceGetPowerManagementLimit, (handle,)),
            )
            reasons = query(
                "throttle_reasons",
                (pynvml.nvmlDeviceGetCurrentClocksEventReasons, (handle,)),
                (pynvml.nvmlDeviceGetCurrentClocksThrottleReasons, (handle,)),
            )
            persistence = query("persistence_mode", (pynvml.nvmlDeviceGetPersistenceMode, (handle,)))
            pci = query("pci_bus_id", (pynvml.nvmlDeviceGetPciInfo_v3, (handle,)))
            processes = self._processes.read(pynvml, handle, uuid, query, unavailable)
            health = read_health(pynvml, handle, query)
            health.update(self._gpm.read(pynvml, handle, uuid, health.get("mig_devices", ()), unavailable))
            health.update(self._nvlink.read(pynvml, handle, uuid, unavailable))
        except GpuLost:
            reason = (
                f"GPU {index}" + (f" ({uuid})" if uuid else "")
                + f" is lost (fallen off the bus; reset: `nvidia-smi -r -i {index}`)"
            )
            return unreachable_gpu(index, uuid, name, "GPU is lost (fallen off the bus)"), reason

        sample = GpuSample(
            index=index,
            uuid=uuid,
            name=name,
            utilization_percent=float(util.gpu) if util is not None else None,
            memory_utilization_percent=float(util.memory) if util is not None else None,
            memory_used_bytes=int(memory.used) if memory is not None else None,
            memory_total_bytes=int(memory.total) if memory is not None else None,
            temperature_c=float(temperature) if temperature is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            throttle_reasons=throttle_reason_names(reasons) if reasons is not None else (),
            persistence_mode=bool(persistence == pynvml.NVML_FEATURE_ENABLED) if persistence is not None else None,
            processes=processes,
            pci_bus_id=text(pci.busId) if pci is not None else None,
            unavailable=dict(unavailable),
            **health,
        )
        return sample, None
