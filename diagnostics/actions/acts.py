"""Acts on a container: a signal to one of its processes (the dashboard's `k`, `mltop kill`), a stop or restart
through its runtime (`k` on a container row, `mltop stop|restart`).

Every act first asks the action registry (`refusal`: a source that cannot act, --read-only), then checks that
its target is still what the snapshot showed (pid_check.py: the PID's cgroup and start time), then acts and
says what came of it: the process exited, or still runs after N s; the container stopped, or runs again. A pod
container is not stopped here: its kubelet would start it again at once, so mltop says what to run instead.
Each outcome becomes one timeline event (`ActOutcome.event()`), which the caller hands to its recorder.
"""

from __future__ import annotations

import os
import signal as signals
import time
from dataclasses import dataclass, field
from typing import Any

from mltop.probes.model import ContainerSample, ProcessSample
from mltop.probes.recording.entries import Event
from mltop.probes.units import binary_size

from ..one_line import one_line
from .pid_check import still_in_container
from .registry import RESTART_CONTAINER, SIGNAL_PROCESS, STOP_CONTAINER, ActingSource, refusal

SIGNAL_NAMES = ("TERM", "KILL", "INT")  # offered in this order: ask nicely first
WAIT_S = 5.0  # how long an act waits to see its effect before it says "still running"
STOP_TIMEOUT_S = 10  # the engine's grace period between SIGTERM and SIGKILL on a stop or restart
COMMAND_WIDTH = 80

# What came of an act.
EXITED = "exited"
STILL_RUNNING = "still running"
STOPPED = "stopped"
RESTARTED = "restarted"
REFUSED = "refused"
FAILED = "failed"


@dataclass(frozen=True)
class ActOutcome:
    act: str  # "signal" | "stop" | "restart"
    status: str  # EXITED, STILL_RUNNING, STOPPED, RESTARTED, REFUSED, FAILED
    message: str  # in words, for the user
    container: str
    container_id: str
    at: float = field(default_factory=time.time)
    pid: int | None = None
    signal: str | None = None  # "KILL"
    seconds: float | None = None  # from the act to what was seen

    @property
    def done(self) -> bool:
        """The act had its effect (the process exited, the container stopped or restarted)."""
        return self.status in (EXITED, STOPPED, RESTARTED)

    @property
    def target(self) -> str:
        return f"host PID {self.pid} of {self.container}" if self.pid is not None else self.container

    def event(self) -> Event:
        """The timeline's record of it: the time, the target and the result."""
        detail: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.pid is not None:
            detail["pid"] = self.pid
        if self.signal is not None:
            detail["signal"] = f"SIG{self.signal}"
        if self.seconds is not None:
            detail["seconds"] = round(self.seconds, 2)
        what = f"SIG{self.signal} to host PID {self.pid}" if self.act == "signal" else self.act
        severity = "info" if self.done else "warning"
        return Event(self.at, "mltop", self.act, container_id=self.container_id, container=self.container,
                     severity=severity, code=f"act.{self.act}", title=f"{what}: {self.status}", detail=detail)

    def to_json(self) -> dict[str, Any]:
        return {"act": self.act, "status": self.status, "message": self.message, "container": self.container,
                "container_id": self.container_id, "pid": self.pid,
                "signal": f"SIG{self.signal}" if self.signal else None, "seconds": self.seconds, "at": self.at}


def signal_number(name: str) -> int:
    """"KILL", "SIGKILL", "kill", "9" -> 9; ValueError for a name that is no signal."""
    text = name.strip().upper()
    if text.isdigit():
        return signals.Signals(int(text)).value
    try:
        return signals.Signals["SIG" + text.removeprefix("SIG")].value
    except KeyError:
        raise ValueError(f"unknown signal {name!r}; e.g. {', '.join(SIGNAL_NAMES)}") from None


def signal_name(name: str) -> str:
    return signals.Signals(signal_number(name)).name.removeprefix("SIG")


def describe_process(container: ContainerSample, process: ProcessSample) -> str:
    """One line naming the target of a signal: PID, command (one line, capped), container, GPU memory."""
    memory = binary_size(process.gpu_memory_bytes) if process.gpu_memory_bytes is not None else "?"
    gpu = (f"{memory} GPU memory on GPU {','.join(map(str, process.gpu_indices))}"
           if process.gpu_indices else "no GPU memory")
    inner = f" (PID {process.container_pid} inside)" if process.container_pid is not None else ""
    return (f"host PID {process.host_pid}{inner} · {one_line(process.cmdline, COMMAND_WIDTH)} · "
            f"container {one_line(container.name, 64)} · {gpu}")


def _alive(pid: int, start_ticks: int | None) -> bool:
    """The same process still runs: /proc/<pid> is there, not a zombie, and (when known) started then."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    fields = data[data.rfind(b")") + 2:].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return False
    try:
        return start_ticks is None or int(fields[19]) == start_ticks
    except (IndexError, ValueError):
        return True


def signal_process(container: ContainerSample, process: ProcessSample, name: str = "TERM", *,
                   source: ActingSource | None = None, wait_s: float = WAIT_S) -> ActOutcome:
    """Send signal `name` to `process` of `container` (as a snapshot saw them), if the registry allows and the
    PID is still that process; then watch it up to `wait_s` seconds."""
    sig = signal_name(name)
    pid = process.host_pid

    def outcome(status: str, message: str, seconds: float | None = None) -> ActOutcome:
        return ActOutcome("signal", status, message, container.name, container.id, pid=pid, signal=sig,
                          seconds=seconds)

    why = refusal(SIGNAL_PROCESS, source)
    if why:
        return outcome(REFUSED, why)
    moved = still_in_container(pid, container, process.start_ticks, doing="signal it")  # last, right before
    if moved:
        return outcome(REFUSED, moved)
    started = time.monotonic()
    try:
        os.kill(pid, signal_number(sig))
    except ProcessLookupError:
        return outcome(EXITED, f"Host PID {pid} had exited already.", 0.0)
    except PermissionError:
        return outcome(FAILED, f"The kernel refused SIG{sig} to host PID {pid}: it runs as another user; signal "
                               "it as root (`sudo mltop kill ...`).")
    except OSError as exc:
        return outcome(FAILED, f"SIG{sig} to host PID {pid} failed: {exc.strerror or exc}.")
    deadline = started + wait_s
    while True:
        if not _alive(pid, process.start_ticks):
            seconds = time.monotonic() - started
            return outcome(EXITED, f"Host PID {pid} exited {seconds:.1f} s after SIG{sig}.", seconds)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    seconds = time.monotonic() - started
    hint = " It may be handling the signal, or ignoring it: KILL cannot be ignored." if sig != "KILL" else (
        " A process stuck in the kernel (state D, e.g. a GPU driver call) dies only when that call returns.")
    return outcome(STILL_RUNNING, f"Host PID {pid} still runs {seconds:.0f} s after SIG{sig}.{hint}", seconds)


def pod_advice(container: ContainerSample) -> str | None:
    """Why a pod container is not stopped by mltop, and what to run instead; None outside pods."""
    k = container.kubernetes
    if k is None:
        return None
    return (f"{container.name} is a container of pod {k.namespace}/{k.pod}: stopped through its runtime, the "
            f"kubelet would start it again at once, so mltop does not. Delete the pod (`kubectl delete pod -n "
            f"{k.namespace} {k.pod}`), or restart what owns it (`kubectl rollout restart -n {k.namespace} "
            "deployment/NAME`, or statefulset/NAME).")


def stop_container(container: ContainerSample, engine: Any, *, restart: bool = False,
                   source: ActingSource | None = None, timeout_s: int = STOP_TIMEOUT_S) -> ActOutcome:
    """Stop (or restart) a Docker container through the engine's API (SIGTERM, then SIGKILL after `timeout_s`),
    if the registry allows; a pod container is refused with what to run instead."""
    act = "restart" if restart else "stop"

    def outcome(status: str, message: str, seconds: float | None = None) -> ActOutcome:
        return ActOutcome(act, status, message, container.name, container.id, seconds=seconds)

    why = refusal(RESTART_CONTAINER if restart else STOP_CONTAINER, source)
    if why:
        return outcome(REFUSED, why)
    advice = pod_advice(container)
    if advice:
        return outcome(REFUSED, advice)
    if container.runtime not in (None, "docker"):
        return outcome(REFUSED, f"{container.name} runs under {container.runtime}, which mltop does not stop; "
                                "use that runtime's own tools.")
    started = time.monotonic()
    try:
        handle = engine.client.containers.get(container.id)
        before = (handle.attrs.get("State") or {}).get("StartedAt")
        (handle.restart if restart else handle.stop)(timeout=timeout_s)
        handle.reload()
    except Exception as exc:  # the engine's words: not found, unreachable, permission
        return outcome(FAILED, f"The engine refused to {act} {container.name}: {type(exc).__name__}: {exc}")
    seconds = time.monotonic() - started
    state = handle.attrs.get("State") or {}
    if restart:
        if state.get("Running") and state.get("StartedAt") != before:
            return outcome(RESTARTED, f"{container.name} restarted in {seconds:.1f} s and runs again.", seconds)
        return outcome(FAILED, f"{container.name} was restarted but is {state.get('Status', 'not running')} "
                               f"(exit code {state.get('ExitCode')}).", seconds)
    if not state.get("Running"):
        return outcome(STOPPED, f"{container.name} stopped in {seconds:.1f} s (exit code {state.get('ExitCode')}).",
                       seconds)
    return outcome(STILL_RUNNING, f"{container.name} still runs {seconds:.0f} s after the stop.", seconds)
