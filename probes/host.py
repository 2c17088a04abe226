"""Facts about the host itself: name, kernel, OS, CPUs, memory, pressure, and what limits our view."""

from __future__ import annotations

import os
import platform
import socket


def os_release() -> str | None:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("PRETTY_NAME="):
                        return line.split("=", 1)[1].strip().strip('"')
        except OSError:
            continue
    return None


def memory_total_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def host_pressure() -> dict[str, float]:
    """System-wide PSI "some avg10" for cpu, memory and io, where the kernel has PSI."""
    out: dict[str, float] = {}
    for resource in ("cpu", "memory", "io"):
        try:
            with open(f"/proc/pressure/{resource}") as f:
                for part in f.readline().split():
                    if part.startswith("avg10="):
                        out[resource] = float(part[6:])
        except (OSError, ValueError):
            continue
    return out


def cpu_times() -> tuple[int, int] | None:
    """(total jiffies, iowait jiffies) from /proc/stat, for the iowait share between two sweeps."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    values = [int(x) for x in fields]
    return sum(values[:8]), values[4] if len(values) > 4 else 0


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def self_rss_bytes() -> int | None:
    """Resident memory of this process (/proc/self/statm: one small read)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def static_facts() -> dict[str, object]:
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "os_release": os_release(),
        "cpu_count": os.cpu_count() or 1,
        "memory_total_bytes": memory_total_bytes(),
    }


def view_limitations(unseen: list[str], running: int, docker_host: str = "unix://") -> tuple[str, ...]:
    """What keeps mltop from seeing everything, in words: `unseen` names the running containers whose PID is not
    ours to see (a remote engine, mltop in its own PID namespace), out of `running`."""
    notes = []
    if not unseen:
        return ()
    remote = not docker_host.startswith(("unix://", "npipe://"))
    if remote and len(unseen) == running:
        notes.append(
            f"The engine at {docker_host} runs on another machine: CPU, memory, I/O, processes and GPU use are "
            "read from the host's own cgroups, /proc and NVML, so only the engine's view is shown. Run mltop "
            "on that host for live figures (e.g. `ssh -t HOST mltop`)."
        )
    elif len(unseen) == running:
        notes.append(
            "The containers' processes are not visible from here (mltop runs in another PID namespace): "
            "per-process figures and GPU attribution are unavailable. Run mltop on the host, or in a "
            "container started with --pid=host."
        )
    else:
        names = ", ".join(unseen[:3]) + (f" and {len(unseen) - 3} more" if len(unseen) > 3 else "")
        notes.append(
            f"{len(unseen)} of {running} running containers ({names}) have processes not visible from here: "
            "their counters are not shown (another PID namespace or engine?)."
        )
    return tuple(notes)
