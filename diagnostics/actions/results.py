"""How an action ends: its statuses, the frozen ActionResult, the session's ActionLog, and the early exits."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from mltop.probes.model import ContainerSample

from .runner import StepOutcome

OK = "ok"
FAILED = "failed"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
UNAVAILABLE = "unavailable"

# (status, explanation, exit code, data): what an action's run function returns
ActionOutcome = tuple[str, "str | None", "int | None", dict]


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


class Finished(Exception):
    """Raised inside an action to end it with a given result (status, explanation, ...)."""

    def __init__(self, status: str, explanation: str | None = None, exit_code: int | None = None,
                 data: Mapping[str, Any] | None = None):
        super().__init__(explanation or status)
        self.status = status
        self.explanation = explanation
        self.exit_code = exit_code
        self.data = dict(data or {})


def end_if_interrupted(outcome: StepOutcome, what: str) -> None:
    """Raise the matching Finished when a step was cancelled or timed out."""
    still = (" It may still be running inside the container: mltop could not end it from here."
             if outcome.still_running else "")
    if outcome.cancelled:
        raise Finished(CANCELLED, f"Cancelled.{still}", outcome.exit_code)
    if outcome.timed_out:
        raise Finished(TIMEOUT, f"{what} did not finish in time and was stopped.{still}", outcome.exit_code)


def require_running(container: ContainerSample) -> None:
    if not container.running:
        raise Finished(UNAVAILABLE, f"{container.name} is not running (its status is {container.status}): "
                                    "there is nothing to run a command in. Start it and try again.")
