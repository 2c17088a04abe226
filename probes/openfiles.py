"""The small kernel files a sweep reads every second, kept open and re-read from offset 0.

A sweep reads about ten cgroup and procfs files per container. Opening one costs a path walk through
cgroupfs or procfs; re-reading an open one at offset 0 (`pread`) makes the kernel generate it afresh, as
procfs and cgroupfs (seq_file) files do at offset 0. Measured on the benchmark VM (Linux 6.18, cgroup v1,
100 containers): 0.8 us instead of 7.0 us for `cpuacct.usage`, 7.1 instead of 13.1 us for `memory.stat`,
3.3 instead of 7.3 us for `/proc/<pid>/stat`.

What an open file holds on to, and how it is let go:

- A cgroup file whose cgroup was removed (the container stopped) answers ENODEV; a `/proc/<pid>/stat` whose
  process exited answers ESRCH, even when its PID number was reused. Either closes the file; a cgroup file is
  opened again once (a restarted container has a new directory with the same path), and FileNotFoundError
  is raised when the path is gone, as a fresh open would.
- `/proc/<pid>/net/dev` keeps answering for the network namespace it was opened in, and holds that
  namespace alive. So a `/proc/<pid>/net/` file not read during a sweep is closed at its end (`end_sweep`):
  a container that stopped, restarted with another PID or was removed lets go of its namespace one sweep
  later. Other files are closed once unread for `keep_unread` to twice that many sweeps (the sampler skips
  some files of an idle container for a few sweeps); what they pin meanwhile is a kernfs node or a
  `struct pid`.
- It keeps at most `budget` files open (by default three quarters of the open-file limit, which is raised
  to the hard limit, at most 65536, as Go programs do); past that, files are opened and closed per read as
  before, and nothing else in the process runs short of descriptors.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import threading

log = logging.getLogger(__name__)

_WANTED_LIMIT = 1 << 16
_RESERVE = 256  # descriptors left for everything else: engine sockets, the recorder, actions, the terminal
_CHUNK = 65536
# A seq_file read returns whole records until its buffer (a page at least) would overflow, so a first read
# under this size is the whole file; a longer one is followed by more reads until one comes back empty.
_SURELY_WHOLE = 2048


def read_whole(path: str) -> bytes:
    """The whole file, with raw system calls: no Python file object, a third cheaper per small file than
    open(). (A short read is not the end: procfs and cgroupfs seq_files hand out about a page per read.)"""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _pread_all(fd)
    finally:
        os.close(fd)


def _pread_all(fd: int) -> bytes:
    data = os.pread(fd, _CHUNK, 0)
    if len(data) < _SURELY_WHOLE:
        return data
    chunks = [data]
    offset = len(data)
    while True:
        more = os.pread(fd, _CHUNK, offset)
        if not more:
            return b"".join(chunks)
        chunks.append(more)
        offset += len(more)


def raise_open_file_limit(wanted: int = _WANTED_LIMIT) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards its hard limit (at most `wanted`); the soft limit."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 1024
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            log.debug("could not raise the open-file limit from %s to %s", soft, target, exc_info=True)
    return wanted if soft == resource.RLIM_INFINITY else int(soft)


_table_holds = 0  # descriptors this process's table was grown to hold (grow_descriptor_table)


def grow_descriptor_table(count: int) -> None:
    """Grow this process's descriptor table, in one step, to hold `count` more descriptors than are open now.

    Asking for a descriptor numbered past them (F_DUPFD: the lowest free one from there, so nothing open is
    touched) makes the kernel allocate the table at that size at once, instead of doubling it as files are
    opened. Each growth in a process with threads waits for an RCU grace period (13-17 ms on the benchmark
    VM); done before any thread starts, none does. The table never shrinks: a few KiB per thousand."""
    global _table_holds
    try:
        import fcntl

        probe = os.open("/", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        target = (1 << (probe + count).bit_length()) - 1  # the kernel sizes the table in powers of two
        if target > _table_holds:
            os.close(fcntl.fcntl(probe, fcntl.F_DUPFD_CLOEXEC, target))
            _table_holds = target
    except OSError:  # past the open-file limit: the table grows as files are opened
        log.debug("could not grow the descriptor table to %d", count, exc_info=True)
    finally:
        os.close(probe)


def prepare(expected_files: int = 4000) -> None:
    """For a process about to start threads and keep files open: raise the open-file limit and grow the
    descriptor table for `expected_files` while there is still one thread (see grow_descriptor_table)."""
    grow_descriptor_table(min(expected_files, raise_open_file_limit() - _RESERVE))


def default_budget() -> int:
    limit = raise_open_file_limit()
    return max(0, limit - max(_RESERVE, limit // 4))


class OpenFiles:
    """Reads files by path, keeping up to `budget` of them open between sweeps (see the module docstring).

    One sweep at a time (the sampler's thread); `close()` may come from another thread at shutdown.
    """

    def __init__(self, budget: int | None = None, keep_unread: int = 0):
        self.budget = default_budget() if budget is None else budget
        self.keep_unread = keep_unread
        self._fds: dict[str, int] = {}
        self._sweep = 0
        self._last_read: dict[str, int] = {}  # path -> the sweep that last read it
        self._net_files: set[str] = set()
        self._lock = threading.Lock()  # open/close bookkeeping against close() from another thread
        self._closed = False
        self._reserved = 0  # the most kept files reserve() has made room for

    def __len__(self) -> int:
        return len(self._fds)

    def read(self, path: str) -> bytes:
        """The file's whole current content. Raises OSError as open() and read() would (FileNotFoundError for
        a path that is gone, ProcessLookupError for an exited process's stat)."""
        fd = self._fds.get(path)
        self._last_read[path] = self._sweep
        if fd is not None:
            try:
                return _pread_all(fd)
            except OSError as exc:
                self._drop(path)
                if exc.errno == errno.ESRCH or not path.startswith("/sys/"):
                    raise  # that process exited: its PID, if reused, is another process
                # a removed cgroup (ENODEV): the path may name a new one (a restarted container)
        if len(self._fds) >= self.budget or self._closed:
            return read_whole(path)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = _pread_all(fd)
        except OSError:
            os.close(fd)
            raise
        with self._lock:
            if self._closed or path in self._fds:
                os.close(fd)
            else:
                self._fds[path] = fd
                if path.startswith("/proc/") and "/net/" in path:
                    self._net_files.add(path)  # it holds a network namespace alive: let go at once
        return data

    def reserve(self, count: int) -> None:
        """Make room in this process's descriptor table for `count` more kept files, in one step.

        The kernel doubles the table when it fills, and in a process with threads each growth waits for an
        RCU grace period (13-17 ms on the benchmark VM). Opening a thousand files one by one, the first sweep
        of 100 containers grew it four times: 55 of its 75 ms. Asking for a descriptor numbered past what
        is needed (F_DUPFD: the lowest free one from there, so nothing open is touched) grows it once."""
        wanted = min(len(self._fds) + count, self.budget)
        if wanted > self._reserved and not self._closed:  # (every sweep asks; most ask for no more)
            self._reserved = wanted
            grow_descriptor_table(wanted)

    def begin_sweep(self) -> None:
        self._sweep += 1

    def end_sweep(self) -> None:
        """Close the files not read lately (see the module docstring): their container or process is gone
        or changed. Network files are looked at every sweep, the rest every `keep_unread` sweeps."""
        sweep, keep, last_read = self._sweep, self.keep_unread, self._last_read
        if keep and sweep % keep:
            for path in [p for p in self._net_files if last_read.get(p) != sweep]:
                self._net_files.discard(path)
                last_read.pop(path, None)
                self._drop(path)
            return
        for path, last in list(last_read.items()):
            if last != sweep and (sweep - last > keep or path in self._net_files):
                del last_read[path]
                self._net_files.discard(path)
                self._drop(path)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            fds, self._fds = self._fds, {}
            self._last_read = {}
            self._net_files = set()
        for fd in fds.values():
            _close_quietly(fd)

    def _drop(self, path: str) -> None:
        with self._lock:
            fd = self._fds.pop(path, None)
        if fd is not None:
            _close_quietly(fd)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
