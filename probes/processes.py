"""Per-process facts for container processes: PID inside the container, user, command, CPU and RSS.

This is the per-sweep hot path (every process of every container), so /proc/<pid>/stat is read directly
rather than through psutil objects; facts that never change for a PID (NSpid, uid, command line) are read
once per process and cached by (pid, start time).
"""

from __future__ import annotations

import os
import pwd
import time
from dataclasses import dataclass
from typing import Iterable

from .cgroups import Reader, read_bytes
from .redaction import redact_contained
from .text import COMMAND_CAP

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessIdentity:
    container_pid: int | None
    user: str | None
    cmdline: str


@dataclass(frozen=True)
class ProcessStat:
    comm: bytes  # changes on exec, which keeps PID and start time
    start_ticks: int
    cpu_ticks: int  # utime + stime
    rss_bytes: int
    ppid: int | None = None  # may change between sweeps (a parent that exits: reparented to the init)


def read_stat(pid: int, read: Reader = read_bytes) -> ProcessStat | None:
    try:
        data = read(f"/proc/{pid}/stat")
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ")"
    close = data.rfind(b")")
    fields = data[close + 2:].split()
    try:
        return ProcessStat(
            comm=data[data.find(b"(") + 1:close],
            start_ticks=int(fields[19]),
            cpu_ticks=int(fields[11]) + int(fields[12]),
            rss_bytes=int(fields[21]) * _PAGE,
            ppid=int(fields[1]),
        )
    except (IndexError, ValueError):
        return None


_users: dict[int, str] = {}


def user_name(uid: int) -> str:
    name = _users.get(uid)
    if name is None:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        _users[uid] = name
    return name


def read_identity(pid: int) -> ProcessIdentity | None:
    try:
        status = read_bytes(f"/proc/{pid}/status").decode("utf-8", errors="replace")
    except OSError:
        return None
    container_pid = None
    uid = None
    name = ""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            parts = line.split()[1:]
            if parts:
                container_pid = int(parts[-1])
        elif line.startswith("Uid:"):
            uid = int(line.split()[1])
        elif line.startswith("Name:"):
            name = line.split(":", 1)[1].strip()
    try:
        raw = read_bytes(f"/proc/{pid}/cmdline")
        cmdline = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", errors="replace")
    except OSError:
        cmdline = ""
    return ProcessIdentity(
        container_pid=container_pid,
        user=user_name(uid) if uid is not None else None,
        cmdline=cmdline or f"[{name}]",
    )


ProcessKey = tuple[int, int, bytes]  # (pid, start ticks, command name): one program run


def process_key(pid: int, stat: ProcessStat) -> ProcessKey:
    return pid, stat.start_ticks, stat.comm


class ProcessTable:
    """Remembers identities and the previous CPU tick count of each process to compute CPU %."""

    def __init__(self, read: Reader = read_bytes) -> None:
        self._read = read  # how /proc/<pid>/stat is read: the sampler keeps it open between sweeps
        self._identity: dict[ProcessKey, ProcessIdentity] = {}
        self._prev_ticks: dict[ProcessKey, tuple[float, int]] = {}
        self._seen: set[ProcessKey] = set()

    def begin_sweep(self) -> None:
        self._seen = set()

    def end_sweep(self) -> None:
        """Forget processes that were not seen in this sweep (they exited)."""
        for key in list(self._identity):
            if key not in self._seen:
                del self._identity[key]
                self._prev_ticks.pop(key, None)

    def carry(self, keys: Iterable[ProcessKey], now: float) -> None:
        """The processes of a container that did not run since their last sample (its CPU counter did not
        move): still there, with the same CPU ticks now. Nothing is read."""
        for key in keys:
            prev = self._prev_ticks.get(key)
            if prev is not None:
                self._seen.add(key)
                self._prev_ticks[key] = (now, prev[1])

    def sample(self, pid: int, secrets: frozenset[str] = frozenset()
               ) -> tuple[ProcessIdentity, ProcessStat, float | None] | None:
        """(identity, stat, cpu % since its last reading) or None when the process is gone.

        CPU % divides the ticks between two readings of /proc/<pid>/stat by the time between those two
        readings, each taken as the file is read (not when the sweep began).
        Command lines are redacted once, when the process is first seen (`secrets`: the container's own
        secret values, scrubbed wherever they appear)."""
        now = time.monotonic()
        stat = read_stat(pid, self._read)
        if stat is None:
            return None
        # A shell that forks and then execs (`sh -c "... && exec python train.py"`) keeps its PID and start
        # time: the command name tells the two programs apart.
        key = process_key(pid, stat)
        identity = self._identity.get(key)
        if identity is None:
            identity = read_identity(pid)
            if identity is None:
                return None
            identity = ProcessIdentity(identity.container_pid, identity.user,
                                       redact_contained(identity.cmdline, COMMAND_CAP, secrets))
            self._identity[key] = identity
        self._seen.add(key)
        prev = self._prev_ticks.get(key)
        self._prev_ticks[key] = (now, stat.cpu_ticks)
        cpu = None
        if prev is not None and now > prev[0]:
            cpu = (stat.cpu_ticks - prev[1]) / _CLK_TCK / (now - prev[0]) * 100.0
        return identity, stat, cpu


@dataclass(frozen=True)
class HostAncestor:
    """A process above a container's init on the host (containerd-shim, containerd, systemd)."""

    pid: int
    user: str | None
    cmdline: str


MAX_ANCESTORS = 16  # a chain longer than this is cut (none is, on a real host: shim, containerd or dockerd, init)


def host_ancestors(init_pid: int | None) -> tuple[tuple[HostAncestor, ...], str | None]:
    """The parents of a container's init up to the host's PID 1, nearest first, read from /proc; with why not
    when they cannot be seen (mltop in a container without --pid=host sees none of them, a hidepid /proc only its
    own). Command lines redacted as the container's own processes are."""
    if not init_pid:
        return (), "parents not visible: the container has no init process (not running)"
    stat = read_stat(init_pid)
    if stat is None or stat.ppid is None:
        return (), f"parents not visible: /proc/{init_pid} cannot be read here (mltop needs the host's PID namespace)"
    out: list[HostAncestor] = []
    pid = stat.ppid
    while pid and len(out) < MAX_ANCESTORS:
        parent = read_stat(pid)
        identity = read_identity(pid) if parent is not None else None
        if parent is None or identity is None:
            reason = f"parents not visible above PID {out[-1].pid if out else init_pid} (/proc/{pid} unreadable)"
            return tuple(out), reason
        out.append(HostAncestor(pid, identity.user, redact_contained(identity.cmdline, COMMAND_CAP)))
        pid = parent.ppid or 0
    if not out:  # its parent is 0: the container's init is this PID namespace's first process
        return (), "parents not visible: the container's init has no parent here (mltop shares its PID namespace)"
    return tuple(out), None
