"""Sense the GPUs through NVML (the real pynvml bindings), on a worker thread a hung driver cannot stall.

probe      NvmlProbe: the session, init with backoff, one sample per sweep under a deadline
worker     the thread that makes every NVML call
errors     NVML's return codes, the probe's states, failures in words
library    which libnvidia-ml.so.1 to load (flag, environment, system, WSL)
health     a GPU's health fields, throttle reasons, the sample of an unreadable GPU
processes  the processes on a GPU and their SM share
xid        Xid events from NVML and the kernel log
gpm        GPU Performance Metrics (SM, tensor, DRAM, PCIe, NVLink activity) per GPU and MIG instance
"""

from .errors import NvmlState
from .health import COMPUTE_MODES, THROTTLE_REASON_NAMES, throttle_reason_names
from .library import DEFAULT_LIBRARY, ENV_LIBRARY, WSL_LIBRARY, resolve_library_path
from .probe import NvmlProbe, format_cuda_version
from .xid import XID_DEDUP_S, XID_EVENT_TYPE, XID_KEEP

__all__ = [
    "COMPUTE_MODES", "DEFAULT_LIBRARY", "ENV_LIBRARY", "THROTTLE_REASON_NAMES", "WSL_LIBRARY", "XID_DEDUP_S",
    "XID_EVENT_TYPE", "XID_KEEP", "NvmlProbe", "NvmlState", "format_cuda_version", "resolve_library_path",
    "throttle_reason_names",
]
