"""One-key actions against a container (nvidia-smi, py-spy, device check): stream, cancel, time out, keep.

An `ActionRun` runs one action to its end in the calling thread (a TUI thread worker, or the CLI), hands
each output line to `on_line` as it arrives, and returns a frozen `ActionResult`; `cancel()` may be called
from any thread. Every line is redacted before anyone sees it. Results go to an `ActionLog`, the session
history a report reads.

Commands are argv lists, never shell strings: `docker exec` for what runs inside the container, a host
subprocess for py-spy (which attaches to the container's processes by their host PID).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from mltop.probes.model import ContainerSample, GpuSample, HostInfo, ProcessSample, Snapshot
from mltop.probes.redaction import REDACTED, redact_text, scrub_values, secret_values, split_env

from .one_line import one_line

NVIDIA_SMI = "nvidia-smi"
PY_SPY = "py-spy"
DEVICE_CHECK = "device-check"
ACTION_NAMES = (NVIDIA_SMI, PY_SPY, DEVICE_CHECK)

OK = "ok"
FAILED = "failed"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
UNAVAILABLE = "unavailable"
STATUSES = (OK, FAILED, TIMEOUT, CANCELLED, UNAVAILABLE)

DEFAULT_TIMEOUT_S = {NVIDIA_SMI: 30.0, PY_SPY: 30.0, DEVICE_CHECK: 180.0}
MAX_OUTPUT_LINES = 20_000
MAX_LINE_CHARS = 4_000

DEVICE_CHECK_SCRIPT = Path(__file__).with_name("device_check.py")
DEVICE_CHECK_LABEL = "<mltop device_check.py>"

LineCallback = Callable[[str], None]


# --------------------------------------------------------------------------- results and the session log


@dataclass(frozen=True)
class ActionResult:
    """How one action ended. `output` is redacted; `explanation` says in plain words what is missing."""

    action: str
    container: str  # name
    command: tuple[str, ...]  # argv (the device check's script text shows as DEVICE_CHECK_LABEL)
    started_at: float  # unix time
    duration_s: float
    exit_code: int | None
    status: str  # ok | failed | timeout | cancelled | unavailable
    output: str
    explanation: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    container_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        from mltop.probes.model import to_jsonable

        return {
            "action": self.action,
            "container": self.container,
            "container_id": self.container_id,
            "command": list(self.command),
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "exit_code": self.exit_code,
            "status": self.status,
            "explanation": self.explanation,
            "output": self.output,
            "data": to_jsonable(self.data),
        }


class ActionLog:
    """The session's action history, oldest first; safe to add to from worker threads."""

    def __init__(self, maxlen: int = 200):
        self._results: list[ActionResult] = []
        self._maxlen = maxlen
        self._lock = threading.Lock()

    def add(self, result: ActionResult) -> None:
        with self._lock:
            self._results.append(result)
            del self._results[: max(len(self._results) - self._maxlen, 0)]

    def results(self, container: str | None = None) -> tuple[ActionResult, ...]:
        """All results, or those for one container (by name or full id)."""
        with self._lock:
            items = tuple(self._results)
        if container is None:
            return items
        return tuple(r for r in items if container in (r.container, r.container_id))

    def latest(self, action: str | None = None, container: str | None = None) -> ActionResult | None:
        for result in reversed(self.results(container)):
            if action is None or result.action == action:
                return result
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._results)

    def __iter__(self) -> Iterator[ActionResult]:
        return iter(self.results())


# --------------------------------------------------------------------------- running commands


@dataclass
class StepOutcome:
    """What one command did: exit code, captured stdout (when asked), how it ended."""

    exit_code: int | None = None
    stdout: str = ""
    text: str = ""  # everything it printed (redacted), including captured stdout
    timed_out: bool = False
    cancelled: bool = False
    not_found: bool = False  # the executable is not in the container
    error: str | None = None  # it could not be started at all (engine error, OSError)
    still_running: bool = False  # cancelled or timed out but we could not end it (remote engine)

    @property
    def interrupted(self) -> bool:
        return self.timed_out or self.cancelled


_NOT_FOUND = re.compile(r"executable file not found|no such file or directory|not found in \$PATH", re.I)
_EOF = object()


class _Finished(Exception):
    """Raised inside an action to end it with a given result (status, explanation, ...)."""

    def __init__(self, status: str, explanation: str | None = None, exit_code: int | None = None,
                 data: Mapping[str, Any] | None = None):
        super().__init__(explanation or status)
        self.status = status
        self.explanation = explanation
        self.exit_code = exit_code
        self.data = dict(data or {})


class ActionRun:
    """One action against one container. Call `run()` in a worker thread; `cancel()` from anywhere.

    `on_line` is called on the running thread with each redacted line as it arrives (in a Textual thread
    worker, hand it over with `app.call_from_thread`). `snapshot` supplies the container (a ContainerSample,
    or a name / id / id prefix looked up in it), its processes for py-spy and the host's GPUs for the
    nvidia-smi fallback.

        @work(thread=True, exclusive=True, group="action")
        def run_action(self, action: str, container_id: str) -> None:
            self.action_run = ActionRun(action, self.snapshot, container_id, self.engine, log=self.action_log,
                                        on_line=lambda line: self.call_from_thread(panel.write_line, line))
            result = self.action_run.run()   # blocks until done, timed out or cancelled; never raises
            self.call_from_thread(panel.show_result, result)
        # key `escape`: self.action_run.cancel()
    """

    def __init__(
        self,
        action: str,
        snapshot: Snapshot,
        container: ContainerSample | str,
        engine: Any,
        *,
        timeout_s: float | None = None,
        on_line: LineCallback | None = None,
        pid: int | None = None,
        all_processes: bool = False,
        log: ActionLog | None = None,
        py_spy: str | None = None,
    ):
        if action not in ACTION_NAMES:
            raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTION_NAMES)}")
        self.action = action
        self.snapshot = snapshot
        self.container_key = container if isinstance(container, str) else container.id
        self.container = container if isinstance(container, ContainerSample) else snapshot.container(container)
        self.engine = engine
        self.timeout_s = float(timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S[action])
        self.on_line = on_line
        self.pid = pid
        self.all_processes = all_processes
        self.log = log
        self.py_spy = py_spy
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._lines: list[str] = []
        self._dropped_lines = 0
        self._command: tuple[str, ...] = ()
        self._deadline = 0.0
        self._result: ActionResult | None = None
        self._thread: threading.Thread | None = None
        self._secrets: frozenset[str] = frozenset()

    # -- control -----------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the run to stop: the running command is ended and the result says `cancelled`."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def result(self) -> ActionResult | None:
        return self._result

    @property
    def lines(self) -> list[str]:
        """The (redacted) output lines so far."""
        return list(self._lines)

    def start(self) -> "ActionRun":
        """Run in a daemon thread of our own (for callers without a worker pool); `wait()` for the end."""
        self._thread = threading.Thread(target=self.run, name=f"mltop-action-{self.action}", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> ActionResult | None:
        self._done.wait(timeout)
        return self._result

    # -- the run -----------------------------------------------------------------------------------

    def run(self) -> ActionResult:
        """Run the action to its end and return the result (also added to the log). Never raises."""
        started_at = time.time()
        t0 = time.monotonic()
        self._deadline = t0 + self.timeout_s
        status, explanation, exit_code, data = OK, None, None, {}
        try:
            if self.container is not None:
                self._secrets = container_secret_values(self.engine, self.container.id)
            if self.container is None:
                raise _Finished(UNAVAILABLE, f"No container {self.container_key!r} in the snapshot: it may have "
                                             "been removed; refresh and pick it again.")
            status, explanation, exit_code, data = _ACTIONS[self.action](self)
        except _Finished as end:
            status, explanation, exit_code, data = end.status, end.explanation, end.exit_code, end.data
        except Exception as exc:  # an engine error or a bug must end as a result, not kill the worker
            from mltop.probes.engine import EngineError

            status = FAILED
            if isinstance(exc, EngineError):
                explanation = exc.message
            else:
                explanation = f"mltop could not run {self.action}: {type(exc).__name__}: {exc}"
        if status not in (TIMEOUT, CANCELLED):
            if self._cancel.is_set():
                status = CANCELLED
        if self._dropped_lines:
            self._lines.append(f"[{self._dropped_lines} more lines not kept]")
        container = self.container
        result = ActionResult(
            action=self.action,
            container=container.name if container else self.container_key,
            container_id=container.id if container else None,
            command=self._command,
            started_at=started_at,
            duration_s=time.monotonic() - t0,
            exit_code=exit_code,
            status=status,
            output=self._redact("\n".join(self._lines)),  # again as a whole: secrets spanning lines
            explanation=self._redact(explanation) if explanation else None,
            data=_redact_data(data, self._redact),
        )
        self._result = result
        if self.log is not None:
            self.log.add(result)
        self._done.set()
        return result

    # -- helpers the actions use -------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return scrub_values(redact_text(text), self._secrets)

    def emit(self, line: str) -> None:
        """One output line: redacted, kept, and handed to `on_line`."""
        line = line.rstrip("\r\n")
        if "\n" in line:
            for part in line.split("\n"):
                self.emit(part)
            return
        line = self._redact(line)
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + " …"
        if len(self._lines) < MAX_OUTPUT_LINES:
            self._lines.append(line)
        else:
            self._dropped_lines += 1
        if self.on_line is not None:
            try:
                self.on_line(line)
            except Exception:
                pass  # a broken viewer must not break the run

    def remaining_s(self) -> float:
        return self._deadline - time.monotonic()

    def exec_in_container(self, argv: Sequence[str], *, capture_stdout: bool = False,
                          shown_as: Sequence[str] | None = None) -> StepOutcome:
        """`docker exec` argv in the container, streaming its output (stdout captured when asked)."""
        assert self.container is not None
        self._command = tuple(shown_as or argv)
        container_id = self.container.id
        api = self.engine.client.api
        try:
            exec_id = self.engine.call(
                lambda c: c.api.exec_create(container_id, list(argv), stdout=True, stderr=True, tty=False)
            )["Id"]
            stream = self.engine.call(lambda c: c.api.exec_start(exec_id, stream=True, demux=True))
        except Exception as exc:
            text = str(getattr(exc, "explanation", None) or exc)
            return StepOutcome(error=self._redact(text), not_found=bool(_NOT_FOUND.search(text)))

        def chunks() -> Iterator[tuple[int, bytes]]:
            for out, err in stream:
                if out:
                    yield 1, out
                if err:
                    yield 2, err

        def stop() -> bool:
            ended = _kill_exec_process(api, exec_id, container_id)
            try:
                stream.close()
            except Exception:
                pass
            return ended

        outcome = self._pump(chunks, stop, capture_stdout)
        outcome.exit_code = _exec_exit_code(api, exec_id)
        if outcome.exit_code in (126, 127) and _NOT_FOUND.search(outcome.text):
            outcome.not_found = True
        return outcome

    def run_on_host(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> StepOutcome:
        """A host subprocess (argv), stdout and stderr merged, streamed line by line."""
        self._command = tuple(argv)
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None, start_new_session=True,
            )
        except OSError as exc:
            return StepOutcome(error=f"{argv[0]}: {exc.strerror or exc}", not_found=isinstance(exc, FileNotFoundError))
        assert proc.stdout is not None
        fd = proc.stdout.fileno()

        def chunks() -> Iterator[tuple[int, bytes]]:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    return
                yield 1, data

        def stop() -> bool:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            return True

        try:
            outcome = self._pump(chunks, stop, capture_stdout=False)
        finally:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                stop()
                proc.wait()
            proc.stdout.close()
        outcome.exit_code = proc.returncode
        return outcome

    def _pump(self, chunks: Callable[[], Iterator[tuple[int, bytes]]], stop: Callable[[], bool],
              capture_stdout: bool) -> StepOutcome:
        """Read chunks on a reader thread; turn them into lines here, watching for cancel and timeout."""
        q: queue.Queue = queue.Queue()

        def reader() -> None:
            try:
                for item in chunks():
                    q.put(item)
            except Exception as exc:  # the stream was closed under us, or the engine went away
                q.put(("error", exc))
            finally:
                q.put(_EOF)

        threading.Thread(target=reader, name="mltop-action-reader", daemon=True).start()
        outcome = StepOutcome()
        buffers = {1: b"", 2: b""}
        captured: list[str] = []
        text: list[str] = []
        stopping_since: float | None = None

        def take(stream: int, line_bytes: bytes) -> None:
            line = line_bytes.decode("utf-8", errors="replace").rstrip("\r")
            if capture_stdout and stream == 1:
                captured.append(line)
            else:
                self.emit(line)
            text.append(self._redact(line))

        while True:
            if stopping_since is None and (self._cancel.is_set() or time.monotonic() >= self._deadline):
                outcome.cancelled = self._cancel.is_set()
                outcome.timed_out = not outcome.cancelled
                outcome.still_running = not stop()
                stopping_since = time.monotonic()
            try:
                item = q.get(timeout=0.05)
            except queue.Empty:
                if stopping_since is not None and time.monotonic() - stopping_since > 3.0:
                    break  # the reader is stuck on a stream we could not close; leave it behind
                continue
            if item is _EOF:
                break
            stream, data = item
            if stream == "error":
                if stopping_since is None:
                    outcome.error = self._redact(f"{type(data).__name__}: {data}")
                continue
            buffers[stream] += data
            while b"\n" in buffers[stream]:
                line, buffers[stream] = buffers[stream].split(b"\n", 1)
                take(stream, line)
        for stream, rest in buffers.items():
            if rest:
                take(stream, rest)
        outcome.stdout = "\n".join(captured)
        outcome.text = "\n".join(text)
        return outcome


def _exec_exit_code(api: Any, exec_id: str) -> int | None:
    for _ in range(20):
        try:
            info = api.exec_inspect(exec_id)
        except Exception:
            return None
        if not info.get("Running"):
            return info.get("ExitCode")
        time.sleep(0.05)
    return None


def _kill_exec_process(api: Any, exec_id: str, container_id: str) -> bool:
    """End an exec'd process (and its process group) by its host PID. False when we cannot.

    The engine reports the PID in its own PID namespace; it is killed only after /proc/<pid>/cgroup
    shows that PID belongs to this container here too, so a remote engine's PID never hits a local process.
    """
    from mltop.probes.cgroups import container_ref_from_cgroup_text

    try:
        pid = int(api.exec_inspect(exec_id).get("Pid") or 0)
    except Exception:
        return False
    if pid <= 0:
        return True  # it has already ended
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            ref = container_ref_from_cgroup_text(f.read())
    except OSError:
        return False
    if ref is None or ref[1] != container_id:
        return False
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError:
        return False
    return True


def _redact_data(value: Any, redact: Callable[[str], str] = redact_text) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: _redact_data(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_data(v, redact) for v in value]
    return value


def container_secret_values(engine: Any, container_id: str) -> frozenset[str]:
    """The container's raw secret environment values, to scrub from what it prints (e.g. a logged token).

    Read from inspect right when needed and held only by the run; empty when the engine cannot say.
    """
    try:
        attrs = engine.inspect(container_id)
    except Exception:
        return frozenset()
    return secret_values(split_env((attrs.get("Config") or {}).get("Env")))


def _ended(outcome: StepOutcome, what: str) -> None:
    """Raise the matching _Finished when a step was cancelled, timed out or could not start."""
    still = (" It may still be running inside the container: mltop could not end it from here."
             if outcome.still_running else "")
    if outcome.cancelled:
        raise _Finished(CANCELLED, f"Cancelled.{still}", outcome.exit_code)
    if outcome.timed_out:
        raise _Finished(TIMEOUT, f"{what} did not finish in time and was stopped.{still}", outcome.exit_code)


# --------------------------------------------------------------------------- nvidia-smi


def _require_running(container: ContainerSample) -> None:
    if not container.running:
        raise _Finished(UNAVAILABLE, f"{container.name} is not running (its status is {container.status}): "
                                     "there is nothing to run a command in. Start it and try again.")


ActionOutcome = tuple[str, "str | None", "int | None", dict]


def _nvidia_smi(run: ActionRun) -> ActionOutcome:
    container = run.container
    assert container is not None
    _require_running(container)
    outcome = run.exec_in_container([NVIDIA_SMI])
    _ended(outcome, "nvidia-smi")
    if outcome.error and not outcome.not_found:
        raise _Finished(FAILED, f"docker exec failed: {outcome.error}")
    if not outcome.not_found and outcome.exit_code == 0:
        return OK, None, 0, {}
    if outcome.not_found:
        explanation = explain_missing_nvidia_smi(container, run.snapshot.host)
        status = UNAVAILABLE  # the engine's own "executable file not found" line stays above as evidence
    else:
        explanation = explain_nvidia_smi_failure(outcome.text, outcome.exit_code)
        status = FAILED
    if run.lines:
        run.emit("")
    view = host_gpu_view(run.snapshot, container)
    for line in view.splitlines():
        run.emit(line)
    gpus = [g.index for g in container_gpus(run.snapshot, container)]
    return status, explanation, outcome.exit_code, {"fallback": "host_nvml", "gpu_indices": gpus}


def _gpu_capabilities(container: ContainerSample) -> tuple[set[str] | None, str]:
    """The driver capabilities the toolkit will honour for this container, and where that came from."""
    cfg = container.config
    for request in cfg.device_requests:
        if request.driver in ("", "nvidia"):
            caps = {c for group in request.capabilities for c in group} - {"gpu"}
            if caps:
                return caps, "the device request's capabilities"
    env = cfg.env_value("NVIDIA_DRIVER_CAPABILITIES")
    if env is None or not env.strip():
        return None, "NVIDIA_DRIVER_CAPABILITIES (unset: the toolkit's default is utility,compute)"
    return {c.strip() for c in env.split(",") if c.strip()}, f"NVIDIA_DRIVER_CAPABILITIES={env}"


def _uses_nvidia_runtime(container: ContainerSample, host: HostInfo) -> bool:
    runtime = container.config.runtime
    return runtime == "nvidia" or (not runtime and host.default_runtime == "nvidia")


def explain_missing_nvidia_smi(container: ContainerSample, host: HostInfo) -> str:
    """Why the NVIDIA Container Toolkit did not put nvidia-smi into this container, in plain words."""
    cfg = container.config
    has_request = any(r.driver in ("", "nvidia", "cdi") for r in cfg.device_requests)
    nvidia_runtime = _uses_nvidia_runtime(container, host)
    visible = cfg.env_value("NVIDIA_VISIBLE_DEVICES")
    toolkit_present = "nvidia" in host.runtimes or bool(host.cdi_spec_dirs)
    if not has_request and not nvidia_runtime:
        text = (f"nvidia-smi is not in {container.name} because it was started without GPUs: it has no GPU "
                "device request (--gpus), does not use the nvidia runtime and names no CDI device. The NVIDIA "
                "Container Toolkit injects nvidia-smi and the driver libraries only into containers that ask "
                "for GPUs. Recreate it with `--gpus all` (Compose: deploy.resources.reservations.devices with "
                "capabilities: [gpu]).")
        if not toolkit_present:
            runtimes = ", ".join(host.runtimes) or "none"
            text += (f" This engine lists no nvidia runtime (runtimes: {runtimes}) and no CDI spec directory, "
                     "so there may be no GPU runtime on this host at all: install nvidia-container-toolkit and "
                     "run `sudo nvidia-ctk runtime configure --runtime=docker`, then restart dockerd.")
        return text
    if nvidia_runtime and not has_request and (visible is None or visible.strip().lower() in ("", "void", "none")):
        shown = "unset" if visible is None else f"{visible!r}"
        return (f"{container.name} uses the nvidia runtime, but NVIDIA_VISIBLE_DEVICES is {shown}, so the "
                "toolkit injects no GPU and no driver utilities. Set NVIDIA_VISIBLE_DEVICES=all (or GPU "
                "indices/UUIDs), or use `--gpus all`.")
    caps, source = _gpu_capabilities(container)
    if caps is not None and not caps & {"utility", "all"}:
        wanted = ",".join(sorted(caps | {"utility"}))
        return (f"{container.name} asks for GPUs, but its driver capabilities ({source}) do not include "
                "`utility`: the toolkit mounts nvidia-smi and libnvidia-ml.so only with the utility "
                f"capability. Set NVIDIA_DRIVER_CAPABILITIES={wanted} (or all), or "
                f"`--gpus 'all,\"capabilities={wanted}\"'`.")
    return (f"{container.name} asks for GPUs with the utility capability ({source}), yet nvidia-smi is not "
            "on its PATH: the toolkit's hook did not inject it. Check on the host that "
            "`nvidia-container-cli -d /dev/tty info` finds nvidia-smi, and with CDI that the spec lists it "
            "(`nvidia-ctk cdi list`; regenerate with `nvidia-ctk cdi generate`). The toolkit mounts it at "
            "/usr/bin/nvidia-smi, so a PATH without /usr/bin hides it too.")


def explain_nvidia_smi_failure(text: str, exit_code: int | None) -> str:
    """Known nvidia-smi failure messages, explained."""
    lowered = text.lower()
    if "failed to initialize nvml: unknown error" in lowered:
        return ("nvidia-smi runs but NVML cannot open the GPUs (\"Failed to initialize NVML: Unknown Error\"): "
                "the container lost access to the GPU device nodes, typically after `systemctl daemon-reload` "
                "on a host with the systemd cgroup driver. Restarting the container restores access; to stop it "
                "recurring use CDI, or the workaround in the NVIDIA Container Toolkit's troubleshooting guide.")
    if "driver/library version mismatch" in lowered:
        return ("The NVIDIA driver was upgraded on the host but the old kernel module is still loaded "
                "(\"Driver/library version mismatch\"): reboot the host, or unload and reload the nvidia "
                "modules when no process uses the GPUs.")
    if "couldn't communicate with the nvidia driver" in lowered:
        return ("nvidia-smi cannot reach the NVIDIA kernel driver: it is not loaded on the host (check "
                "`lsmod | grep nvidia` and `dmesg | grep NVRM` there).")
    if "no devices were found" in lowered:
        return ("nvidia-smi finds no GPU in the container: no device node was passed in. Check the GPU "
                "request (--gpus, NVIDIA_VISIBLE_DEVICES) and that the GPUs are present on the host.")
    return f"nvidia-smi exited with status {exit_code}; its output is above."


def _assigned_gpu_ids(container: ContainerSample, host: HostInfo) -> tuple[bool, set[str]]:
    """(all GPUs?, specific GPU indices/UUIDs) the container was given, from its config."""
    ids: set[str] = set()
    everything = False
    for request in container.config.device_requests:
        if request.driver in ("", "nvidia"):
            if request.count == -1:
                everything = True
            ids.update(request.device_ids)
        elif request.driver == "cdi":
            for device in request.device_ids:
                if device.startswith("nvidia.com/gpu="):
                    value = device.split("=", 1)[1]
                    everything = everything or value == "all"
                    ids.add(value)
    if _uses_nvidia_runtime(container, host):
        visible = (container.config.env_value("NVIDIA_VISIBLE_DEVICES") or "").strip()
        if visible.lower() == "all":
            everything = True
        elif visible.lower() not in ("", "void", "none"):
            ids.update(v.strip() for v in visible.split(","))
    return everything, ids


def container_gpus(snapshot: Snapshot, container: ContainerSample) -> list[GpuSample]:
    """The host GPUs this container is given (by its config) or uses (by its processes)."""
    everything, ids = _assigned_gpu_ids(container, snapshot.host)
    used = {g.index for g in container.gpus}
    out = []
    for gpu in snapshot.gpus:
        if (everything or gpu.index in used or str(gpu.index) in ids or gpu.uuid in ids
                or any(p.container_id == container.id for p in gpu.processes)):
            out.append(gpu)
    return out


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value // (1024 * 1024)}MiB"


def _num(value: float | None, unit: str, digits: int = 0) -> str:
    return "N/A" if value is None else f"{value:.{digits}f}{unit}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(cells: Sequence[str], align: Sequence[int]) -> str:
        parts = [c.rjust(w) if i in align else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(parts) + " |"

    return [rule, fmt(headers, ()), rule.replace("-", "="), *(fmt(r, right) for r in rows), rule]


def host_gpu_view(snapshot: Snapshot, container: ContainerSample) -> str:
    """nvidia-smi-like text of the host's NVML view, restricted to this container's GPUs and processes."""
    host = snapshot.host
    if not host.nvml.ok:
        return (f"The host's NVML view is not available either ({host.nvml.status}: "
                f"{host.nvml.error or 'no reason given'}), so there are no GPU figures to show.")
    gpus = container_gpus(snapshot, container)
    title = (f"Host NVML view for {container.name} — driver {host.nvml.driver_version or '?'}, "
             f"CUDA {host.nvml.cuda_driver_version or '?'} (from the host, not from inside the container)")
    if not gpus:
        return (f"{title}\nNo GPU is assigned to or used by {container.name} "
                f"(the host has {len(snapshot.gpus)} GPU{'s' if len(snapshot.gpus) != 1 else ''}).")
    rows = []
    for g in gpus:
        power = (f"{_num(g.power_w, 'W')} / {_num(g.power_limit_w, 'W')}"
                 if g.power_w is not None or g.power_limit_w is not None else "N/A")
        rows.append([str(g.index), g.name, g.pci_bus_id or "N/A", _num(g.utilization_percent, "%"),
                     _num(g.temperature_c, "C"), f"{_mib(g.memory_used_bytes)} / {_mib(g.memory_total_bytes)}",
                     power, ",".join(g.throttle_reasons) or "-"])
    lines = [title, *_table(["GPU", "Name", "Bus-Id", "Util", "Temp", "Memory-Usage", "Pwr:Usage/Cap",
                             "Throttle"], rows, right=(0, 3, 4, 5))]
    by_pid = {p.host_pid: p for p in container.processes}
    proc_rows = []
    for g in gpus:
        for p in g.processes:
            if p.container_id != container.id:
                continue
            sample = by_pid.get(p.host_pid)
            name = (sample.cmdline if sample else None) or p.name or "?"
            proc_rows.append([str(g.index), str(p.host_pid),
                              str(sample.container_pid) if sample and sample.container_pid else "?",
                              "C" if p.type == "compute" else "G", _mib(p.gpu_memory_bytes),
                              _num(p.sm_percent, "%"), one_line(name, 60)])
    lines.append(f"Processes of {container.name} on these GPUs:")
    if proc_rows:
        lines += _table(["GPU", "Host PID", "Ctr PID", "Type", "GPU Memory", "SM", "Process"], proc_rows,
                        right=(0, 1, 2, 4, 5))
    else:
        lines.append("  none (the container runs nothing on a GPU right now)")
    others = sorted({p.container_name or f"host PID {p.host_pid}" for g in gpus for p in g.processes
                     if p.container_id != container.id})
    if others:
        lines.append("Also on these GPUs: " + ", ".join(others))
    return "\n".join(lines)


# --------------------------------------------------------------------------- py-spy


def _is_python(process: ProcessSample) -> bool:
    return "python" in process.cmdline.lower()


def python_processes(container: ContainerSample) -> list[ProcessSample]:
    """The container's Python processes, busiest first (CPU, then memory)."""
    procs = [p for p in container.processes if _is_python(p)]
    return sorted(procs, key=lambda p: (p.cpu_percent if p.cpu_percent is not None else -1.0,
                                        p.rss_bytes or 0), reverse=True)


def find_py_spy(explicit: str | None = None) -> str | None:
    """py-spy on PATH, or next to the running interpreter (a venv whose bin/ is not on PATH)."""
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else shutil.which(explicit)
    found = shutil.which(PY_SPY)
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), PY_SPY)
    return beside if os.path.isfile(beside) and os.access(beside, os.X_OK) else None


PY_SPY_MISSING = ("py-spy is not installed where mltop can find it (not on PATH, nor next to "
                  f"{sys.executable}). Install it on the host with `pip install py-spy` (it comes with "
                  "`pip install mltop`), or download a release from https://github.com/benfred/py-spy.")


@dataclass(frozen=True)
class PtraceFacts:
    """What decides whether this process may attach to others."""

    euid: int
    in_container: bool
    cap_sys_ptrace: bool | None
    ptrace_scope: int | None


def ptrace_facts() -> PtraceFacts:
    cap = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    cap = bool(int(line.split()[1], 16) & (1 << 19))  # CAP_SYS_PTRACE
    except (OSError, ValueError):
        pass
    scope = None
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = int(f.read().strip())
    except (OSError, ValueError):
        pass
    in_container = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
    return PtraceFacts(os.geteuid(), in_container, cap, scope)


def explain_py_spy_failure(output: str, facts: PtraceFacts, exit_code: int | None = None) -> str:
    """Say exactly what keeps py-spy from attaching, from its output and the facts about us."""
    lowered = output.lower()
    if "permission denied" in lowered or "operation not permitted" in lowered or "os error 1)" in lowered:
        if facts.euid != 0:
            return ("py-spy was refused: attaching to a container's processes needs root on the host (they "
                    "run as another user, and reading their memory needs CAP_SYS_PTRACE). Run it as root: "
                    "`sudo env \"PATH=$PATH\" mltop run py-spy CONTAINER`.")
        if facts.cap_sys_ptrace is False:
            where = "the container mltop runs in" if facts.in_container else "mltop's process"
            return (f"py-spy was refused: {where} lacks CAP_SYS_PTRACE. Start mltop's container with "
                    "`--cap-add SYS_PTRACE --pid=host`.")
        if facts.ptrace_scope == 3:
            return ("py-spy was refused: kernel.yama.ptrace_scope is 3, which forbids attaching for everyone, "
                    "root included, until the next reboot (set it lower in /etc/sysctl.d and reboot).")
        extra = (" If mltop runs in a container, start it with `--cap-add SYS_PTRACE --pid=host` (and "
                 "`--security-opt apparmor=unconfined` if AppArmor still blocks ptrace).") if facts.in_container else ""
        return ("py-spy was refused although mltop runs as root with CAP_SYS_PTRACE: a security policy "
                "(seccomp, AppArmor or SELinux) blocks ptrace here." + extra)
    if "failed to get process executable name" in lowered or "no such process" in lowered:
        return ("py-spy cannot see that process: it has exited, or mltop runs in another PID namespace (run "
                "mltop on the host, or in a container started with `--pid=host`).")
    if "failed to find python version" in lowered or "failed to find a python interpreter" in lowered:
        return ("That process is not a Python interpreter py-spy understands (a launcher or a wrapper?): "
                "pick another PID with --pid.")
    return f"py-spy exited with status {exit_code}; its output is above."


def _process_line(p: ProcessSample) -> str:
    cpu = "?" if p.cpu_percent is None else f"{p.cpu_percent:.0f}%"
    inner = f", PID {p.container_pid} in the container" if p.container_pid else ""
    return f"host PID {p.host_pid}{inner}, CPU {cpu}: {one_line(p.cmdline, 160)}"


def _py_spy(run: ActionRun) -> ActionOutcome:
    container = run.container
    assert container is not None
    _require_running(container)
    exe = find_py_spy(run.py_spy)
    if exe is None:
        raise _Finished(UNAVAILABLE, PY_SPY_MISSING)
    candidates = python_processes(container)
    data: dict[str, Any] = {"candidates": [
        {"host_pid": p.host_pid, "container_pid": p.container_pid, "cpu_percent": p.cpu_percent,
         "cmdline": p.cmdline[:300]} for p in candidates]}
    if run.pid is not None:
        chosen = [p for p in container.processes if p.host_pid == run.pid]
        if not chosen:
            raise _Finished(UNAVAILABLE, f"Host PID {run.pid} is not a process of {container.name}. Its Python "
                                         "processes: " + ("; ".join(_process_line(p) for p in candidates)
                                                          or "none"), data=data)
    elif not container.processes:
        limits = " ".join(run.snapshot.host.limitations)
        raise _Finished(UNAVAILABLE, f"mltop sees no processes of {container.name}, so there is nothing to attach "
                                     f"to. {limits}".strip(), data=data)
    elif not candidates:
        seen = "; ".join(one_line(p.cmdline, 80) for p in container.processes[:5])
        raise _Finished(UNAVAILABLE, f"{container.name} runs no Python process (its processes: {seen}). Pick "
                                     "one by host PID with --pid if Python runs under another name.", data=data)
    else:
        chosen = candidates if run.all_processes else candidates[:1]
    env = {**os.environ, "RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"}
    statuses = []
    last_code = None
    failures = []
    for proc in chosen:
        run.emit(f"== py-spy dump of {_process_line(proc)}")
        if not run.all_processes and run.pid is None and len(candidates) > 1:
            run.emit(f"   (busiest of {len(candidates)} Python processes; others: "
                     + ", ".join(str(p.host_pid) for p in candidates[1:]) + " — choose one with --pid)")
        outcome = run.run_on_host([exe, "dump", "--pid", str(proc.host_pid)], env=env)
        data["pid"] = proc.host_pid
        _ended(outcome, "py-spy")
        if outcome.error:
            raise _Finished(UNAVAILABLE if outcome.not_found else FAILED,
                            PY_SPY_MISSING if outcome.not_found else outcome.error, data=data)
        last_code = outcome.exit_code
        statuses.append(outcome.exit_code == 0)
        if outcome.exit_code != 0:
            failures.append(explain_py_spy_failure(outcome.text, ptrace_facts(), outcome.exit_code))
    data["pids"] = [p.host_pid for p in chosen]
    if all(statuses):
        return OK, None, last_code, data
    return FAILED, " ".join(dict.fromkeys(failures)), last_code, data


# --------------------------------------------------------------------------- device check


def device_check_source() -> str:
    return DEVICE_CHECK_SCRIPT.read_text(encoding="utf-8")


def _parse_check_json(stdout: str) -> dict | None:
    import json

    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
    return None


def _yes_no(value: Any) -> str:
    return "?" if value is None else ("yes" if value else "no")


def summarize_device_check(doc: Mapping[str, Any]) -> list[str]:
    """Readable lines for the check's JSON document."""
    lines = []
    py = doc.get("python") or {}
    lines.append(f"Python {py.get('version', '?')} ({py.get('executable', '?')})")
    driver = doc.get("cuda_driver") or {}
    if driver.get("loadable"):
        lines.append(f"CUDA driver library: libcuda.so.1 loads, CUDA {driver.get('version') or '?'}")
    else:
        lines.append(f"CUDA driver library: not loadable ({driver.get('error') or 'no reason given'})")
    nodes = doc.get("device_nodes") or []
    lines.append("NVIDIA device nodes: " + (", ".join(f"/dev/{n}" for n in nodes) if nodes else "none"))
    for module, fw in (doc.get("frameworks") or {}).items():
        name = fw.get("name", module)
        if not fw.get("installed"):
            lines.append(f"{name}: not installed")
            continue
        if not fw.get("imported"):
            lines.append(f"{name}: installed but the check failed")
        else:
            cuda = fw.get("built_with_cuda") or "none (CPU-only build)"
            names = ", ".join(fw.get("device_names") or []) or "-"
            lines.append(f"{name} {fw.get('version')}: built with CUDA {cuda}; sees a GPU: "
                         f"{_yes_no(fw.get('gpu_available'))}; devices: {fw.get('device_count')} ({names}); "
                         f"a small tensor lands on: {fw.get('tensor_device')}")
        for err in fw.get("errors") or []:
            lines.append(f"  error: {err}")
        for warning in fw.get("warnings") or []:
            lines.append(f"  warning: {warning}")
    return lines


def _device_check(run: ActionRun) -> ActionOutcome:
    container = run.container
    assert container is not None
    _require_running(container)
    script = device_check_source()
    outcome = None
    tried = []
    for exe in ("python3", "python"):
        outcome = run.exec_in_container([exe, "-c", script], capture_stdout=True,
                                        shown_as=[exe, "-c", DEVICE_CHECK_LABEL])
        _ended(outcome, "The device check")
        tried.append(exe)
        if not outcome.not_found:
            break
        run.emit(f"{exe}: not found in the container")
    assert outcome is not None
    if outcome.not_found:
        raise _Finished(UNAVAILABLE, f"No Python in {container.name}: neither python3 nor python is on its PATH "
                                     "(the engine answered \"executable file not found\"). The device check runs "
                                     "the container's own Python, so there is nothing to check here.",
                        outcome.exit_code)
    if outcome.error:
        raise _Finished(FAILED, f"docker exec failed: {outcome.error}")
    doc = _parse_check_json(outcome.stdout)
    if doc is None:
        for line in outcome.stdout.splitlines():
            run.emit(line)
        raise _Finished(FAILED, f"{tried[-1]} exited with status {outcome.exit_code} without the check's result; "
                                "its output is above (the check needs Python 3.6 or newer).", outcome.exit_code)
    if run.lines:
        run.emit("")
    for line in summarize_device_check(doc):
        run.emit(line)
    installed = doc.get("installed") or []
    explanation = None
    if not installed:
        explanation = (f"No ML framework is installed for {tried[-1]} in {container.name}: none of PyTorch, "
                       "TensorFlow, JAX or CuPy can be imported, so nothing can be placed on a GPU.")
    else:
        notes = []
        for module in installed:
            fw = doc["frameworks"][module]
            if fw.get("imported") and not fw.get("built_with_cuda") and module in ("torch", "cupy", "jax"):
                notes.append(f"{fw['name']} is a CPU-only build: it cannot use a GPU whatever the container "
                             "is given; install a CUDA build.")
            elif fw.get("imported") and fw.get("built_with_cuda") and not fw.get("gpu_available"):
                notes.append(f"{fw['name']} was built with CUDA {fw['built_with_cuda']} but sees no GPU.")
            elif not fw.get("imported"):
                notes.append(f"{fw['name']} is installed but its check failed: "
                             + "; ".join(fw.get("errors") or ["no error text"]))
        explanation = " ".join(notes) or None
    return OK, explanation, outcome.exit_code, doc


_ACTIONS: dict[str, Callable[[ActionRun], ActionOutcome]] = {
    NVIDIA_SMI: _nvidia_smi,
    PY_SPY: _py_spy,
    DEVICE_CHECK: _device_check,
}


def run_action(action: str, snapshot: Snapshot, container: ContainerSample | str, engine: Any,
               **kwargs: Any) -> ActionResult:
    """Run one action to its end in this thread (see ActionRun for the keyword arguments)."""
    return ActionRun(action, snapshot, container, engine, **kwargs).run()


__all__ = [
    "ACTION_NAMES", "ActionLog", "ActionResult", "ActionRun", "CANCELLED", "DEVICE_CHECK", "FAILED",
    "NVIDIA_SMI", "OK", "PY_SPY", "PtraceFacts", "REDACTED", "StepOutcome", "TIMEOUT", "UNAVAILABLE",
    "container_gpus", "explain_missing_nvidia_smi", "explain_nvidia_smi_failure", "explain_py_spy_failure",
    "find_py_spy", "host_gpu_view", "ptrace_facts", "python_processes", "run_action", "summarize_device_check",
]
