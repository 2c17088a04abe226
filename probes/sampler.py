"""One sampling sweep = one immutable Snapshot: engine, cgroups, processes and NVML, joined by host PID."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass

from . import host as hostfacts
from .cgroups import (
    CgroupCounters,
    CgroupGone,
    CgroupLimits,
    CgroupLocator,
    cgroup_procs,
    read_counters,
    read_limits,
    read_net_dev,
)
from .attribution import attribute_gpu_processes  # (importers of sampler.attribute_gpu_processes keep it)
from .catalog import ContainerCatalog
from .engine import ContainerMeta, Engine, EngineError, docker_host_named
from .model import (
    ContainerSample,
    EngineStatus,
    HostInfo,
    NvmlStatus,
    Pressure,
    ProcessSample,
    SelfCost,
    Snapshot,
)
from .infiniband import InfinibandProbe
from .openfiles import OpenFiles
from .pci import PciGpuProbe
from .gpu_sharing import with_gpu_sharing
from .pod_gpus import PodGpuAllocations
from .sources import CriSources, docker_source_status
from .openfiles import prepare as prepare_open_files
from .processes import ProcessKey, ProcessTable, process_key

log = logging.getLogger(__name__)

LIMITS_MAX_AGE_S = 30.0  # limits are re-read when the container is re-inspected (docker update), else this often
# A container whose CPU counter did not move since the last sweep ran no task: its throttled periods, OOM kills,
# task count and processes cannot have changed, and are carried over instead of read (cgroups.read_counters,
# ProcessTable.carry); a process's resident memory can still shrink under reclaim, so every container is read
# whole once in this many sweeps (at a sweep of its own, not all at once).
IDLE_FULL_READ_EVERY = 10
FILES_PER_CONTAINER = 12  # kept open per running container: ~7 cgroup files, its network, its processes' stat


@dataclass(frozen=True)
class ProbeOptions:
    docker_host: str | None = None
    nvml: bool = True
    nvml_lib: str | None = None
    nvml_deadline_s: float = 2.0
    processes: bool = True
    watch_events: bool = True
    # Answer the first sweep from the engine's list alone while containers are inspected in the background
    # (the dashboard's first frame on a dense host); their samples say config_pending meanwhile.
    inspect_in_background: bool = False
    cri_endpoint: str | None = None  # --cri-endpoint; None: $MLTOP_CRI_ENDPOINT, else the default sockets
    # --pod-resources-socket; None: $MLTOP_POD_RESOURCES_SOCKET, else the kubelet's
    pod_resources_socket: str | None = None
    # Read cAdvisor's further figures (ContainerSample.stats: probes/container_stats.py): `mltop serve` does.
    container_stats: bool = False
    sysfs_root: str = "/sys"  # --sysfs-root: where the host's /sys is mounted (an agent in a container)
    kmsg_path: str | None = None  # the kernel log for PCI GPUs NVML lost (None: $MLTOP_KMSG, else /dev/kmsg)


@dataclass
class _Previous:
    at: float
    counters: CgroupCounters
    net: tuple[int, int] | None
    processes: tuple[ProcessSample, ...] | None = None  # as sampled, before GPU attribution; None: not read
    process_keys: tuple[ProcessKey, ...] = ()
    # The sample built from this reading (before GPU attribution), with the engine's view it was built from,
    # and whether it was at rest: idle, every counter as in the reading before, so every rate 0. A container
    # still at rest at the next sweep gets the very same sample back: nothing to build, nothing to redraw.
    meta: ContainerMeta | None = None
    sample: ContainerSample | None = None
    at_rest: bool = False

    def idle_processes(self) -> tuple[ProcessSample, ...]:
        """The processes again, none of which ran since: 0 % CPU (the same tuple while it stays idle)."""
        processes = self.processes or ()
        if any(p.cpu_percent != 0.0 for p in processes):
            processes = tuple(dataclasses.replace(p, cpu_percent=0.0) for p in processes)
        return processes


# CgroupCounters field -> the ContainerSample figure it makes (a carried inactive_file carries the working set)
_CARRIED_AS = {"memory_inactive_file_bytes": "memory_bytes", "memory_cache_bytes": "memory_cache_bytes",
               "memory_shmem_bytes": "shm_bytes", "oom_kills": "oom_kills", "pids": "pids",
               "cpu_throttled_periods": "cpu_throttled_periods"}
_carried_cache: dict[tuple[frozenset[str], bool], frozenset[str]] = {}


def carried_fields(counters_carried: frozenset[str], processes: bool) -> frozenset[str]:
    """The ContainerSample fields taken from an earlier reading (one frozenset per combination, interned)."""
    key = (counters_carried, processes)
    out = _carried_cache.get(key)
    if out is None:
        out = frozenset(_CARRIED_AS[f] for f in counters_carried) | ({"processes"} if processes else frozenset())
        _carried_cache[key] = out
    return out


def _rate(new: int | None, old: int | None, seconds: float) -> float | None:
    if new is None or old is None or seconds <= 0:
        return None
    return max(new - old, 0) / seconds


class Sampler:
    """Holds what a sweep needs from the previous one (counters for rates, caches) and builds snapshots."""

    def __init__(self, options: ProbeOptions | None = None, engine: Engine | None = None):
        self.options = options or ProbeOptions()
        self.engine = engine or Engine(self.options.docker_host)
        self.catalog = ContainerCatalog(self.engine, watch_events=self.options.watch_events,
                                        inspect_in_background=self.options.inspect_in_background)
        self.cri = CriSources(self.options.cri_endpoint, background=self.options.inspect_in_background)
        self.pod_gpus = PodGpuAllocations(self.options.pod_resources_socket)
        self._own_netns: int | None = None  # the host's network namespace: PID 1's (hostPID), else mltop's
        for path in ("/proc/1/ns/net", "/proc/self/ns/net"):
            try:
                self._own_netns = os.stat(path).st_ino
                break
            except OSError:
                continue
        self._host_netns: dict[str, tuple[int, bool]] = {}  # id -> (pid, shares mltop's network namespace)
        self._locator: CgroupLocator | None = None
        self._paths: dict[str, tuple[int | None, dict[str, str]]] = {}  # id -> (pid, paths)
        self._previous: dict[str, _Previous] = {}
        self._limits: dict[str, tuple[ContainerMeta, float, CgroupLimits]] = {}  # id -> (meta, read at, limits)
        self._unmeasured_samples: dict[str, tuple[ContainerMeta, ContainerSample]] = {}
        # the files read every sweep, kept open (probes/openfiles.py); an idle container's skipped ones too
        prepare_open_files()  # before the NVML worker starts: a table grown with one thread waits for nothing
        self._files = OpenFiles(keep_unread=IDLE_FULL_READ_EVERY + 1)
        self._processes = ProcessTable(self._files.read)
        self._static = hostfacts.static_facts()
        self._cpu_times: tuple[int, int] | None = None  # (total, iowait) jiffies at the last sweep
        self._last_sweep_at: float | None = None
        self._sweep_no = 0
        self._cpu_at: tuple[float, float] | None = None  # (monotonic, process CPU seconds) at the last sweep
        self._infiniband = InfinibandProbe(self.options.sysfs_root)
        self._pci_gpus = PciGpuProbe(self.options.sysfs_root, self.options.kmsg_path)
        self._nvml = None
        if self.options.nvml:
            from .nvml import NvmlProbe, resolve_library_path

            self._nvml = NvmlProbe(resolve_library_path(self.options.nvml_lib), self.options.nvml_deadline_s)

    def close(self) -> None:
        self.catalog.close()
        self.cri.close()
        self.pod_gpus.close()
        self._files.close()
        self._pci_gpus.close()
        if self._nvml is not None:
            self._nvml.close()

    def sweep_pair(self, interval: float) -> tuple[Snapshot, Snapshot]:
        """Two sweeps `interval` apart, (earlier, later): rates (CPU %, I/O) need two, and so do rising counters."""
        previous = self.sweep()
        time.sleep(max(interval, 0.05))
        return previous, self.sweep()

    # ------------------------------------------------------------------------------------------

    def sweep(self) -> Snapshot:
        started = time.perf_counter()
        now = time.monotonic()
        taken_at = time.time()
        interval = now - self._last_sweep_at if self._last_sweep_at is not None else None
        self._last_sweep_at = now
        self._sweep_no += 1

        engine_status, metas, info = self._engine_view()
        cri_statuses, cri_metas = self.cri.view()
        docker_count = len(metas)
        metas = metas + cri_metas
        if self._nvml is not None:
            nvml_status, gpus = self._nvml.sample()
        else:
            nvml_status, gpus = NvmlStatus("disabled", "NVML disabled by --no-nvml"), ()

        cgroup_version = None
        if info:
            try:
                cgroup_version = int(info.get("CgroupVersion") or 1)
            except ValueError:
                cgroup_version = None
        locator = self._get_locator(cgroup_version)

        containers: list[ContainerSample] = []
        self._unseen: list[str] = []  # running containers whose PID is not ours to see, this sweep
        self._processes.begin_sweep()
        self._files.begin_sweep()
        self._files.reserve(FILES_PER_CONTAINER * sum(1 for m in metas if m.status == "running"))
        live_ids = set()
        for meta in metas:
            live_ids.add(meta.id)
            try:
                containers.append(self._sample_container(meta, locator, now))
            except CgroupGone:
                # stopped or removed mid-sweep: drop it from this sweep, the catalog catches up
                self.catalog.mark_stale()
                self._paths.pop(meta.id, None)
                self._previous.pop(meta.id, None)
                self._limits.pop(meta.id, None)
        infiniband = self._infiniband.sample(self._files.read)
        self._processes.end_sweep()
        self._files.end_sweep()
        self._forget_gone(live_ids)

        self.catalog.start_background_work()
        gpus, containers = attribute_gpu_processes(gpus, containers, self.catalog)
        allocation_status, containers = self.pod_gpus.apply(containers, gpus, taken_at)
        gpus = with_gpu_sharing(gpus, containers)
        running = sum(1 for m in metas if m.pid and m.status == "running")
        host = self._host_info(engine_status, nvml_status, info, locator, running)
        named = docker_host_named(self.options.docker_host)
        docker = docker_source_status(engine_status, host.docker_version, docker_count, named, cri_statuses)
        host = dataclasses.replace(host, sources=(docker, *cri_statuses, *filter(None, [allocation_status])))
        containers.sort(key=lambda c: c.name)
        pci_gpus = self._pci_gpus.sample([g.pci_bus_id for g in gpus] if nvml_status.ok else None)
        return Snapshot(
            taken_at=taken_at,
            interval_s=interval,
            host=host,
            gpus=tuple(gpus),
            containers=tuple(containers),
            self_cost=self._self_cost(time.perf_counter() - started),
            infiniband=infiniband,
            pci_gpus=pci_gpus,
        )

    def _forget_gone(self, live_ids: set[str]) -> None:
        """Drop what is kept per container for those no longer listed: on a node that runs thousands of short
        jobs a day, anything keyed by container id and kept past the container grows without end. Each table
        on its own: a container can be in one and not another (a provisional one has paths and no reading)."""
        for table in (self._unmeasured_samples, self._host_netns, self._previous, self._paths, self._limits):
            for gone in table.keys() - live_ids:
                del table[gone]
        forget = getattr(self.engine, "forget_containers", None)
        if forget is not None:
            forget(live_ids)

    def _self_cost(self, sweep_s: float) -> SelfCost:
        """This process's CPU since the previous sweep (all threads, so the UI that shows the snapshot counts
        too), its RSS, this sweep's duration and the slowest NVML call."""
        now, cpu = time.monotonic(), time.process_time()
        cpu_percent = None
        if self._cpu_at is not None and now > self._cpu_at[0]:
            cpu_percent = (cpu - self._cpu_at[1]) / (now - self._cpu_at[0]) * 100.0
        self._cpu_at = (now, cpu)
        slowest = self._nvml.slowest_call if self._nvml is not None else None
        return SelfCost(
            cpu_percent=cpu_percent,
            rss_bytes=hostfacts.self_rss_bytes(),
            sweep_s=sweep_s,
            nvml_slowest_call_s=slowest[1] if slowest else None,
            nvml_slowest_call=slowest[0] if slowest else None,
        )

    # ------------------------------------------------------------------------------------------

    def _watch_limitations(self, engine_status: EngineStatus) -> tuple[str, ...]:
        error = self.catalog.watch_error
        if error is None or not engine_status.ok:
            return ()  # with the engine down its own error says it all
        return (f"Docker events watcher failed ({error}): containers are re-listed every sweep",)

    def _engine_view(self) -> tuple[EngineStatus, list[ContainerMeta], dict | None]:
        if self.engine.disabled:  # --docker-host none: nothing asked, nothing logged
            return self.engine.status(), [], None
        try:
            metas = self.catalog.containers()
            info = self.engine.info()
        except EngineError as err:
            log.info("engine %s: %s", err.status, err.message)
            self.engine.reset()
            self.catalog.mark_stale()
            return EngineStatus(err.status, err.message, self.engine.docker_host), [], None
        except Exception as exc:  # an API error mid-list: keep going without containers this sweep
            log.warning("listing containers failed", exc_info=True)
            self.catalog.mark_stale()
            return EngineStatus("error", f"Docker engine error: {exc}", self.engine.docker_host), [], None
        return EngineStatus("ok", None, self.engine.docker_host), metas, info

    def _get_locator(self, version: int | None) -> CgroupLocator:
        if self._locator is None or (version is not None and self._locator.version != version):
            self._locator = CgroupLocator(version)
        return self._locator

    def _container_paths(self, meta: ContainerMeta, locator: CgroupLocator) -> dict[str, str]:
        cached = self._paths.get(meta.id)
        if cached is not None and cached[0] == meta.pid:
            return cached[1]
        paths: dict[str, str] = {}
        if meta.pid:
            try:
                paths = locator.paths_for_pid(meta.pid)
            except CgroupGone:
                paths = {}
        if not paths:
            paths = locator.paths_for_id(meta.id, meta.cgroup_parent)
        if not paths:
            raise CgroupGone(meta.id)
        self._paths[meta.id] = (meta.pid, paths)
        return paths

    def _in_host_netns(self, container_id: str, pid: int) -> bool:
        cached = self._host_netns.get(container_id)
        if cached is not None and cached[0] == pid:
            return cached[1]
        try:
            shared = os.stat(f"/proc/{pid}/ns/net").st_ino == self._own_netns
        except OSError:
            shared = False
        self._host_netns[container_id] = (pid, shared)
        return shared

    def _unmeasured(self, meta: ContainerMeta) -> ContainerSample:
        # the same sample while the engine says the same: a host with many stopped containers rebuilds none
        cached = self._unmeasured_samples.get(meta.id)
        if cached is None or cached[0] is not meta:
            cached = self._unmeasured_samples[meta.id] = (meta, _unmeasured_sample(meta))
        return cached[1]

    def _container_limits(self, meta: ContainerMeta, version: int, paths: dict[str, str],
                          now: float) -> CgroupLimits:
        cached = self._limits.get(meta.id)
        if cached is not None and cached[0] is meta and now - cached[1] < LIMITS_MAX_AGE_S:
            return cached[2]
        limits = read_limits(version, paths)
        self._limits[meta.id] = (meta, now, limits)
        return limits

    def _sample_container(self, meta: ContainerMeta, locator: CgroupLocator, now: float) -> ContainerSample:
        if meta.status not in ("running", "paused", "restarting"):
            return self._unmeasured(meta)
        if meta.provisional:
            # No PID before the inspect: find the cgroup by id, and the network from any of its processes.
            cached = self._paths.get(meta.id)
            paths = cached[1] if cached is not None else locator.paths_for_id(meta.id, meta.cgroup_parent,
                                                                              meta.cgroup_guesses)
            if not paths:
                return self._unmeasured(meta)
            self._paths[meta.id] = (None, paths)
            net_pid = next(iter(cgroup_procs(locator.version, paths)), None)
        elif not meta.pid:
            return self._unmeasured(meta)
        elif meta.id not in self._paths and not os.path.exists(f"/proc/{meta.pid}"):
            # Never measured and its PID is not ours to see: a remote engine (ssh://, tcp://) or mltop in
            # another PID namespace. Show it with what the engine says; the header says why the rest is
            # missing. (A container measured before whose PID vanished was removed: it is dropped.)
            self._unseen.append(meta.name)
            return self._unmeasured(meta)
        else:
            paths = self._container_paths(meta, locator)
            net_pid = meta.pid
        prev = self._previous.get(meta.id)
        full = prev is None or (self._sweep_no + hash(meta.id)) % IDLE_FULL_READ_EVERY == 0
        limits = self._container_limits(meta, locator.version, paths, now)
        # The moment this container's counters are read (as `docker stats` pairs `read` with `preread`): its
        # rates divide by the time between two of these, not between two sweeps, whose engine list and NVML
        # sample before the counters take a different time each sweep (a slow nvmlInit, a cold first list).
        read_at = time.monotonic()
        counters = read_counters(locator.version, paths, limits, self._files.read,
                                 idle_since=None if full else prev.counters)
        idle = (not full and counters.cpu_usage_ns is not None
                and counters.cpu_usage_ns == prev.counters.cpu_usage_ns)
        # A container in the host's network namespace (a hostNetwork pod, --network host) has no traffic of its
        # own: /proc/<pid>/net/dev is the host's, which would be shown as its and keep it from ever resting.
        net = read_net_dev(net_pid, self._files.read) if net_pid and not self._in_host_netns(meta.id, net_pid) \
            else None
        at_rest = idle and counters == prev.counters and net == prev.net
        if at_rest and prev.at_rest and prev.meta is meta and prev.sample is not None:
            prev.at = read_at
            self._processes.carry(prev.process_keys, read_at)
            return prev.sample
        this = self._previous[meta.id] = _Previous(read_at, counters, net, meta=meta, at_rest=at_rest)

        cpu_percent = io_r = io_w = net_rx = net_tx = dt = None
        if prev is not None:
            dt = read_at - prev.at
            cpu_rate = _rate(counters.cpu_usage_ns, prev.counters.cpu_usage_ns, dt)
            cpu_percent = cpu_rate / 1e9 * 100.0 if cpu_rate is not None else None
            io_r = _rate(counters.io_read_bytes, prev.counters.io_read_bytes, dt)
            io_w = _rate(counters.io_write_bytes, prev.counters.io_write_bytes, dt)
            if net is not None and prev.net is not None:
                net_rx = _rate(net[0], prev.net[0], dt)
                net_tx = _rate(net[1], prev.net[1], dt)

        cfg = meta.config
        limit_cores = None
        if cfg.nano_cpus:
            limit_cores = cfg.nano_cpus / 1e9
        elif counters.cpu_quota_cores:
            limit_cores = counters.cpu_quota_cores
        limit_percent = cpu_percent / limit_cores if cpu_percent is not None and limit_cores else None

        processes: tuple[ProcessSample, ...] = ()
        processes_carried = False
        # (not before the inspect: a command line is redacted with the container's own secret values)
        if self.options.processes and not meta.provisional:
            if idle and prev.processes is not None:
                this.processes, this.process_keys = prev.idle_processes(), prev.process_keys
                self._processes.carry(this.process_keys, read_at)
                processes_carried = True
            else:
                # The same task count as at the last reading: its processes are probably the same ones, so
                # cgroup.procs (a fresh open each time, the costliest read of a busy container) is read only
                # when one of them is gone, and at every whole reading.
                same_tasks = (not full and prev.processes is not None and counters.pids is not None
                              and counters.pids == prev.counters.pids)
                this.processes, this.process_keys = self._sample_processes(
                    locator.version, paths, meta.secrets,
                    known=[key[0] for key in prev.process_keys] if same_tasks else None)
            processes = this.processes

        pressure = None
        if any(v is not None for v in (counters.psi_cpu, counters.psi_memory, counters.psi_io)):
            pressure = Pressure(counters.psi_cpu, counters.psi_memory, counters.psi_io)
        cgroup_path = paths.get("unified") or paths.get("memory") or next(iter(paths.values()), None)
        stats = None
        if self.options.container_stats:
            from .container_stats import read_container_stats

            stats = read_container_stats(
                locator.version, paths, net_pid=net_pid,
                pids=[p.host_pid for p in processes] if processes else cgroup_procs(locator.version, paths),
                usage_ns=counters.cpu_usage_ns, memory_usage=counters.memory_usage_bytes, tasks=counters.pids,
                previous=prev.sample.stats if prev is not None and prev.sample is not None else None,
                idle=idle, full=full, read=self._files.read)
        this.sample = ContainerSample(
            id=meta.id,
            name=meta.name,
            image=meta.image,
            status=meta.status,
            pid=meta.pid,
            cpu_percent=cpu_percent,
            cpu_limit_cores=limit_cores,
            cpu_limit_percent=limit_percent,
            memory_bytes=counters.memory_working_set_bytes,
            memory_limit_bytes=counters.memory_limit_bytes,
            memory_cache_bytes=counters.memory_cache_bytes,
            shm_bytes=counters.memory_shmem_bytes,
            pids=counters.pids,
            io_read_bytes=counters.io_read_bytes,
            io_write_bytes=counters.io_write_bytes,
            io_read_bytes_per_s=io_r,
            io_write_bytes_per_s=io_w,
            net_rx_bytes=net[0] if net else None,
            net_tx_bytes=net[1] if net else None,
            net_rx_bytes_per_s=net_rx,
            net_tx_bytes_per_s=net_tx,
            oom_kills=counters.oom_kills,
            cpu_throttled_periods=counters.cpu_throttled_periods,
            pressure=pressure,
            cgroup_path=cgroup_path,
            gpus=(),
            processes=processes,
            config=cfg,
            cpu_usage_seconds=counters.cpu_usage_ns / 1e9 if counters.cpu_usage_ns is not None else None,
            config_pending=meta.provisional, config_error=meta.inspect_error,
            interval_s=dt,
            carried=carried_fields(counters.carried, processes_carried),
            stats=stats,
            runtime=meta.runtime,
            kubernetes=meta.kubernetes,
        )
        return this.sample

    def _sample_processes(self, version: int, paths: dict[str, str], secrets: frozenset[str],
                          known: list[int] | None = None
                          ) -> tuple[tuple[ProcessSample, ...], tuple[ProcessKey, ...]]:
        """The container's processes. `known`: PIDs to read instead of listing cgroup.procs; when one of them
        is gone the list is read after all (and the PIDs already read are not read twice)."""
        out = []
        keys = []
        pids = known if known is not None else cgroup_procs(version, paths)
        done: set[int] = set()
        while True:
            for pid in pids:
                if pid in done:
                    continue
                done.add(pid)
                sampled = self._processes.sample(pid, secrets)
                if sampled is None:
                    if known is not None:
                        break  # one of them exited: others may have started
                    continue  # exited between listing and reading
                identity, stat, cpu = sampled
                keys.append(process_key(pid, stat))
                out.append(
                    ProcessSample(
                        host_pid=pid,
                        container_pid=identity.container_pid,
                        user=identity.user,
                        cmdline=identity.cmdline,
                        cpu_percent=cpu,
                        rss_bytes=stat.rss_bytes,
                        ppid=stat.ppid,
                        start_ticks=stat.start_ticks,
                    )
                )
            else:
                break
            pids, known = cgroup_procs(version, paths), None
        return tuple(out), tuple(keys)

    def _host_info(self, engine_status: EngineStatus, nvml_status: NvmlStatus, info: dict | None,
                   locator: CgroupLocator, running: int) -> HostInfo:
        info = info or {}
        # iowait's share of the CPU time between two readings of /proc/stat: a ratio of two counters read
        # together, so no clock enters it
        iowait = None
        current = hostfacts.cpu_times()
        if self._cpu_times is not None and current:
            total = current[0] - self._cpu_times[0]
            if total > 0:
                iowait = (current[1] - self._cpu_times[1]) / total * 100.0
        self._cpu_times = current
        cgroup_version = None
        if info.get("CgroupVersion"):
            cgroup_version = int(info["CgroupVersion"])
        elif not engine_status.ok:
            cgroup_version = locator.version
        return HostInfo(
            hostname=str(self._static["hostname"]),
            kernel=str(self._static["kernel"]),
            os_release=self._static["os_release"],  # type: ignore[arg-type]
            cpu_count=int(self._static["cpu_count"]),  # type: ignore[arg-type]
            memory_total_bytes=int(self._static["memory_total_bytes"]),  # type: ignore[arg-type]
            docker_version=self.engine.version if engine_status.ok else None,
            docker_host=self.engine.docker_host,
            cgroup_version=cgroup_version,
            cgroup_driver=info.get("CgroupDriver"),
            runtimes=tuple(sorted((info.get("Runtimes") or {}).keys())),
            default_runtime=info.get("DefaultRuntime"),
            cdi_spec_dirs=tuple(info.get("CDISpecDirs") or ()),
            engine=engine_status,
            nvml=nvml_status,
            pressure=hostfacts.host_pressure(),
            iowait_percent=iowait,
            # (a turned-off engine is no remote one: the pods' processes are this host's)
            limitations=hostfacts.view_limitations(self._unseen, running, "unix://" if self.engine.disabled
                                                   else self.engine.docker_host)
            + self._watch_limitations(engine_status),
        )


def _unmeasured_sample(meta: ContainerMeta) -> ContainerSample:
    """A container with what the engine says and null counters: stopped, or not measurable from here."""
    return ContainerSample(
        id=meta.id, name=meta.name, image=meta.image, status=meta.status, pid=meta.pid,
        cpu_percent=None, cpu_limit_cores=None, cpu_limit_percent=None, memory_bytes=None,
        memory_limit_bytes=meta.config.memory_limit_bytes, memory_cache_bytes=None, shm_bytes=None, pids=None,
        io_read_bytes=None, io_write_bytes=None, io_read_bytes_per_s=None, io_write_bytes_per_s=None,
        net_rx_bytes=None, net_tx_bytes=None, net_rx_bytes_per_s=None, net_tx_bytes_per_s=None,
        oom_kills=None, cpu_throttled_periods=None, pressure=None, cgroup_path=None, gpus=(), processes=(),
        config=meta.config, config_pending=meta.provisional, config_error=meta.inspect_error,
        runtime=meta.runtime, kubernetes=meta.kubernetes,
    )
