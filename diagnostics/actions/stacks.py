"""Which rank is stuck: py-spy dumps of every Python process of the chosen containers, grouped by identical stack.

In a hung collective every rank but one waits in the same call (`all_reduce`); the one elsewhere is the one to
look at. A stack is compared as its frames' (function, file), not line numbers or addresses, so ranks at the
same place in the same code match. The rank is the process's RANK (else LOCAL_RANK) environment variable, else
the container's, else the container's name.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable

from mltop.probes.model import ContainerSample, ProcessSample

from .pid_check import still_in_container
from .py_spy import PY_SPY_MISSING, explain_py_spy_failure, find_py_spy, ptrace_facts, python_processes
from ..one_line import one_line

DUMP_TIMEOUT_S = 30.0
OUTPUT_CAP = 1 << 20  # bytes of a py-spy dump read
MAX_FRAMES = 256  # frames of a thread kept
MAX_PROCESSES = 256  # processes dumped in one call
ENVIRON_CAP = 1 << 20
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")

Frame = tuple[str, str]  # (function, file)


@dataclass(frozen=True)
class ProcessStack:
    container: str
    host_pid: int
    rank: str  # "3", or the container's name when no rank variable says
    frames: tuple[Frame, ...]  # the main thread's, innermost first; () when the dump failed
    error: str | None = None  # why py-spy could not dump it

    @property
    def where(self) -> str:
        """The innermost frame, as `function (file)`."""
        return f"{self.frames[0][0]} ({self.frames[0][1]})" if self.frames else "?"


@dataclass(frozen=True)
class StackGroup:
    frames: tuple[Frame, ...]
    members: tuple[ProcessStack, ...]


@dataclass(frozen=True)
class StackReport:
    groups: tuple[StackGroup, ...]  # largest first
    failed: tuple[ProcessStack, ...] = ()
    notes: tuple[str, ...] = ()
    outliers: tuple[ProcessStack, ...] = field(default=())  # the processes outside the largest group

    def to_json(self) -> dict:
        def member(s: ProcessStack) -> dict:
            return {"container": s.container, "host_pid": s.host_pid, "rank": s.rank, "where": s.where}

        return {"groups": [{"frames": [{"function": f, "file": p} for f, p in g.frames],
                            "members": [member(s) for s in g.members]} for g in self.groups],
                "outliers": [member(s) for s in self.outliers],
                "failed": [{**member(s), "error": s.error} for s in self.failed], "notes": list(self.notes)}


def parse_main_thread(dump: str) -> tuple[Frame, ...]:
    """The frames of the dump's main thread (`Thread N (...): "MainThread"`, else its first thread), innermost
    first, as (function, file) with the line number dropped. Linear: one pass over lines, fields by partition."""
    threads: list[tuple[str, list[Frame]]] = []
    for line in dump.splitlines():
        if line.startswith("Thread "):
            threads.append((line, []))
            continue
        if not threads or not line.startswith("    ") or len(threads[-1][1]) >= MAX_FRAMES:
            continue
        text = line.strip()
        function, sep, rest = text.partition(" (")
        if not sep:
            continue
        location = rest.rsplit(")", 1)[0]
        path, _, lineno = location.rpartition(":")
        file = path if lineno.isdigit() else location
        threads[-1][1].append((function[:200], file[:400]))
    if not threads:
        return ()
    main = next((frames for head, frames in threads if head.endswith('"MainThread"')), threads[0][1])
    return tuple(main)


def process_rank(pid: int, container: ContainerSample, proc: str = "/proc") -> str:
    try:
        with open(f"{proc}/{pid}/environ", "rb") as f:
            environ = f.read(ENVIRON_CAP).split(b"\0")
    except OSError:
        environ = []
    values = {}
    for item in environ:
        name, sep, value = item.partition(b"=")
        if sep:
            values[name.decode("ascii", "replace")] = value.decode("utf-8", "replace")
    for name in RANK_VARIABLES:
        value = values.get(name) or container.config.env_value(name)
        if value:
            return one_line(value, 20)
    return container.name


def dump(exe: str, pid: int, timeout_s: float = DUMP_TIMEOUT_S) -> tuple[str | None, str | None]:
    """(py-spy dump's output, None) or (None, why it failed)."""
    env = {**os.environ, "RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"}
    try:
        done = subprocess.run([exe, "dump", "--pid", str(pid)], capture_output=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return None, f"py-spy dump did not finish in {timeout_s:g} s"
    except OSError as exc:
        return None, f"py-spy could not run: {exc}"
    out = done.stdout[:OUTPUT_CAP].decode("utf-8", "replace")
    if done.returncode != 0:
        return None, explain_py_spy_failure(out + done.stderr[:4096].decode("utf-8", "replace"), ptrace_facts(),
                                            done.returncode)
    return out, None


def group(stacks: Iterable[ProcessStack], notes: tuple[str, ...] = ()) -> StackReport:
    """Processes grouped by identical main-thread stack, largest group first; the rest are the outliers."""
    stacks = list(stacks)
    failed = tuple(s for s in stacks if s.error is not None)
    groups: dict[tuple[Frame, ...], list[ProcessStack]] = {}
    for s in stacks:
        if s.error is None:
            groups.setdefault(s.frames, []).append(s)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1][0].rank))
    out = tuple(StackGroup(frames, tuple(sorted(members, key=lambda s: s.rank))) for frames, members in ordered)
    outliers = tuple(s for g in out[1:] for s in g.members) if len(out) > 1 else ()
    return StackReport(out, failed, notes, outliers)


def collect_stacks(containers: Iterable[ContainerSample], py_spy: str | None = None,
                   timeout_s: float = DUMP_TIMEOUT_S) -> StackReport:
    """Dump every Python process of `containers` (running ones) with py-spy, a few at a time, and group them."""
    exe = find_py_spy(py_spy)
    if exe is None:
        return StackReport((), (), (PY_SPY_MISSING,))
    targets: list[tuple[ContainerSample, ProcessSample]] = []
    notes = []
    for c in containers:
        if not c.running:
            continue
        procs = python_processes(c)
        if not procs:
            notes.append(f"{c.name}: no Python process seen")
        targets += [(c, p) for p in procs]
    targets = targets[:MAX_PROCESSES]

    def one(target: tuple[ContainerSample, ProcessSample]) -> ProcessStack:
        c, p = target
        moved = still_in_container(p.host_pid, c, p.start_ticks)  # the snapshot's PID may be another's by now
        if moved is not None:
            return ProcessStack(c.name, p.host_pid, c.name, (), moved)
        text, error = dump(exe, p.host_pid, timeout_s)
        frames = parse_main_thread(text) if text is not None else ()
        return ProcessStack(c.name, p.host_pid, process_rank(p.host_pid, c), frames, error)

    with ThreadPoolExecutor(max_workers=4) as pool:
        stacks = list(pool.map(one, targets))
    return group(stacks, tuple(notes))


def render(report: StackReport) -> str:
    """The report as text: who differs first, then each group with its frames (innermost first)."""
    lines = []
    ranks = lambda members: ", ".join(f"rank {s.rank}" if s.rank != s.container else s.container for s in members)
    if report.outliers and report.groups:
        main = report.groups[0]
        lines.append(f"{ranks(report.outliers)} differ(s) from the other {len(main.members)}: "
                     + "; ".join(f"rank {s.rank} ({s.container}, host PID {s.host_pid}) in {s.where}"
                                 for s in report.outliers))
        lines.append(f"the other {len(main.members)} ({ranks(main.members)}) wait in "
                     f"{main.members[0].where}")
    elif report.groups:
        lines.append(f"all {len(report.groups[0].members)} Python processes have the same stack, in "
                     f"{report.groups[0].members[0].where}")
    for i, g in enumerate(report.groups, 1):
        lines.append("")
        lines.append(f"group {i}: {ranks(g.members)}")
        for function, file in g.frames[:30]:
            lines.append(f"    {one_line(function, 120)} ({one_line(file, 160)})")
    for s in report.failed:
        lines.append(f"not dumped: {s.container} host PID {s.host_pid}: {s.error}")
    lines.extend(report.notes)
    return "\n".join(lines) + "\n"
