"""NVML's return codes, the probe's states, and each failure in words that say what to do."""

from __future__ import annotations

from ..model import NvmlStatus
from .library import library_not_found_message


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


# NVML return codes (nvml.h), so that mapping them needs no pynvml import.
UNINITIALIZED = 1
INVALID_ARGUMENT = 2
NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 6
DRIVER_NOT_LOADED = 9
TIMEOUT = 10
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
LIB_RM_VERSION_MISMATCH = 18
ARGUMENT_VERSION_MISMATCH = 25
UNKNOWN = 999

# Errors after which the NVML session is no good and init must run again.
SESSION_ERRORS = (UNINITIALIZED, DRIVER_NOT_LOADED, LIB_RM_VERSION_MISMATCH, LIBRARY_NOT_FOUND)
# Errors after which a field query tries its next (older) function.
FALL_BACK_ERRORS = (FUNCTION_NOT_FOUND, ARGUMENT_VERSION_MISMATCH, NOT_SUPPORTED)


class InitFailed(Exception):
    def __init__(self, status: NvmlStatus):
        super().__init__(status.error)
        self.status = status


class SessionBroken(Exception):
    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


class GpuLost(Exception):
    pass


class Abandoned(Exception):
    """The probe was closed while this sweep was stuck in the driver: stop making calls."""


def code_of(err: BaseException) -> int | None:
    return getattr(err, "value", None)


def raise_if_fatal(err: BaseException) -> None:
    """A lost GPU or a broken session ends the GPU's (or the sweep's) reads; any other error is the field's."""
    code = code_of(err)
    if code == GPU_IS_LOST:
        raise GpuLost() from None
    if code in SESSION_ERRORS:
        raise SessionBroken(code, str(err)) from None


def status_for_code(code: int | None, text: str, library: str | None, deadline_s: float) -> tuple[str, str]:
    if code == LIB_RM_VERSION_MISMATCH:
        return NvmlState.VERSION_MISMATCH, (
            "NVML: Driver/library version mismatch: the driver was upgraded without a reboot: reboot, "
            "or reload the nvidia kernel modules (sudo rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia "
            "&& sudo modprobe nvidia)"
        )
    if code == DRIVER_NOT_LOADED:
        return NvmlState.DRIVER_NOT_LOADED, (
            "NVML cannot talk to the NVIDIA kernel driver (driver not loaded): load it with "
            "`sudo modprobe nvidia`; if that fails, rebuild it for the running kernel "
            "(`sudo dkms autoinstall`) or reinstall the NVIDIA driver"
        )
    if code == LIBRARY_NOT_FOUND:
        return NvmlState.LIBRARY_NOT_FOUND, library_not_found_message(library)
    if code == NO_PERMISSION:
        return NvmlState.NO_PERMISSION, (
            "NVML was refused access to the GPU device files (/dev/nvidiactl, /dev/nvidia*): run as a user "
            "allowed to open them (often the video group) or as root; in a container, start it with --gpus"
        )
    if code == GPU_IS_LOST:
        return NvmlState.GPU_LOST, (
            "NVML reports a GPU has fallen off the bus (GPU is lost): check `dmesg` for Xid 79; the GPU "
            "needs a reset (`nvidia-smi -r`) or the host a reboot"
        )
    if code == TIMEOUT:
        return NvmlState.TIMEOUT, timeout_message(deadline_s)
    if code == UNKNOWN:
        return NvmlState.ERROR, (
            "Failed to initialize NVML: Unknown Error. Inside a container that could see its GPUs before, "
            "this usually means the host ran `systemctl daemon-reload` and the container lost its device "
            "access: recreate the container; on the host run "
            "`sudo nvidia-ctk system create-dev-char-symlinks --create-all`, or use CDI"
        )
    return NvmlState.ERROR, f"NVML failed: {text}"


def timeout_message(deadline_s: float) -> str:
    return (
        f"NVML did not answer within {deadline_s:g} s: the driver may be hung "
        "(nvidia-smi stuck in D state); check `dmesg` for Xid errors"
    )


def field_reason(err: BaseException, function: str) -> str:
    code = code_of(err)
    if code == NOT_SUPPORTED:
        return "not supported by this GPU or driver"
    if code == FUNCTION_NOT_FOUND:
        return f"not in this driver's NVML ({function} not found): the driver is older than this feature"
    if code == NO_PERMISSION:
        return "no permission"
    return f"NVML error: {err}"
