"""The one runner for commands mltop starts: in a container (docker exec, or a pod container's CRI ExecSync) or on
the host; stream, time out, cancel.

Ending an in-container process is the dangerous part. The engine reports an exec's PID in *its* host's PID
namespace; a signal sent to that number here hits whatever local process has it. So a PID is signalled only
when the engine is local (unix://, npipe://) and /proc/<pid>/cgroup, read here, names that very container.
With a remote engine (ssh://, tcp://) or a PID we cannot see, nothing is signalled: the step says the
process may still run, and the exec's stream is closed so mltop stops waiting for it.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from mltop.probes.identity import identity_of_pid

from .switches import no_exec_reason

log = logging.getLogger(__name__)

_NOT_FOUND = re.compile(r"executable file not found|no such file or directory|not found in \$PATH", re.I)
_EOF = object()
_LOCAL_SCHEMES = ("unix://", "npipe://", "fd://")


# What one command's output may cost, in every path (docker exec, CRI ExecSync, a host subprocess) and in the
# ActionRun that keeps it: a line is cut at MAX_LINE_BYTES (the cut said with CUT_MARK), and MAX_OUTPUT_BYTES are
# kept in all; the rest is counted and a last line says how much was dropped. Output is split in linear time.
MAX_LINE_BYTES = 64 << 10
MAX_OUTPUT_BYTES = 4 << 20
CUT_MARK = " …"


def cut_line(line: str) -> str:
    """`line` cut at MAX_LINE_BYTES characters (bytes for the ASCII most output is), the cut said."""
    return line if len(line) <= MAX_LINE_BYTES else line[:MAX_LINE_BYTES] + CUT_MARK


class LineSplitter:
    """Bytes in, whole lines out (without the newline), in time linear in what is fed; a line longer than
    MAX_LINE_BYTES comes out cut as soon as it is that long (flag True), and its rest is skipped to the next
    newline."""

    def __init__(self, max_line: int = MAX_LINE_BYTES):
        self.max_line = max_line
        self._parts: list[bytes] = []
        self._size = 0
        self._skipping = False  # a line already given out cut: drop bytes up to its newline

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bool]]:
        start, end = 0, len(data)
        while start < end:
            newline = data.find(b"\n", start)
            stop = end if newline < 0 else newline
            if not self._skipping:
                piece = data[start:stop]
                room = self.max_line - self._size
                if len(piece) > room:
                    self._parts.append(piece[:room])
                    yield self._take(), True
                    self._skipping = True
                elif piece:
                    self._parts.append(piece)
                    self._size += len(piece)
            if newline < 0:
                return
            if self._skipping:
                self._skipping = False
            else:
                yield self._take(), False
            start = newline + 1

    def rest(self) -> bytes | None:
        """The last line when the output did not end with a newline; None when nothing is pending."""
        if self._skipping or not self._parts:
            return None
        return self._take()

    def _take(self) -> bytes:
        line = b"".join(self._parts)
        self._parts, self._size = [], 0
        return line


class OutputCap:
    """Keeps count of what one command's output has kept: `admit(n)` True while MAX_OUTPUT_BYTES are not spent;
    what is refused is counted, and `note()` says how much that was."""

    def __init__(self, limit: int = MAX_OUTPUT_BYTES):
        self.limit = limit
        self.kept = 0
        self.dropped_bytes = 0
        self.dropped_lines = 0
        self._full = False  # once a line did not fit, none after it is kept (the output keeps its order)

    def add_dropped(self, size: int, lines: int) -> None:
        """Output another cap refused (a step's), said in this one's note."""
        self.dropped_bytes += size
        self.dropped_lines += lines

    def admit(self, size: int) -> bool:
        if not self._full and self.kept + size <= self.limit:
            self.kept += size
            return True
        self._full = True
        self.dropped_bytes += size
        self.dropped_lines += 1
        return False

    def note(self) -> str | None:
        if not self.dropped_lines:
            return None
        return (f"[{self.dropped_bytes} more bytes in {self.dropped_lines} lines not kept: output is capped at "
                f"{self.limit >> 20} MiB]")


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
    wall_s: float = 0.0  # from start to the end of its output
    dropped_bytes: int = 0  # output past MAX_OUTPUT_BYTES: not kept, not emitted
    dropped_lines: int = 0


@dataclass
class StepControl:
    """When a step must stop (a deadline, a cancel flag) and what happens to each line it prints."""

    deadline: float  # time.monotonic() value
    cancel: threading.Event = field(default_factory=threading.Event)
    emit: Callable[[str], None] | None = None  # lines not captured; None: only kept in StepOutcome.text
    redact: Callable[[str], str] = lambda text: text

    @classmethod
    def within(cls, timeout_s: float, **kwargs: Any) -> "StepControl":
        return cls(deadline=time.monotonic() + timeout_s, **kwargs)


def engine_is_local(engine: Any) -> bool:
    """Whether the engine's PIDs are this host's: a local socket, not ssh:// or tcp://."""
    host = str(getattr(engine, "docker_host", "") or "")
    return host.startswith(_LOCAL_SCHEMES) or "://" not in host and host.startswith("/")


def end_container_process(engine: Any, pid: int, container_id: str) -> bool:
    """SIGKILL host PID `pid` (its process group when it leads one) only when it is that container's.

    True when it was signalled or had already ended; False when mltop may not or cannot end it.
    """
    if pid <= 0:
        return True  # the engine reports 0 once the process has ended
    if not engine_is_local(engine):
        log.info("not signalling PID %s: engine %s is not local, the PID is another host's", pid,
                 getattr(engine, "docker_host", "?"))
        return False
    identity = identity_of_pid(pid)
    if identity is None or identity.container_id != container_id:
        log.warning("not signalling PID %s: /proc/%s/cgroup does not name container %s (it names %s)",
                    pid, pid, container_id[:12], identity.container_id[:12] if identity else "no container")
        return False
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError as exc:
        log.warning("could not end PID %s of container %s: %s", pid, container_id[:12], exc)
        return False
    return True


def _end_exec(engine: Any, exec_id: str, container_id: str) -> bool:
    try:
        pid = int(engine.client.api.exec_inspect(exec_id).get("Pid") or 0)
    except Exception:
        log.warning("could not inspect exec %s to end it", exec_id[:12], exc_info=True)
        return False
    return end_container_process(engine, pid, container_id)


def _exec_exit_code(engine: Any, exec_id: str) -> int | None:
    for _ in range(20):
        try:
            info = engine.client.api.exec_inspect(exec_id)
        except Exception:
            log.debug("exec_inspect %s failed", exec_id[:12], exc_info=True)
            return None
        if not info.get("Running"):
            return info.get("ExitCode")
        time.sleep(0.05)
    return None


def exec_in_container(engine: Any, container_id: str, argv: Sequence[str], control: StepControl, *,
                      capture_stdout: bool = False) -> StepOutcome:
    """`docker exec` argv in the container, streaming its output (stdout captured when asked). Nothing is
    exec'd under --no-exec / MLTOP_NO_EXEC=1: the registry's `refusal` decides that before any work starts;
    this is the last guard, for a caller that forgot to ask."""
    forbidden = no_exec_reason()
    if forbidden:
        log.info("exec %s in %s refused: %s", argv[:1], container_id[:12], forbidden)
        return StepOutcome(error=forbidden)
    if getattr(engine, "kind", None) == "cri":  # a pod container: its runtime's ExecSync (below)
        return exec_sync(engine, container_id, argv, control, capture_stdout=capture_stdout)
    started = time.monotonic()
    try:
        exec_id = engine.call(
            lambda c: c.api.exec_create(container_id, list(argv), stdout=True, stderr=True, tty=False)
        )["Id"]
        stream = engine.call(lambda c: c.api.exec_start(exec_id, stream=True, demux=True))
    except Exception as exc:
        text = str(getattr(exc, "message", None) or getattr(exc, "explanation", None) or exc)
        log.info("docker exec %s in %s failed: %s", argv[:1], container_id[:12], text)
        return StepOutcome(error=control.redact(text), not_found=bool(_NOT_FOUND.search(text)))

    def chunks() -> Iterator[tuple[int, bytes]]:
        for out, err in stream:
            if out:
                yield 1, out
            if err:
                yield 2, err

    def stop() -> bool:
        ended = _end_exec(engine, exec_id, container_id)
        try:
            stream.close()
        except Exception:
            log.debug("closing the exec stream failed", exc_info=True)
        return ended

    outcome = _pump(chunks, stop, control, capture_stdout)
    outcome.wall_s = time.monotonic() - started
    outcome.exit_code = _exec_exit_code(engine, exec_id)
    if outcome.exit_code in (126, 127) and _NOT_FOUND.search(outcome.text):
        outcome.not_found = True
    return outcome


def run_on_host(argv: Sequence[str], control: StepControl, env: Mapping[str, str] | None = None) -> StepOutcome:
    """A host subprocess (argv) in its own session, stdout and stderr merged, streamed line by line."""
    started = time.monotonic()
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
            os.killpg(proc.pid, signal.SIGKILL)  # our own child's session: always ours to end
        except OSError:
            pass  # it ended on its own meanwhile
        return True

    try:
        outcome = _pump(chunks, stop, control, capture_stdout=False)
    finally:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stop()
            proc.wait()
        proc.stdout.close()
    outcome.wall_s = time.monotonic() - started
    outcome.exit_code = proc.returncode
    return outcome


def _pump(chunks: Callable[[], Iterator[tuple[int, bytes]]], stop: Callable[[], bool], control: StepControl,
          capture_stdout: bool) -> StepOutcome:
    """Read chunks on a reader thread; turn them into lines here, watching for cancel and the deadline."""
    q: queue.Queue = queue.Queue()

    def reader() -> None:
        try:
            for item in chunks():
                q.put(item)
        except Exception as exc:  # the stream was closed under us, or the engine went away
            q.put(("error", exc))
        finally:
            q.put(_EOF)

    threading.Thread(target=reader, name="mltop-step-reader", daemon=True).start()
    outcome = StepOutcome()
    splitters = {1: LineSplitter(), 2: LineSplitter()}
    cap = OutputCap()
    captured: list[str] = []
    text: list[str] = []
    stopping_since: float | None = None

    def take(stream: int, line_bytes: bytes, cut: bool = False) -> None:
        if not cap.admit(len(line_bytes) + 1):
            return  # past the cap: counted, said once at the end
        line = line_bytes.decode("utf-8", errors="replace").rstrip("\r") + (CUT_MARK if cut else "")
        if capture_stdout and stream == 1:
            captured.append(line)
        elif control.emit is not None:
            control.emit(line)
        text.append(control.redact(line))

    while True:
        if stopping_since is None and (control.cancel.is_set() or time.monotonic() >= control.deadline):
            outcome.cancelled = control.cancel.is_set()
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
                log.info("the output stream ended with an error: %r", data)
                outcome.error = control.redact(f"{type(data).__name__}: {data}")
            continue
        for line, cut in splitters[stream].feed(data):
            take(stream, line, cut)
    for stream, splitter in splitters.items():
        rest = splitter.rest()
        if rest:
            take(stream, rest)
    outcome.dropped_bytes, outcome.dropped_lines = cap.dropped_bytes, cap.dropped_lines
    dropped = cap.note()
    if dropped:  # in the text; an ActionRun adds the counts to its own cap, which says them once
        text.append(dropped)
    outcome.stdout = "\n".join(captured)
    outcome.text = "\n".join(text)
    return outcome


# --------------------------------------------------------------------------- a pod container: CRI ExecSync
#
# ExecSync answers once, when the command ends, with its whole stdout and stderr: lines arrive then (stdout first,
# then stderr), not as they are printed. Nothing is signalled here: the runtime ends an exec past the request's
# `timeout` and one whose call is cancelled (containerd kills it with SIGKILL), so mltop never sends a signal to a
# PID it did not start.

def _capped(data: bytes, stream: str) -> bytes:
    """Each of ExecSync's stdout and stderr cut at MAX_OUTPUT_BYTES before it is split (the rest said)."""
    if len(data) <= MAX_OUTPUT_BYTES:
        return data
    cut = data[:MAX_OUTPUT_BYTES]
    return cut + (f"\n[{stream}: {len(data) - MAX_OUTPUT_BYTES} more bytes not kept: output is capped at "
                  f"{MAX_OUTPUT_BYTES >> 20} MiB]\n").encode()


def exec_sync(target: Any, container_id: str, argv: Sequence[str], control: StepControl, *,
              capture_stdout: bool = False) -> StepOutcome:
    """`target`: a probes.cri.access.CriContainer."""
    import grpc

    from mltop.probes.cri.client import explain_rpc_error

    started = time.monotonic()
    timeout_s = max(1, math.ceil(control.deadline - started))
    future = target.client.exec_sync_future(container_id, list(argv), timeout_s)
    answer: dict[str, Any] = {}

    def chunks() -> Iterator[tuple[int, bytes]]:
        try:
            response = future.result()
        except grpc.FutureCancelledError:
            return
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            answer["error"] = explain_rpc_error(exc, target.endpoint, "ExecSync").message
            return
        answer["exit_code"] = response.exit_code
        if response.stdout:
            yield 1, _capped(response.stdout, "stdout")
        if response.stderr:
            yield 2, _capped(response.stderr, "stderr")

    def stop() -> bool:
        future.cancel()  # the runtime kills the exec whose call ended
        return True

    outcome = _pump(chunks, stop, control, capture_stdout)
    outcome.wall_s = time.monotonic() - started
    outcome.exit_code = answer.get("exit_code")
    error = answer.get("error")
    if error and not (outcome.timed_out or outcome.cancelled):
        if "deadline" in error.lower() or "timeout" in error.lower():
            outcome.timed_out = True
        else:
            outcome.error = control.redact(error)
            outcome.not_found = bool(_NOT_FOUND.search(error))
    if outcome.exit_code in (126, 127) and _NOT_FOUND.search(outcome.text):
        outcome.not_found = True
    return outcome
