"""py-spy dump of a container's busiest Python process (a host subprocess, by host PID), and why it failed."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

from mltop.probes.model import ContainerSample, ProcessSample

from ..one_line import one_line
from .context import ActionContext
from .pid_check import still_in_container
from .results import FAILED, OK, UNAVAILABLE, ActionOutcome, Finished, end_if_interrupted, require_running


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
    found = shutil.which("py-spy")
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
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


def run_py_spy(run: ActionContext) -> ActionOutcome:
    container = run.container
    assert container is not None
    require_running(container)
    exe = find_py_spy(run.py_spy)
    if exe is None:
        raise Finished(UNAVAILABLE, PY_SPY_MISSING)
    candidates = python_processes(container)
    data: dict[str, Any] = {"candidates": [
        {"host_pid": p.host_pid, "container_pid": p.container_pid, "cpu_percent": p.cpu_percent,
         "cmdline": p.cmdline[:300]} for p in candidates]}
    if run.pid is not None:
        chosen = [p for p in container.processes if p.host_pid == run.pid]
        if not chosen:
            raise Finished(UNAVAILABLE, f"Host PID {run.pid} is not a process of {container.name}. Its Python "
                                         "processes: " + ("; ".join(_process_line(p) for p in candidates)
                                                          or "none"), data=data)
    elif not container.processes:
        limits = " ".join(run.snapshot.host.limitations)
        raise Finished(UNAVAILABLE, f"mltop sees no processes of {container.name}, so there is nothing to attach "
                                     f"to. {limits}".strip(), data=data)
    elif not candidates:
        seen = "; ".join(one_line(p.cmdline, 80) for p in container.processes[:5])
        raise Finished(UNAVAILABLE, f"{container.name} runs no Python process (its processes: {seen}). Pick "
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
        data["pid"] = proc.host_pid
        moved = still_in_container(proc.host_pid, container, proc.start_ticks)  # asked last, right before the attach
        if moved and not run.all_processes:
            raise Finished(UNAVAILABLE, moved, data=data)
        if moved:  # --all: the others are still dumped
            run.emit(f"   {moved}")
            failures.append(moved)
            statuses.append(False)
            continue
        outcome = run.run_on_host([exe, "dump", "--pid", str(proc.host_pid)], env=env)
        end_if_interrupted(outcome, "py-spy")
        if outcome.error:
            raise Finished(UNAVAILABLE if outcome.not_found else FAILED,
                            PY_SPY_MISSING if outcome.not_found else outcome.error, data=data)
        last_code = outcome.exit_code
        statuses.append(outcome.exit_code == 0)
        if outcome.exit_code != 0:
            failures.append(explain_py_spy_failure(outcome.text, ptrace_facts(), outcome.exit_code))
    data["pids"] = [p.host_pid for p in chosen]
    if all(statuses):
        return OK, None, last_code, data
    return FAILED, " ".join(dict.fromkeys(failures)), last_code, data

