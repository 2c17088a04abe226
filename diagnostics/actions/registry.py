"""The one list of actions: name, dashboard key, title, default timeout, the function that runs it, and whether
it needs the live container. Also the in-container work that has no key (the read test, the background device
check), and the one question every caller asks before any of it runs: `refusal(work, source)`.

`mltop run`, the dashboard's keys and the action screen all read ACTIONS; nothing else names an action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Union

from .context import ActionContext
from .device_check import run_device_check
from .nvidia_smi import run_nvidia_smi
from .py_spy import run_py_spy
from .stacks_action import run_stacks
from .results import ActionOutcome


@dataclass(frozen=True)
class Action:
    name: str  # what `mltop run NAME` takes and an ActionResult's `action` holds
    key: str  # the dashboard key that opens it on the selected container
    title: str  # the action screen's title
    key_help: str  # the key's description in the footer, the help screen and the command palette
    timeout_s: float  # default; `mltop run --timeout` overrides it
    run: Callable[[ActionContext], ActionOutcome]
    summary: str  # one line for `mltop run --help`
    # It execs in, attaches to or signals the container as it runs now: a source that cannot act (a
    # recording, a Prometheus) refuses it. Every action says so itself: there is no other list.
    needs_live_container: bool


@dataclass(frozen=True)
class ContainerWork:
    """In-container work without a key of its own, held to the same rule as the actions."""

    name: str
    title: str
    needs_live_container: bool


NVIDIA_SMI = "nvidia-smi"
PY_SPY = "py-spy"
DEVICE_CHECK = "device-check"
STACKS = "stacks"

ACTIONS: tuple[Action, ...] = (
    Action(NVIDIA_SMI, "n", "nvidia-smi", "nvidia-smi", 30.0, run_nvidia_smi,
           "nvidia-smi inside the container, else the host's view of its GPUs", needs_live_container=True),
    Action(PY_SPY, "p", "py-spy dump", "py-spy", 30.0, run_py_spy, "dump the stacks of its busiest Python process",
           needs_live_container=True),  # ptrace by host PID: a recorded PID may be another process by now
    Action(DEVICE_CHECK, "f", "Framework device check", "Framework check", 180.0, run_device_check,
           "which device each ML framework in it really uses", needs_live_container=True),
    Action(STACKS, "K", "Stacks of the job's ranks", "Rank stacks", 120.0, run_stacks,
           "py-spy dumps of its and its job's other ranks' Python processes, grouped: which rank is stuck",
           needs_live_container=True),
)
BY_NAME: dict[str, Action] = {a.name: a for a in ACTIONS}
ACTION_NAMES = tuple(BY_NAME)

# `mltop doctor --io-test`: dd with O_DIRECT by docker exec (read_test.py).
READ_TEST = ContainerWork("io.read_test", "the read test", needs_live_container=True)
# The dashboard's device check without a key press (doctor.BackgroundDeviceChecks), an ActionRun of DEVICE_CHECK.
BACKGROUND_DEVICE_CHECK = ContainerWork("device-check.background", "the background device check",
                                        needs_live_container=True)
CONTAINER_WORK: tuple[ContainerWork, ...] = (READ_TEST, BACKGROUND_DEVICE_CHECK)

InContainerWork = Union[Action, ContainerWork]


class ActingSource(Protocol):
    """What `refusal` asks of a snapshot source (probes.source.SnapshotSource)."""

    @property
    def cannot_act(self) -> str | None: ...

    # Optional: the command that acts on these containers where they run (default `mltop`; a fleet host
    # read from Prometheus says `ssh -t HOST mltop`).


def action_named(name: str) -> Action:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown action {name!r}; expected one of {', '.join(ACTION_NAMES)}") from None


def refusal(work: InContainerWork | str, source: ActingSource) -> str | None:
    """Why `work` (an Action, ContainerWork or action name) may not run on the containers `source` shows, in
    the words the user reads; None when it may. The source says whether it can act (`cannot_act`); the
    work says whether it needs to (`needs_live_container`)."""
    if isinstance(work, str):
        work = action_named(work)
    why = source.cannot_act
    if not why or not work.needs_live_container:
        return None
    live_only = ", ".join(a.key_help[:1].lower() + a.key_help[1:] for a in ACTIONS if a.needs_live_container)
    where = getattr(source, "act_command", None) or "mltop"  # a fleet host names the ssh command to its host
    return (f"{why}: in-container actions ({live_only}) need the live container. "
            f"Run `{where}` to act on it now.")
