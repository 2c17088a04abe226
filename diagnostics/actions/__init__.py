"""One-key actions against a container (nvidia-smi, py-spy, device check): stream, cancel, time out, keep.

An `ActionRun` (run.py) runs one action to its end in the calling thread (a TUI thread worker, or the CLI),
hands each output line to `on_line` as it arrives, and returns a frozen `ActionResult` (results.py);
`cancel()` may be called from any thread. Every line is redacted before anyone sees it. Results go to an
`ActionLog`, the session history a report reads. The actions themselves are listed once, in registry.py,
each saying what it does to the container; `refusal(action, source)` is asked before any of them runs. Acts on
a container (a signal to a process, a stop or restart) are in acts.py, held to the same rules.

Commands are argv lists, never shell strings, and all of them go through runner.py: `docker exec` for what
runs inside the container, a host subprocess for py-spy (which attaches to the container's processes by
their host PID).
"""

from __future__ import annotations

from mltop.probes.redaction import REDACTED

from .device_check import DEVICE_CHECK_LABEL, device_check_source, summarize_device_check
from .nvidia_smi import container_gpus, explain_missing_nvidia_smi, explain_nvidia_smi_failure, host_gpu_view
from .py_spy import PtraceFacts, explain_py_spy_failure, find_py_spy, ptrace_facts, python_processes
from .context import ActionContext
from .registry import (ACTION_NAMES, ACTIONS, BACKGROUND_DEVICE_CHECK, CONTAINER_WORK, DEVICE_CHECK, NO_EXEC_ENV,
                       NVIDIA_SMI, PY_SPY, READ_ONLY_ENV, READ_TEST, RESTART_CONTAINER, SIGNAL_PROCESS, STOP_CONTAINER,
                       Action, ContainerWork, Standing, action_named, no_exec_reason, read_only_reason, refusal)
from .results import CANCELLED, FAILED, OK, TIMEOUT, UNAVAILABLE, ActionLog, ActionResult
from .run import ActionRun
from .runner import StepOutcome

__all__ = [
    "ACTIONS", "ACTION_NAMES", "Action", "ActionContext", "ActionLog", "ActionResult", "ActionRun",
    "BACKGROUND_DEVICE_CHECK", "CANCELLED", "CONTAINER_WORK", "ContainerWork", "DEVICE_CHECK",
    "DEVICE_CHECK_LABEL", "FAILED", "NO_EXEC_ENV", "NVIDIA_SMI", "OK", "PY_SPY", "PtraceFacts", "READ_ONLY_ENV", "READ_TEST", "REDACTED",
    "RESTART_CONTAINER", "SIGNAL_PROCESS", "STOP_CONTAINER", "read_only_reason",
    "Standing", "StepOutcome", "TIMEOUT", "UNAVAILABLE", "action_named", "container_gpus", "device_check_source",
    "explain_missing_nvidia_smi", "explain_nvidia_smi_failure", "explain_py_spy_failure", "find_py_spy",
    "host_gpu_view", "no_exec_reason", "ptrace_facts", "python_processes", "refusal", "summarize_device_check",
]
