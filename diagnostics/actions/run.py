"""ActionRun: one action against one container, run to its end in the calling thread; cancel from any thread.

First the action registry is asked whether the action may run at all (`refusal`: --no-exec, a source that
cannot act); a refused run ends `unavailable` with its words and touches nothing. Every line is redacted (token
shapes, then the container's own secret values) before anyone sees it, and the output is capped (runner.py).
When the container's secrets cannot be read the action does not run: its output could echo a secret mltop would
not recognise, so the result says "not shown: secrets could not be read" instead (fail closed).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Sequence

from mltop.probes.cri.access import CRI_RUNTIMES, locate
from mltop.probes.model import ContainerSample, Snapshot
from mltop.probes.redaction import SECRETS_UNREADABLE, ContainerSecrets, redact_tree

from . import runner
from .registry import ActingSource, action_named, refusal
from .results import CANCELLED, FAILED, OK, TIMEOUT, UNAVAILABLE, ActionLog, ActionResult, Finished
from .runner import MAX_LINE_BYTES, OutputCap, StepControl, StepOutcome, cut_line

log = logging.getLogger(__name__)

LineCallback = Callable[[str], None]


def exec_target(engine: Any, container: ContainerSample) -> Any:
    """Where a command in `container` runs: the Docker engine, or for a container of a CRI runtime that runtime
    (its ExecSync); Finished(UNAVAILABLE) when that runtime cannot be found."""
    if container.runtime not in CRI_RUNTIMES:
        off = getattr(engine, "disabled", None)
        if off:  # --docker-host none: no docker exec (a pod container's runtime still execs, below)
            raise Finished(UNAVAILABLE, f"{off}: mltop does not docker exec into {container.name}")
        return engine
    target, why = locate(container.id)
    if target is None:
        raise Finished(UNAVAILABLE, f"mltop could not reach the CRI runtime of {container.name} to exec in it: {why}")
    return target


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
        source: ActingSource | None = None,
        no_exec: bool = False,
    ):
        self.spec = action_named(action)
        self.action = action
        self.snapshot = snapshot
        self.container_key = container if isinstance(container, str) else container.id
        self.container = container if isinstance(container, ContainerSample) else snapshot.container(container)
        self.engine = engine
        self.timeout_s = float(timeout_s if timeout_s is not None else self.spec.timeout_s)
        self.on_line = on_line
        self.pid = pid
        self.all_processes = all_processes
        self.log = log
        self.py_spy = py_spy
        self.source = source  # what the snapshot came from (None: this host's live containers); asked by refusal
        self.no_exec = no_exec
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._lines: list[str] = []
        self._cap = OutputCap()  # runner.MAX_OUTPUT_BYTES kept in all, over every step of the action
        self._command: tuple[str, ...] = ()
        self._deadline = 0.0
        self._result: ActionResult | None = None
        self._thread: threading.Thread | None = None
        self._secrets = ContainerSecrets()
        self._target: Any = engine  # where its execs go: the Docker engine, or the pod container's CRI runtime

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
            refused = refusal(self.spec, self.source, no_exec=self.no_exec)  # the registry decides, before anything
            if refused:
                raise Finished(UNAVAILABLE, refused)
            if self.container is None:
                raise Finished(UNAVAILABLE, f"No container {self.container_key!r} in the snapshot: it may have "
                                            "been removed; refresh and pick it again.")
            self._target = exec_target(self.engine, self.container)
            self._secrets = self._target.container_secrets(self.container.id)
            if not self._secrets.known:
                raise Finished(UNAVAILABLE, f"Output {SECRETS_UNREADABLE}: mltop could not read the "
                                            f"environment of {self.container.name} ({self._secrets.error}), so "
                                            "it could not recognise a secret the action might print. Try again "
                                            "once the engine answers.")
            status, explanation, exit_code, data = self.spec.run(self)
        except Finished as end:
            status, explanation, exit_code, data = end.status, end.explanation, end.exit_code, end.data
        except Exception as exc:  # an engine error or a bug must end as a result, not kill the worker
            from mltop.probes.engine import EngineError

            log.warning("action %s in %s failed", self.action, self.container_key, exc_info=True)
            status = FAILED
            if isinstance(exc, EngineError):
                explanation = exc.message
            else:
                explanation = f"mltop could not run {self.action}: {type(exc).__name__}: {exc}"
        if status not in (TIMEOUT, CANCELLED):
            if self._cancel.is_set():
                status = CANCELLED
        dropped = self._cap.note()
        if dropped:
            self._lines.append(dropped)
            self._show(dropped)
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
            data=redact_tree(data, self._redact),
        )
        self._result = result
        if self._target is not self.engine:
            self._target.close()
        if self.log is not None:
            self.log.add(result)
        self._done.set()
        return result

    # -- helpers the actions use -------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return self._secrets.scrub(text)

    def emit(self, line: str) -> None:
        """One output line: cut at runner.MAX_LINE_BYTES, redacted, kept and handed to `on_line`, while the
        action's output is within runner.MAX_OUTPUT_BYTES."""
        line = line.rstrip("\r\n")
        if "\n" in line:
            for part in line.split("\n"):
                self.emit(part)
            return
        line = self._secrets.scrub(line, MAX_LINE_BYTES)  # escapes out, judged and cut to the cap, redacted
        if not self._cap.admit(len(line) + 1):
            return  # past the cap: neither kept nor shown; the last line says how much
        self._lines.append(line)
        self._show(line)

    def _show(self, line: str) -> None:
        if self.on_line is not None:
            try:
                self.on_line(line)
            except Exception:
                log.warning("the %s viewer failed on a line; the run goes on", self.action, exc_info=True)

    def _control(self) -> StepControl:
        return StepControl(deadline=self._deadline, cancel=self._cancel, emit=self.emit, redact=self._redact)

    def exec_in_container(self, argv: Sequence[str], *, capture_stdout: bool = False,
                          shown_as: Sequence[str] | None = None) -> StepOutcome:
        """`docker exec` argv in the container, streaming its output (stdout captured when asked)."""
        assert self.container is not None
        self._command = tuple(shown_as or argv)
        return self._counted(runner.exec_in_container(self._target, self.container.id, argv, self._control(),
                                                      capture_stdout=capture_stdout))

    def run_on_host(self, argv: Sequence[str], env: dict[str, str] | None = None) -> StepOutcome:
        """A host subprocess (argv), stdout and stderr merged, streamed line by line."""
        self._command = tuple(argv)
        return self._counted(runner.run_on_host(argv, self._control(), env=env))

    def _counted(self, outcome: StepOutcome) -> StepOutcome:
        self._cap.add_dropped(outcome.dropped_bytes, outcome.dropped_lines)  # what the step's cap refused
        return outcome
