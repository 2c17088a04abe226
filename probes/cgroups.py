"""Read container counters straight from the cgroup filesystem (v1 and v2, cgroupfs and systemd drivers).

This is how cAdvisor does it and it is four orders of magnitude cheaper than the Docker stats API.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable

from .openfiles import read_whole as read_bytes  # (its old home: other modules import it from here)

Reader = Callable[[str], bytes]  # path -> whole content: read_bytes, or an OpenFiles' read

CGROUP_ROOT = "/sys/fs/cgroup"
_NO_LIMIT_V1 = 1 << 62  # v1 reports "no limit" as a page-rounded LONG_MAX (9223372036854771712)


def detect_cgroup_version(root: str = CGROUP_ROOT) -> int:
    """2 on a unified hierarchy, 1 on v1 or hybrid (v1 controllers with an empty v2 tree beside them)."""
    return 2 if os.path.exists(os.path.join(root, "cgroup.controllers")) else 1


def _read(path: str, read: Reader = read_bytes) -> str:
    return read(path).decode("ascii", errors="replace")


def _read_int(path: str, read: Reader = read_bytes) -> int | None:
    try:
        return int(read(path))  # int() takes ASCII bytes and ignores the newline
    except (OSError, ValueError):
        return None


_NEEDLES: dict[str, bytes] = {}


def _pick(data: bytes, *keys: str) -> dict[str, int]:
    """The values of a few keys of a flat-keyed file ("key value" lines), without parsing the other lines:
    memory.stat has 36 (v1) to 50 (v2) lines, and a sweep needs three of them."""
    data = b"\n" + data
    out: dict[str, int] = {}
    for key in keys:
        needle = _NEEDLES.get(key)
        if needle is None:
            needle = _NEEDLES[key] = b"\n" + key.encode() + b" "
        start = data.find(needle)
        if start < 0:
            continue
        start += len(needle)
        end = data.find(b"\n", start)
        try:
            out[key] = int(data[start:end if end >= 0 else len(data)])
        except ValueError:
            pass
    return out


_V1_MEMORY_KEYS = ("total_inactive_file", "total_cache", "total_shmem")  # the hierarchy's, else the group's:
_V1_MEMORY_KEYS_LOCAL = ("inactive_file", "cache", "shmem")
_V2_MEMORY_KEYS = ("inactive_file", "file", "shmem")


def _psi_some_avg10(path: str, read: Reader = read_bytes) -> float | None:
    try:
        first = _read(path, read).split("\n", 1)[0]
    except OSError:
        return None
    # "some avg10=0.00 avg60=0.00 avg300=0.00 total=0"
    for part in first.split():
        if part.startswith("avg10="):
            return float(part[6:])
    return None


@dataclass(frozen=True)
class CgroupCounters:
    """Raw counters of one container cgroup at one instant; rates come from two of these."""

    cpu_usage_ns: int | None
    cpu_throttled_periods: int | None
    cpu_quota_cores: float | None  # from cpu.max / cfs quota, None when unlimited
    memory_usage_bytes: int | None
    memory_inactive_file_bytes: int | None
    memory_cache_bytes: int | None
    memory_shmem_bytes: int | None
    memory_limit_bytes: int | None
    oom_kills: int | None
    pids: int | None
    io_read_bytes: int | None
    io_write_bytes: int | None
    psi_cpu: float | None
    psi_memory: float | None
    psi_io: float | None
    # The fields above taken from an earlier reading instead of read (see read_counters); not compared, so a
    # reading equals the one before whatever was carried.
    carried: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def memory_working_set_bytes(self) -> int | None:
        """Usage minus inactive file cache: what `docker stats` shows."""
        if self.memory_usage_bytes is None:
            return None
        inactive = self.memory_inactive_file_bytes or 0
        return max(self.memory_usage_bytes - inactive, 0) if inactive < self.memory_usage_bytes else \
            self.memory_usage_bytes


class CgroupGone(Exception):
    """The container's cgroup vanished (container stopped or removed mid-sweep)."""


_v1_mounts_cache: dict[str, tuple[str, str]] | None = None


def _v1_mounts() -> dict[str, tuple[str, str]]:
    """Controller name -> (v1 mount point, the hierarchy path mounted there), from /proc/self/mountinfo;
    read once per process.

    mountinfo grows by a few lines per container (overlay roots, shm, network namespaces): ~1 ms to parse
    at 500 containers, and the doctor builds a locator per container. Where the controllers are mounted
    does not change while mltop runs."""
    global _v1_mounts_cache
    if not _v1_mounts_cache:  # (an unreadable mountinfo is tried again next time)
        try:
            _v1_mounts_cache = parse_v1_mounts(_read("/proc/self/mountinfo"))
        except OSError:
            return {}
    return dict(_v1_mounts_cache)


def parse_v1_mounts(mountinfo: str) -> dict[str, tuple[str, str]]:
    """Controller -> (mount point, hierarchy path mounted there) from mountinfo's text. A mount of the whole
    hierarchy (path `/`) wins over one of a sub-tree: in a container, the engine mounts the container's own
    cgroup at /sys/fs/cgroup/<controller>, and the host's tree, bind-mounted elsewhere (`-v
    /sys/fs/cgroup:/host/cgroup:ro`), is the one where every container's cgroup can be found."""
    mounts: dict[str, tuple[str, str]] = {}
    for line in mountinfo.splitlines():
        if " - cgroup " not in line:
            continue
        left, _, right = line.partition(" - ")
        fields = right.split()
        before = left.split()
        if len(fields) < 3 or fields[0] != "cgroup" or len(before) < 5:
            continue
        root, mount_point = _unescape(before[3]), _unescape(before[4])
        for option in fields[2].split(","):
            known = mounts.get(option)
            if known is None or (known[1] != "/" and root == "/"):
                mounts[option] = (mount_point, root)
        # name=systemd style hierarchies are not needed
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field) if "\\" in field else field


class CgroupLocator:
    """Finds the cgroup directories of a container from its init PID, or by the id when the PID is hidden,
    wherever the hierarchies are mounted (mountinfo says where); and names a directory as the kernel does."""

    def __init__(self, version: int | None = None, root: str = CGROUP_ROOT,
                 v1_mounts: dict[str, tuple[str, str]] | None = None):
        self.root = root
        self.version = version or detect_cgroup_version(root)
        mounts = (_v1_mounts() if v1_mounts is None else v1_mounts) if self.version == 1 else {}
        self.v1 = {controller: mount for controller, (mount, _) in mounts.items()}
        self._v1_roots = {mount: hierarchy_root for mount, hierarchy_root in mounts.values()}

    def hierarchy_path(self, directory: str) -> str | None:
        """The cgroup of `directory` as the kernel names it in /proc/<pid>/cgroup, which is cAdvisor's `id`
        label: `/docker/<id>` (cgroupfs), `/system.slice/docker-<id>.scope` (systemd). None when the directory
        is under none of the hierarchies this locator knows."""
        bases = [(self.root, "/")] if self.version == 2 else list(self._v1_roots.items())
        for mount, hierarchy_root in sorted(bases, key=lambda base: len(base[0]), reverse=True):
            mount = mount.rstrip("/") or "/"
            if directory == mount or directory.startswith(mount.rstrip("/") + "/"):
                below = directory[len(mount):].strip("/")
                return "/" + "/".join(part for part in (hierarchy_root.strip("/"), below) if part)
        return None

    def paths_for_pid(self, pid: int) -> dict[str, str]:
        """{controller: absolute dir} for v1, {"unified": dir} for v2. Raises CgroupGone."""
        try:
            text = _read(f"/proc/{pid}/cgroup")
        except OSError:
            raise CgroupGone(pid) from None
        out: dict[str, str] = {}
        for line in text.splitlines():
            _, controllers, path = line.split(":", 2)
            if self.version == 2:
                if controllers == "":
                    out["unified"] = os.path.join(self.root, path.lstrip("/"))
                continue
            for controller in controllers.split(","):
                mount = self.v1.get(controller)
                if not mount:
                    continue
                # A mount of a sub-tree (the hierarchy path mounted there is not `/`) shows only what is below it.
                mounted = self._v1_roots.get(mount, "/").rstrip("/")
                if mounted and path != mounted and not path.startswith(mounted + "/"):
                    continue
                out[controller] = os.path.join(mount, path[len(mounted):].lstrip("/"))
        return out

    def paths_for_id(self, container_id: str, cgroup_parent: str | None = None,
                     guesses: tuple[str, ...] = ()) -> dict[str, str]:
        """Guess paths from the id with the cgroupfs and systemd drivers' naming (mltop without host PIDs).
        `guesses`: whole relative paths to try first (a pod container's, by its pod UID and each QoS class)."""
        candidates = [f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"]
        if cgroup_parent:
            candidates.insert(0, f"{cgroup_parent.strip('/')}/{container_id}")
        candidates[:0] = [g.strip("/") for g in guesses]
        if self.version == 2:
            for rel in candidates:
                path = os.path.join(self.root, rel)
                if os.path.isdir(path):
                    return {"unified": path}
            return {}
        out: dict[str, str] = {}
        for controller in ("cpuacct", "cpu", "memory", "blkio", "pids"):
            mount = self.v1.get(controller)
            if not mount:
                continue
            for rel in candidates:
                path = os.path.join(mount, rel)
                if os.path.isdir(path):
                    out[controller] = path
                    break
        return out


@dataclass(frozen=True)
class CgroupLimits:
    """A container's CPU quota and memory limit: they change only with `docker update` (an event), so the
    sampler reads them when the container is (re-)inspected and every little while, not every sweep."""

    cpu_quota_cores: float | None
    memory_limit_bytes: int | None


def read_limits(version: int, paths: dict[str, str]) -> CgroupLimits:
    if version == 2:
        return _read_v2_limits(paths["unified"])
    return _read_v1_limits(paths)


def read_counters(version: int, paths: dict[str, str], limits: CgroupLimits | None = None,
                  read: Reader = read_bytes, idle_since: CgroupCounters | None = None) -> CgroupCounters:
    """Read one container's counters (and its limits, unless given). Raises CgroupGone when its directory
    disappeared. `read`: how a file is read (the sampler's OpenFiles keeps them open between sweeps).

    `idle_since`: an earlier reading (the sampler passes none every few sweeps: then everything is read).
    - When the CPU counter (nanoseconds, or microseconds on v2) has not moved since then, no task of the
      container ran, and the counters that move only while one runs are carried over rather than read: CFS
      throttled periods, OOM kills (the victim runs to exit) and the task count (fork and exit run).
    - memory.stat's figures (inactive file, cache, shmem) are carried only for such an idle container whose
      memory usage has not moved either: then only page aging between the active and inactive lists can move
      them, and the next whole reading catches that up. A running container's are always read: one pinned at
      its memory limit turns page cache into anonymous memory at the same usage, and its working set (usage
      minus inactive file) must follow that at once, before the OOM killer does. (memory.stat is the
      costliest file of a sweep: about 7 us and 40 lines to scan.)
    - Without a CPU quota a container is never throttled: cpu.stat (v1) is not read for that.
    Usage, I/O, network and pressure can move without the container running (reclaim, writeback, packets
    received) and are always read. The counters' `carried` names every figure taken from `idle_since`."""
    if version == 2:
        return _read_v2(paths["unified"], limits, read, idle_since)
    return _read_v1(paths, limits, read, idle_since)


def _read_v2_limits(path: str) -> CgroupLimits:
    try:
        max_text = _read(f"{path}/memory.max").strip()
        limit = None if max_text == "max" else int(max_text)
    except (OSError, ValueError):
        limit = None
    quota = None
    try:
        q, period = _read(f"{path}/cpu.max").split()
        if q != "max":
            quota = int(q) / int(period)
    except (OSError, ValueError):
        pass
    return CgroupLimits(quota, limit)


def _read_v1_limits(paths: dict[str, str]) -> CgroupLimits:
    quota = limit = None
    cfs_dir = paths.get("cpu") or paths.get("cpuacct")
    if cfs_dir:
        q = _read_int(f"{cfs_dir}/cpu.cfs_quota_us")
        period = _read_int(f"{cfs_dir}/cpu.cfs_period_us")
        if q and q > 0 and period:
            quota = q / period
    mem_dir = paths.get("memory")
    if mem_dir:
        limit = _read_int(f"{mem_dir}/memory.limit_in_bytes")
        if limit is not None and limit >= _NO_LIMIT_V1:
            limit = None
    return CgroupLimits(quota, limit)


def _carried_memory(earlier: CgroupCounters) -> dict[str, int | None]:
    """memory.stat's figures from an earlier reading, for an idle container whose usage has not moved since:
    only page aging (active to inactive and back, without reclaim) could have moved them, and the sampler
    reads every container whole every few sweeps."""
    return {"inactive_file": earlier.memory_inactive_file_bytes, "cache": earlier.memory_cache_bytes,
            "shmem": earlier.memory_shmem_bytes}


# What a reading carries (CgroupCounters.carried), interned: a sweep of 500 idle containers builds no sets.
MEMORY_STAT_FIELDS = frozenset({"memory_inactive_file_bytes", "memory_cache_bytes", "memory_shmem_bytes"})
TASK_FIELDS = frozenset({"oom_kills", "pids"})
THROTTLED_FIELD = frozenset({"cpu_throttled_periods"})
_CARRIED: dict[tuple[bool, bool, bool], frozenset[str]] = {
    (memory, tasks, throttled): (MEMORY_STAT_FIELDS if memory else frozenset()) | (TASK_FIELDS if tasks else
                                 frozenset()) | (THROTTLED_FIELD if throttled else frozenset())
    for memory in (False, True) for tasks in (False, True) for throttled in (False, True)
}


def _memory_held(idle: bool, usage: int | None, idle_since: CgroupCounters | None) -> bool:
    """Whether memory.stat may be carried: the container ran no task and its usage did not move."""
    return idle and usage is not None and idle_since is not None and usage == idle_since.memory_usage_bytes


def _read_v2(path: str, limits: CgroupLimits | None = None, read: Reader = read_bytes,
             idle_since: CgroupCounters | None = None) -> CgroupCounters:
    try:
        cpu = _pick(read(f"{path}/cpu.stat"), "usage_usec", "nr_throttled")
    except FileNotFoundError:
        raise CgroupGone(path) from None
    except OSError:
        cpu = {}
    usage_usec = cpu.get("usage_usec")
    usage_ns = usage_usec * 1000 if usage_usec is not None else None
    idle = idle_since is not None and usage_ns is not None and usage_ns == idle_since.cpu_usage_ns
    memory_usage = _read_int(f"{path}/memory.current", read)
    memory_held = _memory_held(idle, memory_usage, idle_since)
    if memory_held:
        carried = _carried_memory(idle_since)
        mem = {"inactive_file": carried["inactive_file"], "file": carried["cache"], "shmem": carried["shmem"]}
    else:
        try:
            mem = _pick(read(f"{path}/memory.stat"), *_V2_MEMORY_KEYS)
        except OSError:
            mem = {}
    if idle:
        oom_kills, pids = idle_since.oom_kills, idle_since.pids
    else:
        try:
            oom_kills = _pick(read(f"{path}/memory.events"), "oom_kill").get("oom_kill")
        except OSError:
            oom_kills = None
        pids = _read_int(f"{path}/pids.current", read)
    if limits is None:
        limits = _read_v2_limits(path)
    rbytes = wbytes = None
    try:
        rbytes = wbytes = 0
        for line in _read(f"{path}/io.stat", read).splitlines():
            for part in line.split()[1:]:
                key, _, value = part.partition("=")
                if key == "rbytes":
                    rbytes += int(value)
                elif key == "wbytes":
                    wbytes += int(value)
    except OSError:
        rbytes = wbytes = None
    return CgroupCounters(
        cpu_usage_ns=usage_ns,
        cpu_throttled_periods=cpu.get("nr_throttled"),
        cpu_quota_cores=limits.cpu_quota_cores,
        memory_usage_bytes=memory_usage,
        memory_inactive_file_bytes=mem.get("inactive_file"),
        memory_cache_bytes=mem.get("file"),
        memory_shmem_bytes=mem.get("shmem"),
        memory_limit_bytes=limits.memory_limit_bytes,
        oom_kills=oom_kills,
        pids=pids,
        io_read_bytes=rbytes,
        io_write_bytes=wbytes,
        psi_cpu=_psi_some_avg10(f"{path}/cpu.pressure", read),
        psi_memory=_psi_some_avg10(f"{path}/memory.pressure", read),
        psi_io=_psi_some_avg10(f"{path}/io.pressure", read),
        carried=_CARRIED[memory_held, idle, False],
    )


def _blkio_bytes(path: str, read: Reader = read_bytes) -> tuple[int | None, int | None]:
    """Sum Read and Write over devices in blkio.throttle.io_service_bytes (v1)."""
    for name in ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes"):
        try:
            text = _read(f"{path}/{name}", read)
        except OSError:
            continue
        read_total = write_total = 0
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 3:
                if fields[1] == "Read":
                    read_total += int(fields[2])
                elif fields[1] == "Write":
                    write_total += int(fields[2])
        return read_total, write_total
    return None, None


def _read_v1(paths: dict[str, str], limits: CgroupLimits | None = None, read: Reader = read_bytes,
             idle_since: CgroupCounters | None = None) -> CgroupCounters:
    mem_dir = paths.get("memory")
    cpu_dir = paths.get("cpuacct") or paths.get("cpu")
    if mem_dir is None and cpu_dir is None:
        raise CgroupGone(paths)
    usage_ns = None
    throttled = None
    if cpu_dir:
        try:
            usage_ns = int(read(f"{cpu_dir}/cpuacct.usage"))
        except FileNotFoundError:
            raise CgroupGone(cpu_dir) from None
        except (OSError, ValueError):
            pass
    idle = idle_since is not None and usage_ns is not None and usage_ns == idle_since.cpu_usage_ns
    if limits is None:
        limits = _read_v1_limits(paths)
    cfs_dir = paths.get("cpu") or cpu_dir
    throttled_held = idle or (idle_since is not None and limits.cpu_quota_cores is None)
    if throttled_held:
        throttled = idle_since.cpu_throttled_periods
    elif cfs_dir:
        try:
            throttled = _pick(read(f"{cfs_dir}/cpu.stat"), "nr_throttled").get("nr_throttled")
        except OSError:
            pass
    mem: dict[str, int] = {}
    usage = oom = None
    memory_held = False
    if mem_dir:
        usage = _read_int(f"{mem_dir}/memory.usage_in_bytes", read)
        memory_held = _memory_held(idle, usage, idle_since)
        if memory_held:
            mem = _carried_memory(idle_since)
        else:
            try:
                data = read(f"{mem_dir}/memory.stat")
                mem = _pick(data, *_V1_MEMORY_KEYS)
                if len(mem) < len(_V1_MEMORY_KEYS):
                    mem = {**_pick(data, *_V1_MEMORY_KEYS_LOCAL), **mem}
            except FileNotFoundError:
                raise CgroupGone(mem_dir) from None
            except OSError:
                pass
        if idle:
            oom = idle_since.oom_kills
        else:
            try:
                oom = _pick(read(f"{mem_dir}/memory.oom_control"), "oom_kill").get("oom_kill")
            except OSError:
                pass
    io_read = io_write = None
    if paths.get("blkio"):
        io_read, io_write = _blkio_bytes(paths["blkio"], read)
    if idle:
        pids = idle_since.pids
    else:
        pids = _read_int(f"{paths['pids']}/pids.current", read) if paths.get("pids") else None
    return CgroupCounters(
        cpu_usage_ns=usage_ns,
        cpu_throttled_periods=throttled,
        cpu_quota_cores=limits.cpu_quota_cores,
        memory_usage_bytes=usage,
        memory_inactive_file_bytes=mem.get("total_inactive_file", mem.get("inactive_file")),
        memory_cache_bytes=mem.get("total_cache", mem.get("cache")),
        memory_shmem_bytes=mem.get("total_shmem", mem.get("shmem")),
        memory_limit_bytes=limits.memory_limit_bytes,
        oom_kills=oom,
        pids=pids,
        io_read_bytes=io_read,
        io_write_bytes=io_write,
        psi_cpu=None,  # cgroup v1 hierarchies carry no per-cgroup PSI
        psi_memory=None,
        psi_io=None,
        carried=_CARRIED[memory_held, idle, throttled_held],
    )


def cgroup_procs(version: int, paths: dict[str, str]) -> list[int]:
    """Host PIDs of every process in the container's cgroup.

    Always a fresh open, never a kept one (probes/openfiles.py): on cgroup v1 an open cgroup.procs answers
    from a PID list the kernel caches per open file and frees only a second after the last read, so a file
    re-read every second would keep answering the processes of its first read."""
    directory = paths.get("unified") if version == 2 else (paths.get("pids") or paths.get("memory")
                                                            or paths.get("cpuacct"))
    if not directory:
        return []
    try:
        return [int(x) for x in read_bytes(f"{directory}/cgroup.procs").split()]
    except FileNotFoundError:
        raise CgroupGone(directory) from None
    except (OSError, ValueError):
        return []


def read_net_dev(pid: int, read: Reader = read_bytes) -> tuple[int, int] | None:
    """(rx_bytes, tx_bytes) summed over the network namespace of `pid`, loopback excluded."""
    try:
        text = _read(f"/proc/{pid}/net/dev", read)
    except OSError:
        return None
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, data = line.partition(":")
        if name.strip() == "lo":
            continue
        fields = data.split()
        if len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx
