"""The one list of actions: name, dashboard key, title, default timeout, the function that runs it, and what it
does to the container. Also the in-container work that has no key (the read test, the background device check),
and the one question every door asks before any of it runs: `refusal(work, source)`.

`mltop run`, the dashboard's keys and the action screen all read ACTIONS; nothing else names an action.

Who may act is decided here and nowhere else. Each piece of work says what it does to the container (`reaches`:
EXEC, ATTACH, SIGNAL, STOP); each rule in RULES looks at that and at where the caller stands (the source, the
process's --no-exec / MLTOP_NO_EXEC, its --read-only / MLTOP_READ_ONLY) and refuses in the words the user reads.
The dashboard, `mltop run`, `mltop kill|stop|restart`, the doctor's read test and device check and the
background device check all ask `refusal`; the runner refuses a docker exec under --no-exec again as a last
guard. --read-only (no exec, no attach, no signal, no stop) is one field of Standing and one rule.

--no-exec covers py-spy: it does not exec into the container, but it attaches to the container's processes from
the host (ptrace) and reads their memory, which is the reach into a container the flag forbids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Union

from .context import ActionContext
from .device_check import run_device_check
from .switches import NO_EXEC_ENV, READ_ONLY_ENV, no_exec_reason, read_only_reason  # noqa: F401  (the rules: below)
from .nvidia_smi import run_nvidia_smi
from .py_spy import run_py_spy
from .stacks_action import run_stacks
from .results import ActionOutcome

# What a piece of work does to the container as it runs now (an Action's or ContainerWork's `reaches`).
EXEC = "exec"  # runs a command inside it: docker exec, a pod container's CRI ExecSync
ATTACH = "attach"  # attaches to its processes from the host by their host PID (ptrace: py-spy)
SIGNAL = "signal"  # sends a signal to one of its processes
STOP = "stop"  # stops, restarts or removes it
_DOES = {EXEC: "runs a command inside the container", ATTACH: "attaches to the container's processes from the host",
         SIGNAL: "signals the container's processes", STOP: "stops or restarts the container"}

NO_EXEC_REACHES = frozenset({EXEC, ATTACH})  # what --no-exec forbids


@dataclass(frozen=True)
class Action:
    name: str  # what `mltop run NAME` takes and an ActionResult's `action` holds
    key: str  # the dashboard key that opens it on the selected container
    title: str  # the action screen's title
    key_help: str  # the key's description in the footer, the help screen and the command palette
    timeout_s: float  # default; `mltop run --timeout` overrides it
    run: Callable[[ActionContext], ActionOutcome]
    summary: str  # one line for `mltop run --help`
    # What it does to the container as it runs now (EXEC, ATTACH, ...): the rules refuse by it. Every action
    # says so itself: there is no other list.
    reaches: frozenset[str]

    @property
    def needs_live_container(self) -> bool:
        """It acts on the container as it runs now: a source that cannot act (a recording, a Prometheus)
        refuses it."""
        return bool(self.reaches)


@dataclass(frozen=True)
class ContainerWork:
    """In-container work without a key of its own, held to the same rule as the actions."""

    name: str
    title: str
    reaches: frozenset[str]

    @property
    def needs_live_container(self) -> bool:
        return bool(self.reaches)


NVIDIA_SMI = "nvidia-smi"
PY_SPY = "py-spy"
DEVICE_CHECK = "device-check"
STACKS = "stacks"

ACTIONS: tuple[Action, ...] = (
    Action(NVIDIA_SMI, "n", "nvidia-smi", "nvidia-smi", 30.0, run_nvidia_smi,
           "nvidia-smi inside the container, else the host's view of its GPUs", reaches=frozenset({EXEC})),
    Action(PY_SPY, "p", "py-spy dump", "py-spy", 30.0, run_py_spy, "dump the stacks of its busiest Python process",
           reaches=frozenset({ATTACH})),  # ptrace by host PID: a recorded PID may be another process by now
    Action(DEVICE_CHECK, "f", "Framework device check", "Framework check", 180.0, run_device_check,
           "which device each ML framework in it really uses", reaches=frozenset({EXEC})),
    Action(STACKS, "K", "Stacks of the job's ranks", "Rank stacks", 120.0, run_stacks,
           "py-spy dumps of its and its job's other ranks' Python processes, grouped: which rank is stuck",
           reaches=frozenset({ATTACH})),  # ptrace by host PID, as py-spy dump
)
BY_NAME: dict[str, Action] = {a.name: a for a in ACTIONS}
ACTION_NAMES = tuple(BY_NAME)

# `mltop doctor --io-test`: dd with O_DIRECT by docker exec (read_test.py).
READ_TEST = ContainerWork("io.read_test", "The read test", reaches=frozenset({EXEC}))
# The dashboard's device check without a key press (doctor.BackgroundDeviceChecks), an ActionRun of DEVICE_CHECK.
BACKGROUND_DEVICE_CHECK = ContainerWork("device-check.background", "The background device check",
                                        reaches=frozenset({EXEC}))
# The dashboard's `k` and `mltop kill|stop|restart` (acts.py): a signal to one process, a stop or restart of the
# container through its runtime.
SIGNAL_PROCESS = ContainerWork("signal", "Sending a signal", reaches=frozenset({SIGNAL}))
STOP_CONTAINER = ContainerWork("stop", "Stopping the container", reaches=frozenset({STOP}))
RESTART_CONTAINER = ContainerWork("restart", "Restarting the container", reaches=frozenset({STOP}))
CONTAINER_WORK: tuple[ContainerWork, ...] = (READ_TEST, BACKGROUND_DEVICE_CHECK, SIGNAL_PROCESS, STOP_CONTAINER,
                                             RESTART_CONTAINER)

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


@dataclass(frozen=True)
class Standing:
    """Where the caller stands, as the rules see it: what the source cannot do and what the process forbids."""

    cannot_act: str | None = None  # the source's cannot_act: a recording, a Prometheus
    act_command: str = "mltop"  # the command that acts on these containers where they run
    no_exec: str | None = None  # no_exec_reason(): --no-exec / MLTOP_NO_EXEC
    read_only: str | None = None  # read_only_reason(): --read-only / MLTOP_READ_ONLY

    @classmethod
    def of(cls, source: ActingSource | None = None, *, no_exec: bool = False,
           read_only: bool = False) -> "Standing":
        """`source` None: the live containers of this host (`mltop run`, the doctor)."""
        return cls(cannot_act=getattr(source, "cannot_act", None) if source is not None else None,
                   act_command=getattr(source, "act_command", None) or "mltop",
                   no_exec=no_exec_reason(no_exec), read_only=read_only_reason(read_only))


Rule = Callable[[InContainerWork, Standing], "str | None"]


def _source_cannot_act(work: InContainerWork, standing: Standing) -> str | None:
    if not standing.cannot_act or not work.needs_live_container:
        return None
    if work.reaches & {SIGNAL, STOP}:
        return (f"{standing.cannot_act}: {work.title} {' and '.join(_DOES[r] for r in sorted(work.reaches))}, "
                f"which needs the live container. Run `{standing.act_command}` to act on it now.")
    live_only = ", ".join(a.key_help[:1].lower() + a.key_help[1:] for a in ACTIONS if a.needs_live_container)
    return (f"{standing.cannot_act}: in-container actions ({live_only}) need the live container. "
            f"Run `{standing.act_command}` to act on it now.")


def _no_exec(work: InContainerWork, standing: Standing) -> str | None:
    reach = sorted(work.reaches & NO_EXEC_REACHES)
    if not standing.no_exec or not reach:
        return None
    return f"{standing.no_exec}: {work.title} {' and '.join(_DOES[r] for r in reach)}."


def _read_only(work: InContainerWork, standing: Standing) -> str | None:
    if not standing.read_only or not work.reaches:
        return None
    return f"{standing.read_only}: {work.title} {' and '.join(_DOES[r] for r in sorted(work.reaches))}."


# Asked in order; the first that refuses says why. A new policy is one more rule here.
RULES: tuple[Rule, ...] = (_source_cannot_act, _read_only, _no_exec)


def refusal(work: InContainerWork | str, source: ActingSource | None = None, *,
            no_exec: bool = False, read_only: bool = False) -> str | None:
    """Why `work` (an Action, ContainerWork or action name) may not run on the containers `source` shows (None:
    this host's live containers), in the words the user reads; None when it may. `no_exec`: --no-exec given
    to this call (MLTOP_NO_EXEC is read in any case); `read_only` likewise for --read-only / MLTOP_READ_ONLY."""
    if isinstance(work, str):
        work = action_named(work)
    standing = Standing.of(source, no_exec=no_exec, read_only=read_only)
    for rule in RULES:
        why = rule(work, standing)
        if why:
            return why
    return None
