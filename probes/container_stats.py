"""cAdvisor's further container figures from cgroup v1/v2 files and /proc, for `mltop serve`: CPU user/system
and CFS, CPU and memory spec, memory breakdown, failcnt and peak, processes, threads, file descriptors,
sockets and per-interface network counters. The dashboard's sweep does not read these.

It keeps to the sampler's rules of cost (probes/cgroups.py read_counters): what moves only while a task runs is
carried over from the previous reading while the container's CPU counter stands still; memory.stat while its
memory usage stands still; the spec (quota, period, shares, reservation) is read on whole readings only.
"""

from __future__ import annotations

import os
from typing import Callable

from .cgroups import _pick, _read_int
from .model import ContainerStats, NetInterface
from .openfiles import read_whole as read_bytes

Reader = Callable[[str], bytes]

_V1_UNLIMITED = 1 << 62  # v1 writes "no limit" as a page-rounded LLONG_MAX
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def read_container_stats(version: int, paths: dict[str, str], *, net_pid: int | None, pids: list[int],
                         usage_ns: int | None, memory_usage: int | None, tasks: int | None,
                         previous: ContainerStats | None, idle: bool, full: bool,
                         read: Reader = read_bytes) -> ContainerStats:
    """One container's further figures. `pids`: its processes' host PIDs; `usage_ns`, `memory_usage` and
    `tasks`: what read_counters just read (not read twice); `previous`: the last reading, carried from as the
    sampler carries (`idle`: the CPU counter has not moved; `full`: read everything this time)."""
    if version == 2:
        reading = _read_v2(paths.get("unified", ""), previous, idle, full, memory_usage, read)
    else:
        reading = _read_v1(paths, previous, idle, full, memory_usage, read)
    if idle and not full and previous is not None:
        fds, sockets = previous.file_descriptors, previous.sockets
    else:
        fds, sockets = _descriptors(pids)
    return ContainerStats(
        **reading,
        memory_usage_bytes=memory_usage,
        processes=len(pids) if pids else None,
        threads=tasks,
        file_descriptors=fds,
        sockets=sockets,
        network=read_net_interfaces(net_pid, read) if net_pid else (),
    )


# --------------------------------------------------------------------------- cgroup v1


def _read_v1(paths: dict[str, str], previous: ContainerStats | None, idle: bool, full: bool,
             memory_usage: int | None, read: Reader) -> dict:
    out: dict = {}
    carry_cpu = idle and not full and previous is not None
    cpu_dir = paths.get("cpuacct") or paths.get("cpu")
    cfs_dir = paths.get("cpu") or cpu_dir
    if carry_cpu:
        out.update(_cpu_of(previous))
    else:
        ticks = _pick_file(f"{cpu_dir}/cpuacct.stat", read, "user", "system") if cpu_dir else {}
        cfs = _pick_file(f"{cfs_dir}/cpu.stat", read, "nr_periods", "nr_throttled", "throttled_time") \
            if cfs_dir else {}
        out.update(cpu_user_seconds=_scaled(ticks.get("user"), 1 / _TICKS),
                   cpu_system_seconds=_scaled(ticks.get("system"), 1 / _TICKS),
                   cpu_cfs_periods=cfs.get("nr_periods"), cpu_cfs_throttled_periods=cfs.get("nr_throttled"),
                   cpu_cfs_throttled_seconds=_scaled(cfs.get("throttled_time"), 1e-9))
    if full or previous is None:
        quota = _read_int(f"{cfs_dir}/cpu.cfs_quota_us") if cfs_dir else None
        out.update(cpu_quota_us=quota if quota is not None and quota > 0 else None,
                   cpu_period_us=_read_int(f"{cfs_dir}/cpu.cfs_period_us") if cfs_dir else None,
                   cpu_shares=_read_int(f"{cfs_dir}/cpu.shares") if cfs_dir else None)
    else:
        out.update(_spec_of(previous))

    mem_dir = paths.get("memory")
    unchanged = (not full and previous is not None and memory_usage is not None
                 and memory_usage == previous.memory_usage_bytes)
    if unchanged:
        out.update(_memory_of(previous))
    elif mem_dir:
        try:
            data = read(f"{mem_dir}/memory.stat")
        except OSError:
            data = b""
        keys = ("rss", "cache", "swap", "mapped_file")
        stat = _pick(data, *(f"total_{k}" for k in keys))
        if not stat:  # a kernel without hierarchical totals: the group's own
            stat = {f"total_{k}": v for k, v in _pick(data, *keys).items()}
        reservation = _read_int(f"{mem_dir}/memory.soft_limit_in_bytes", read) if full or previous is None \
            else previous.memory_reservation_bytes
        out.update(memory_rss_bytes=stat.get("total_rss"), memory_cache_bytes=stat.get("total_cache"),
                   memory_swap_bytes=stat.get("total_swap"),  # absent without swap accounting: no figure
                   memory_mapped_file_bytes=stat.get("total_mapped_file"),
                   memory_failcnt=_read_int(f"{mem_dir}/memory.failcnt", read),
                   memory_max_usage_bytes=_read_int(f"{mem_dir}/memory.max_usage_in_bytes", read),
                   memory_reservation_bytes=None if reservation is None or reservation >= _V1_UNLIMITED
                   else reservation)
    else:
        out.update(_memory_of(None))
    return out


# --------------------------------------------------------------------------- cgroup v2


def _read_v2(path: str, previous: ContainerStats | None, idle: bool, full: bool, memory_usage: int | None,
             read: Reader) -> dict:
    out: dict = {}
    if idle and not full and previous is not None:
        out.update(_cpu_of(previous))
    else:
        cpu = _pick_file(f"{path}/cpu.stat", read, "user_usec", "system_usec", "nr_periods", "nr_throttled",
                         "throttled_usec")
        out.update(cpu_user_seconds=_scaled(cpu.get("user_usec"), 1e-6),
                   cpu_system_seconds=_scaled(cpu.get("system_usec"), 1e-6),
                   cpu_cfs_periods=cpu.get("nr_periods"), cpu_cfs_throttled_periods=cpu.get("nr_throttled"),
                   cpu_cfs_throttled_seconds=_scaled(cpu.get("throttled_usec"), 1e-6))
    if full or previous is None:
        quota = period = shares = None
        try:
            q, p = read_bytes(f"{path}/cpu.max").split()
            quota, period = (None if q == b"max" else int(q)), int(p)
        except (OSError, ValueError):
            pass
        weight = _read_int(f"{path}/cpu.weight")
        if weight is not None:
            shares = 2 + (weight - 1) * 262142 // 9999  # cpu.weight back to cpu.shares, as cAdvisor converts
        out.update(cpu_quota_us=quota, cpu_period_us=period, cpu_shares=shares)
    else:
        out.update(_spec_of(previous))

    unchanged = (not full and previous is not None and memory_usage is not None
                 and memory_usage == previous.memory_usage_bytes)
    if unchanged:
        out.update(_memory_of(previous))
    else:
        stat = _pick_file(f"{path}/memory.stat", read, "anon", "file", "file_mapped")
        events = _pick_file(f"{path}/memory.events", read, "max")
        low = None
        if full or previous is None:
            try:
                text = read_bytes(f"{path}/memory.low").strip()
                low = None if text in (b"max", b"0") else int(text)
            except (OSError, ValueError):
                pass
        else:
            low = previous.memory_reservation_bytes
        out.update(memory_rss_bytes=stat.get("anon"), memory_cache_bytes=stat.get("file"),
                   memory_swap_bytes=_read_int(f"{path}/memory.swap.current", read),
                   memory_mapped_file_bytes=stat.get("file_mapped"), memory_failcnt=events.get("max"),
                   memory_max_usage_bytes=_read_int(f"{path}/memory.peak", read),  # kernel 5.19+
                   memory_reservation_bytes=low)
    return out


# --------------------------------------------------------------------------- shared


def read_net_interfaces(pid: int, read: Reader = read_bytes) -> tuple[NetInterface, ...]:
    """Every interface of `pid`'s network namespace but loopback, with its counters each way."""
    try:
        text = read(f"/proc/{pid}/net/dev").decode("ascii", errors="replace")
    except OSError:
        return ()
    out = []
    for line in text.splitlines()[2:]:
        name, _, data = line.partition(":")
        name = name.strip()
        fields = data.split()
        if name == "lo" or len(fields) < 12:
            continue
        v = [int(f) for f in fields[:12]]
        out.append(NetInterface(name, v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]))
    return tuple(out)


def _descriptors(pids: list[int]) -> tuple[int | None, int | None]:
    """(open file descriptors, of which sockets) over the processes; None when none could be read."""
    fds = sockets = 0
    seen = False
    for pid in pids:
        base = f"/proc/{pid}/fd"
        try:
            names = os.listdir(base)
        except OSError:
            continue  # exited, or not ours to see
        seen = True
        fds += len(names)
        for name in names:
            try:
                if os.readlink(f"{base}/{name}").startswith("socket:"):
                    sockets += 1
            except OSError:
                pass
    return (fds, sockets) if seen else (None, None)


def _pick_file(path: str, read: Reader, *keys: str) -> dict[str, int]:
    try:
        return _pick(read(path), *keys)
    except OSError:
        return {}


def _scaled(value: int | None, scale: float) -> float | None:
    return value * scale if value is not None else None


def _cpu_of(s: ContainerStats | None) -> dict:
    names = ("cpu_user_seconds", "cpu_system_seconds", "cpu_cfs_periods", "cpu_cfs_throttled_periods",
             "cpu_cfs_throttled_seconds")
    return {n: getattr(s, n) if s is not None else None for n in names}


def _spec_of(s: ContainerStats | None) -> dict:
    return {n: getattr(s, n) if s is not None else None for n in ("cpu_quota_us", "cpu_period_us", "cpu_shares")}


def _memory_of(s: ContainerStats | None) -> dict:
    names = ("memory_rss_bytes", "memory_cache_bytes", "memory_swap_bytes", "memory_mapped_file_bytes",
             "memory_failcnt", "memory_max_usage_bytes", "memory_reservation_bytes")
    return {n: getattr(s, n) if s is not None else None for n in names}
