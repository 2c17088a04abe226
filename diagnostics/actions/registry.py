"""The one list of actions: name, dashboard key, title, default timeout and the function that runs it.

`mltop run`, the dashboard's keys and the action screen all read ACTIONS; nothing else names an action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .device_check import run_device_check
from .nvidia_smi import run_nvidia_smi
from .py_spy import run_py_spy
from .results import ActionOutcome

if TYPE_CHECKING:
    from .run import ActionRun


@dataclass(frozen=True)
class Action:
    name: str  # what `mltop run NAME` takes and an ActionResult's `action` holds
    key: str  # the dashboard key that opens it on the selected container
    title: str  # the action screen's title
    key_help: str  # the key's description in the footer, the help screen and the command palette
    timeout_s: float  # default; `mltop run --timeout` overrides it
    run: Callable[["ActionRun"], ActionOutcome]
    summary: str  # one line for `mltop run --help`


NVIDIA_SMI = "nvidia-smi"
PY_SPY = "py-spy"
DEVICE_CHECK = "device-check"

ACTIONS: tuple[Action, ...] = (
    Action(NVIDIA_SMI, "n", "nvidia-smi", "nvidia-smi", 30.0, run_nvidia_smi,
           "nvidia-smi inside the container, else the host's view of its GPUs"),
    Action(PY_SPY, "p", "py-spy dump", "py-spy", 30.0, run_py_spy, "dump the stacks of its busiest Python process"),
    Action(DEVICE_CHECK, "f", "Framework device check", "Framework check", 180.0, run_device_check,
           "which device each ML framework in it really uses"),
)
BY_NAME: dict[str, Action] = {a.name: a for a in ACTIONS}
ACTION_NAMES = tuple(BY_NAME)


def action_named(name: str) -> Action:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown action {name!r}; expected one of {', '.join(ACTION_NAMES)}") from None
