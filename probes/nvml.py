"""Sense the GPUs through NVML (the real pynvml bindings), on a worker thread a hung driver cannot stall."""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable

from .gpm import GpmSampler
from .kmsg import KmsgReader, normalise_pci
from .model import GpuProcess, GpuSample, MigDevice, NvmlStatus, XidEvent

log = logging.getLogger(__name__)

ENV_LIBRARY = "MLTOP_NVML_LIB"
DEFAULT_LIBRARY = "libnvidia-ml.so.1"
WSL_LIBRARY = "/usr/lib/wsl/lib/libnvidia-ml.so.1"


class NvmlState:
    """The values of NvmlStatus.status."""

    OK = "ok"
    LIBRARY_NOT_FOUND = "library_not_found"
    DRIVER_NOT_LOADED = "driver_not_loaded"
    VERSION_MISMATCH = "version_mismatch"
    NO_PERMISSION = "no_permission"
    GPU_LOST = "gpu_lost"
    TIMEOUT = "timeout"
    ERROR = "error"
    DISABLED = "disabled"


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

# NVML return codes (nvml.h), so that mapping them needs no pynvml import.
_NOT_SUPPORTED = 3
_NO_PERMISSION = 4
_NOT_FOUND = 6
_DRIVER_NOT_LOADED = 9
_TIMEOUT = 10
_LIBRARY_NOT_FOUND = 12
_FUNCTION_NOT_FOUND = 13
_GPU_IS_LOST = 15
_LIB_RM_VERSION_MISMATCH = 18
_ARGUMENT_VERSION_MISMATCH = 25
_UNINITIALIZED = 1
_UNKNOWN = 999

# Errors after which the NVML session is no good and init must run again.
_SESSION_ERRORS = (_UNINITIALIZED, _DRIVER_NOT_LOADED, _LIB_RM_VERSION_MISMATCH, _LIBRARY_NOT_FOUND)

_GPU_FIELDS = (
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

COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}
XID_EVENT_TYPE = 0x8  # nvmlEventTypeXidCriticalError
XID_KEEP = 256  # Xid events kept per probe (oldest dropped)
XID_DEDUP_S = 5.0  # a kernel-log Xid this close to an NVML event of the same code and GPU is the same one

# Which library pynvml's global `nvmlLib` was loaded from by us; guarded by pynvml.libLoadLock.
_loaded_library: str | None = None


def resolve_library_path(cli_value: str | None) -> str | None:
    """--nvml-lib PATH, else $MLTOP_NVML_LIB, else None (the system's libnvidia-ml.so.1)."""
    if cli_value:
        return cli_value
    return os.environ.get(ENV_LIBRARY) or None


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


def format_cuda_version(value: int) -> str:
    """12040 -> "12.4"."""
    return f"{value // 1000}.{(value % 1000) // 10}"


# --------------------------------------------------------------------------- errors in words


class _InitFailed(Exception):
    def __init__(self, status: NvmlStatus):
        super().__init__(status.error)
        self.status = status


class _SessionBroken(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


class _GpuLost(Exception):
    pass


class _Abandoned(Exception):
    """The probe was closed while this sweep was stuck in the driver: stop making calls."""


def _code(err: BaseException) -> int | None:
    return getattr(err, "value", None)


def _status_for_code(code: int | None, text: str, library: str | None, deadline_s: float) -> tuple[str, str]:
    if code == _LIB_RM_VERSION_MISMATCH:
        return NvmlState.VERSION_MISMATCH, (
            "NVML: Driver/library version mismatch: the driver was upgraded without a reboot: reboot, "
            "or reload the nvidia kernel modules (sudo rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia "
            "&& sudo modprobe nvidia)"
        )
    if code == _DRIVER_NOT_LOADED:
        return NvmlState.DRIVER_NOT_LOADED, (
            "NVML cannot talk to the NVIDIA kernel driver (driver not loaded): load it with "
            "`sudo modprobe nvidia`; if that fails, rebuild it for the running kernel "
            "(`sudo dkms autoinstall`) or reinstall the NVIDIA driver"
        )
    if code == _LIBRARY_NOT_FOUND:
        return NvmlState.LIBRARY_NOT_FOUND, _library_not_found_message(library)
    if code == _NO_PERMISSION:
        return NvmlState.NO_PERMISSION, (
            "NVML was refused access to the GPU device files (/dev/nvidiactl, /dev/nvidia*): run as a user "
            "allowed to open them (often the video group) or as root; in a container, start it with --gpus"
        )
    if code == _GPU_IS_LOST:
        return NvmlState.GPU_LOST, (
            "NVML reports a GPU has fallen off the bus (GPU is lost): check `dmesg` for Xid 79; the GPU "
            "needs a reset (`nvidia-smi -r`) or the host a reboot"
        )
    if code == _TIMEOUT:
        return NvmlState.TIMEOUT, _timeout_message(deadline_s)
    if code == _UNKNOWN:
        return NvmlState.ERROR, (
            "Failed to initialize NVML: Unknown Error. Inside a container that could see its GPUs before, "
            "this usually means the host ran `systemctl daemon-reload` and the container lost its device "
            "access: recreate the container; on the host run "
            "`sudo nvidia-ctk system create-dev-char-symlinks --create-all`, or use CDI"
        )
    return NvmlState.ERROR, f"NVML failed: {text}"


def _library_not_found_message(library: str | None) -> str:
    if library:
        return (
            f"NVML library {library} could not be loaded: point --nvml-lib (or ${ENV_LIBRARY}) at the "
            f"driver's libnvidia-ml.so.1"
        )
    return (
        "libnvidia-ml.so.1 was not found: install the NVIDIA driver (in a container, start it with --gpus "
        f"or the NVIDIA container runtime), or point --nvml-lib / ${ENV_LIBRARY} at the library; on WSL it "
        f"is {WSL_LIBRARY}"
    )


def _timeout_message(deadline_s: float) -> str:
    return (
        f"NVML did not answer within {deadline_s:g} s: the driver may be hung "
        "(nvidia-smi stuck in D state); check `dmesg` for Xid errors"
    )


def _field_reason(err: BaseException, function: str) -> str:
    code = _code(err)
    if code == _NOT_SUPPORTED:
        return "not supported by this GPU or driver"
    if code == _FUNCTION_NOT_FOUND:
        return f"not in this driver's NVML ({function} not found): the driver is older than this feature"
    if code == _NO_PERMISSION:
        return "no permission"
    return f"NVML error: {err}"


# --------------------------------------------------------------------------- the worker thread


class _NvmlWorker:
    """One daemon thread that makes every NVML call, so a call stuck in the driver blocks it, not the caller."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="mltop-nvml", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future:
        future: Future = Future()
        self._jobs.put((fn, future))
        return future

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as err:  # handed to the caller through the future
                future.set_exception(err)


# --------------------------------------------------------------------------- the probe


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
        self._kmsg = KmsgReader(kmsg_path)
        self._worker: _NvmlWorker | None = None
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
        self._last_seen_us: dict[str, int] = {}  # newest process-utilisation timestamp per GPU uuid
        self._identity: dict[int, tuple[str, str]] = {}  # index -> (uuid, name), for GPUs later lost
        self._event_set: Any = None  # NVML event set registered for Xid events; None when unsupported
        self._xids: list[tuple[str | None, str | None, XidEvent]] = []  # (uuid, pci, event), oldest first
        self._calling: tuple[str, float] | None = None  # (function, perf_counter at start) of the call made now
        self._sweep_slowest: tuple[str, float] | None = None
        self.last_slowest_call: tuple[str, float] | None = None  # of the latest completed sweep
        self._gpm = GpmSampler(self._call, fatal=(_GPU_IS_LOST, *_SESSION_ERRORS))

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
        self._kmsg.close()
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
        # When stuck, the sweep sees _closed after the driver call returns and stops (_Abandoned); the
        # NVML session is left as it is rather than shut down behind a newer probe's back.
        worker.stop()

    # ----------------------------------------------------------------- sampling

    def _sample(self) -> tuple[NvmlStatus, tuple[GpuSample, ...]]:
        if self._closed:
            return self._status(NvmlState.DISABLED, "NVML probe is closed"), ()
        if self._pending is not None:
            if not self._pending.done():
                # Do not queue behind a call stuck in the driver; say so at once.
                return self._status(NvmlState.TIMEOUT, _timeout_message(self.deadline_s)), ()
            self._pending = None  # finished late: its data is stale, sweep afresh
        if self._worker is None:
            self._worker = _NvmlWorker()
        future = self._worker.submit(self._timed_sweep)
        try:
            return future.result(timeout=self.deadline_s)
        except FutureTimeout:
            self._pending = future
            return self._status(NvmlState.TIMEOUT, _timeout_message(self.deadline_s)), ()

    def _status(self, state: str, error: str | None) -> NvmlStatus:
        return NvmlStatus(
            status=state,
            error=error,
            driver_version=self._driver_version,
            cuda_driver_version=self._cuda_version,
            library_path=self._library_in_use or self.library_path,
        )

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Every NVML call goes through here, on the worker thread (timed: the slowest shows in the header)."""
        if self._closed:
            raise _Abandoned()
        self._calling = (getattr(fn, "__name__", "?"), time.perf_counter())
        try:
            return fn(*args)
        finally:
            took = time.perf_counter() - self._calling[1]
            if self._sweep_slowest is None or took > self._sweep_slowest[1]:
                self._sweep_slowest = (self._calling[0], took)
            self._calling = None

    @property
    def slowest_call(self) -> tuple[str, float] | None:
        """(NVML function, seconds) of the slowest call of the latest sample(); a call still stuck in the
        driver counts with the time it has taken so far."""
        calling = self._calling
        if self._pending is not None and calling is not None:
            return calling[0], time.perf_counter() - calling[1]
        return self.last_slowest_call

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
            except _InitFailed as failed:
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
            return self._session_broken(_code(err), str(err)), ()
        except _SessionBroken as err:
            return self._session_broken(err.code, err.text), ()

        self._gpm.end_sweep(pynvml)
        gpus = self._with_xids(pynvml, gpus)
        if lost:
            error = "; ".join(lost) + ": check `dmesg` for Xid 79, then reset the GPU or reboot the host"
            return self._status(NvmlState.GPU_LOST, error), tuple(gpus)
        return self._status(NvmlState.OK, None), tuple(gpus)

    # ----------------------------------------------------------------- Xid events

    def _register_xid_events(self, pynvml: Any) -> None:
        """Ask NVML for Xid events on every GPU; without them, only the kernel log tells of Xids."""
        try:
            event_set = self._call(pynvml.nvmlEventSetCreate)
            for index in range(self._call(pynvml.nvmlDeviceGetCount)):
                handle = self._call(pynvml.nvmlDeviceGetHandleByIndex, index)
                try:
                    self._call(pynvml.nvmlDeviceRegisterEvents, handle, XID_EVENT_TYPE, event_set)
                except pynvml.NVMLError:
                    continue  # this GPU cannot report Xid events (e.g. not supported on it)
            self._event_set = event_set
        except pynvml.NVMLError:
            self._event_set = None

    def _drain_xid_events(self, pynvml: Any) -> None:
        if self._event_set is None:
            return
        for _ in range(64):  # bounded: a storm of events must not hold the sweep
            try:
                data = self._call(pynvml.nvmlEventSetWait_v2, self._event_set, 0)
            except pynvml.NVMLError:
                return  # TIMEOUT: nothing (more) queued
            if not (data.eventType & XID_EVENT_TYPE):
                continue
            try:
                uuid = _text(self._call(pynvml.nvmlDeviceGetUUID, data.device))
            except pynvml.NVMLError:
                uuid = None
            self._remember(uuid, None, XidEvent(int(data.eventData), time.time(), "NVML events"))

    def _remember(self, uuid: str | None, pci: str | None, event: XidEvent) -> None:
        self._xids.append((uuid, pci, event))
        del self._xids[:-XID_KEEP]

    def _with_xids(self, pynvml: Any, gpus: list[GpuSample]) -> list[GpuSample]:
        """The GPUs with the Xid events seen so far (NVML events and kernel log), matched by uuid or PCI id."""
        self._drain_xid_events(pynvml)
        for kx in self._kmsg.poll():
            duplicate = any(e.xid == kx.xid and abs(e.time - kx.time) < XID_DEDUP_S and e.source == "NVML events"
                            for _, _, e in self._xids)
            if not duplicate:
                self._remember(None, kx.pci, XidEvent(kx.xid, kx.time, "/dev/kmsg", kx.pci, kx.text))
        missing = self._kmsg.unavailable
        if not self._xids and not missing:
            return gpus
        out = []
        for g in gpus:
            pci = normalise_pci(g.pci_bus_id)
            mine = tuple(sorted((e for uuid, p, e in self._xids if (uuid and uuid == g.uuid) or (p and p == pci)),
                                key=lambda e: e.time))
            changes: dict[str, Any] = {"xid_events": mine} if mine else {}
            if missing:
                changes["unavailable"] = {**g.unavailable, "xid_events": missing}
            out.append(dataclasses.replace(g, **changes) if changes else g)
        return out

    def _session_broken(self, code: int | None, text: str) -> NvmlStatus:
        state, message = _status_for_code(code, text, self.library_path, self.deadline_s)
        if code in _SESSION_ERRORS:
            self._shutdown()  # init again at the next sample
        return self._status(state, message)

    # ----------------------------------------------------------------- init and shutdown

    def _init(self) -> None:
        import pynvml

        self._library_in_use = self._load_library(pynvml)
        try:
            self._call(pynvml.nvmlInit)
        except pynvml.NVMLError as err:
            state, message = _status_for_code(_code(err), str(err), self.library_path, self.deadline_s)
            raise _InitFailed(self._status(state, message)) from None
        self._initialized = True
        self._last_seen_us.clear()
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
        self._register_xid_events(pynvml)

    def _load_library(self, pynvml: Any) -> str:
        """Point pynvml at the library to use (pynvml itself only loads when its nvmlLib is None)."""
        global _loaded_library
        if self.library_path:
            candidates = [self.library_path]
            if not os.path.exists(self.library_path):
                raise _InitFailed(
                    self._status(
                        NvmlState.LIBRARY_NOT_FOUND,
                        f"NVML library {self.library_path} does not exist: point --nvml-lib (or "
                        f"${ENV_LIBRARY}) at the driver's libnvidia-ml.so.1, or drop it to use the system's",
                    )
                )
        else:
            candidates = [DEFAULT_LIBRARY] + ([WSL_LIBRARY] if os.path.exists(WSL_LIBRARY) else [])
        with pynvml.libLoadLock:
            if pynvml.nvmlLib is not None and _loaded_library in candidates:
                return _loaded_library
            errors = []
            for candidate in candidates:
                try:
                    library = ctypes.CDLL(candidate)
                except OSError as err:
                    errors.append(str(err))
                    continue
                pynvml.nvmlLib = library
                pynvml._nvmlGetFunctionPointer_cache.clear()
                _loaded_library = candidate
                return candidate
        message = _library_not_found_message(self.library_path)
        if self.library_path:
            message += f" ({'; '.join(errors)})"
        raise _InitFailed(self._status(NvmlState.LIBRARY_NOT_FOUND, message))

    def _shutdown(self) -> None:
        """End the NVML session and forget the library, so another probe or a fixed driver starts clean."""
        global _loaded_library
        import pynvml

        if self._initialized:
            self._initialized = False
            self._gpm.close(pynvml)
            if self._event_set is not None:
                try:
                    pynvml.nvmlEventSetFree(self._event_set)
                except Exception:
                    pass
                self._event_set = None
            try:
                pynvml.nvmlShutdown()
            except Exception:
                log.debug("nvmlShutdown failed", exc_info=True)
        with pynvml.libLoadLock:
            if _loaded_library is not None and _loaded_library == self._library_in_use:
                pynvml.nvmlLib = None
                pynvml._nvmlGetFunctionPointer_cache.clear()
                _loaded_library = None

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
                    code = _code(e)
                    if code == _GPU_IS_LOST:
                        raise _GpuLost() from None
                    if code in _SESSION_ERRORS:
                        raise _SessionBroken(code, str(e)) from None
                    err = e
                    if code not in (_FUNCTION_NOT_FOUND, _ARGUMENT_VERSION_MISMATCH, _NOT_SUPPORTED):
                        break
            assert err is not None
            unavailable[field] = _field_reason(err, name)
            return None

        uuid, name = self._identity.get(index, ("", ""))
        try:
            handle = query("handle", (pynvml.nvmlDeviceGetHandleByIndex, (index,)))
            if handle is None:
                return self._unreachable_gpu(index, uuid, name, unavailable.pop("handle")), None
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
            processes = self._processes(pynvml, handle, uuid, query, unavailable)
            health = self._health(pynvml, handle, query)
            health.update(self._sample_gpm(pynvml, handle, uuid, health.get("mig_devices", ()), unavailable))
        except _GpuLost:
            reason = (
                f"GPU {index}" + (f" ({uuid})" if uuid else "")
                + f" is lost (fallen off the bus; reset: `nvidia-smi -r -i {index}`)"
            )
            return self._unreachable_gpu(index, uuid, name, "GPU is lost (fallen off the bus)"), reason

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
            pci_bus_id=_text(pci.busId) if pci is not None else None,
            unavailable=dict(unavailable),
            **health,
        )
        return sample, None

    def _sample_gpm(self, pynvml: Any, handle: Any, uuid: str, migs: tuple[MigDevice, ...],
                    unavailable: dict[str, str]) -> dict[str, Any]:
        """GPU Performance Metrics of the GPU and of each MIG instance (probes/gpm.py); the reason when none."""
        try:
            gpm, reason, per_instance = self._gpm.sample(
                pynvml, handle, uuid, (m.gpu_instance_id for m in migs if m.gpu_instance_id is not None))
        except pynvml.NVMLError as err:
            if _code(err) == _GPU_IS_LOST:
                raise _GpuLost() from None
            raise _SessionBroken(_code(err), str(err)) from None
        if reason is not None:
            unavailable["gpm"] = reason
        out: dict[str, Any] = {"gpm": gpm}
        if per_instance:
            out["mig_devices"] = tuple(dataclasses.replace(m, gpm=per_instance.get(m.gpu_instance_id))
                                       for m in migs)
        return out

    @staticmethod
    def _health(pynvml: Any, handle: Any, query: Callable[..., Any]) -> dict[str, Any]:
        """Clocks, P-state, fan, ECC, retired pages, row remapping, PCIe, codecs, compute and MIG mode.

        Each read fails soft: None, with the reason in `unavailable` (via `query`).
        """
        out: dict[str, Any] = {}

        def get(field: str, fn: Callable[..., Any], *args: Any) -> Any:
            value = query(field, (fn, (handle, *args)))
            return value

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
            out["mig_devices"] = NvmlProbe._mig_devices(pynvml, handle, query)
        return out

    @staticmethod
    def _mig_devices(pynvml: Any, handle: Any, query: Callable[..., Any]) -> tuple[MigDevice, ...]:
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
            for fn in (pynvml.nvmlDeviceGetComputeRunningProcesses, pynvml.nvmlDeviceGetGraphicsRunningProcesses):
                pids += [int(p.pid) for p in soft(fn) or () if int(p.pid) not in pids]
            out.append(MigDevice(
                index=slot, uuid=_text(soft(pynvml.nvmlDeviceGetUUID) or ""),
                gpu_instance_id=soft(pynvml.nvmlDeviceGetGpuInstanceId),
                compute_instance_id=soft(pynvml.nvmlDeviceGetComputeInstanceId),
                memory_used_bytes=int(memory.used) if memory is not None else None,
                memory_total_bytes=int(memory.total) if memory is not None else None,
                host_pids=tuple(pids),
                profile=_mig_profile(soft(pynvml.nvmlDeviceGetName)),
            ))
        return tuple(out)

    @staticmethod
    def _unreachable_gpu(index: int, uuid: str, name: str, reason: str) -> GpuSample:
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
            unavailable={field: reason for field in _GPU_FIELDS},
        )

    def _processes(
        self, pynvml: Any, handle: Any, uuid: str, query: Callable[..., Any], unavailable: dict[str, str]
    ) -> tuple[GpuProcess, ...]:
        found: dict[int, tuple[str, int | None]] = {}  # pid -> (type, memory); a C+G process counts once
        for kind, v3, v2 in (
            ("compute", pynvml.nvmlDeviceGetComputeRunningProcesses_v3, pynvml.nvmlDeviceGetComputeRunningProcesses_v2),
            ("graphics", pynvml.nvmlDeviceGetGraphicsRunningProcesses_v3, pynvml.nvmlDeviceGetGraphicsRunningProcesses_v2),
        ):
            infos = query("processes", (v3, (handle,)), (v2, (handle,)))
            for info in infos or ():
                memory = info.usedGpuMemory
                if memory is not None and memory == pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value:
                    memory = None
                found.setdefault(int(info.pid), (kind, memory))

        sm = self._sm_percent(pynvml, handle, uuid, query, unavailable) if found else {}
        return tuple(
            GpuProcess(
                host_pid=pid,
                type=kind,
                gpu_memory_bytes=int(memory) if memory is not None else None,
                sm_percent=None if sm is None else float(sm.get(pid, 0.0)),
                name=_process_name(pid),
            )
            for pid, (kind, memory) in found.items()
        )

    def _sm_percent(
        self, pynvml: Any, handle: Any, uuid: str, query: Callable[..., Any], unavailable: dict[str, str]
    ) -> dict[int, float] | None:
        """SM % per pid from the samples newer than the last ones seen; None when NVML cannot say."""
        last_seen = self._last_seen_us.get(uuid, 0)
        try:
            samples = self._call(pynvml.nvmlDeviceGetProcessUtilization, handle, last_seen)
        except pynvml.NVMLError as err:
            code = _code(err)
            if code == _NOT_FOUND:
                return {}  # no sample newer than the last: every process was idle since
            if code == _GPU_IS_LOST:
                raise _GpuLost() from None
            if code in _SESSION_ERRORS:
                raise _SessionBroken(code, str(err)) from None
            unavailable["sm_percent"] = _field_reason(err, "nvmlDeviceGetProcessUtilization")
            return None
        newest: dict[int, tuple[int, float]] = {}
        for s in samples:
            pid, stamp = int(s.pid), int(s.timeStamp)
            if pid not in newest or stamp >= newest[pid][0]:
                newest[pid] = (stamp, float(s.smUtil))
            last_seen = max(last_seen, stamp)
        self._last_seen_us[uuid] = last_seen
        return {pid: value for pid, (_, value) in newest.items()}


def _mig_profile(name: Any) -> str | None:
    """"NVIDIA H100 80GB HBM3 MIG 1g.10gb" -> "1g.10gb" (the GPU instance profile, as DCGM names it)."""
    if not name:
        return None
    _, sep, profile = _text(name).rpartition(" MIG ")
    return profile.strip() or None if sep else None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _process_name(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None
