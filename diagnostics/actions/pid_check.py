"""Is the process a snapshot saw still that process? Asked right before mltop attaches to it (py-spy) or signals
it (the dashboard's `k`, `mltop kill`): by the time the user acts, the process may have exited and its PID been
given to another process, of another container or of the host.

Two facts are compared with what the snapshot held: the cgroup /proc/<pid>/cgroup names now (a container's
process must still be in that container) and, when the snapshot kept it, the start time /proc/<pid>/stat gives
(field 22, in clock ticks since boot): a PID reused inside the same container, or on the host, has another.
"""

from __future__ import annotations

from mltop.probes.identity import identity_from_proc_cgroup
from mltop.probes.model import ContainerSample
from mltop.probes.processes import read_stat


def still_in_container(pid: int, container: ContainerSample, start_ticks: int | None = None,
                       doing: str = "attach to it") -> str | None:
    """None when host PID `pid` lives in `container`'s cgroup now (and started at `start_ticks`, when given);
    else why mltop will not `doing` (e.g. "attach to it", "signal it")."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return (f"Host PID {pid} has exited since the snapshot mltop took of {container.name}: nothing to "
                f"{_object_of(doing)}. Refresh and try again.")
    except OSError as exc:
        return (f"mltop cannot read /proc/{pid}/cgroup ({exc.strerror or exc}) to check that host PID {pid} "
                f"still belongs to {container.name}, so it does not {doing}.")
    identity = identity_from_proc_cgroup(text)
    if identity is None or identity.container_id != container.id:
        now = f"container {identity.container_id[:12]}" if identity is not None else "a process of the host"
        return (f"Host PID {pid} is no longer a process of {container.name}: its cgroup now names {now}. The "
                f"process of the snapshot has exited and its PID was reused; mltop does not {doing}. Refresh "
                "and try again.")
    return _same_start(pid, start_ticks, f"a process of {container.name}", doing)


def _same_start(pid: int, start_ticks: int | None, what: str, doing: str) -> str | None:
    if start_ticks is None:
        return None
    stat = read_stat(pid)
    if stat is None:
        return f"Host PID {pid} has exited since the snapshot: nothing to {_object_of(doing)}. Refresh and try again."
    if stat.start_ticks != start_ticks:
        return (f"Host PID {pid} is no longer {what}: it started at another time (tick {stat.start_ticks}, the "
                f"snapshot's {start_ticks}). The process has exited and its PID was reused; mltop does not "
                f"{doing}. Refresh and try again.")
    return None


def _object_of(doing: str) -> str:
    """"attach to it" -> "attach to" (as in "nothing to attach to")."""
    return doing[:-3] if doing.endswith(" it") else doing
