"""ActionContext: what an action's function is handed (the container, the snapshot, output and commands).

The actions (nvidia_smi.py, py_spy.py, device_check.py) are written against this protocol, not against the
ActionRun that implements it (run.py), so the import order is one way: run -> registry -> the actions ->
context. A test can hand an action a context of its own.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from mltop.probes.model import ContainerSample, Snapshot

from .runner import StepOutcome


class ActionContext(Protocol):
    """One action against one container, as the action's function sees it."""

    snapshot: Snapshot  # the sweep the action was started from: processes, the host's GPUs
    container: ContainerSample | None  # None only before the run checked it: the function always gets one
    pid: int | None  # py-spy: the host PID asked for (None: the busiest Python process)
    all_processes: bool  # py-spy: every Python process, not only the busiest
    py_spy: str | None  # py-spy: the executable to use (None: find it)

    @property
    def lines(self) -> list[str]:
        """The (redacted) output lines so far."""
        ...

    def emit(self, line: str) -> None:
        """One output line: redacted, kept and shown as it comes."""
        ...

    def exec_in_container(self, argv: Sequence[str], *, capture_stdout: bool = False,
                          shown_as: Sequence[str] | None = None) -> StepOutcome:
        """`docker exec` argv in the container, streaming its output (stdout captured when asked)."""
        ...

    def run_on_host(self, argv: Sequence[str], env: dict[str, str] | None = None) -> StepOutcome:
        """A host subprocess (argv), stdout and stderr merged, streamed line by line."""
        ...
