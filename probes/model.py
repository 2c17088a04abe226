"""The plain, frozen records one sampling sweep produces: everything that shows or judges reads these."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .source_records import ContainerAttempt, GpuAllocation, KubernetesInfo, SourceStatus  # noqa: F401  (records of the snapshot, kept apart)
from .sharing_records import GpuSharer, GpuSharing  # noqa: F401  (likewise)
from .gpu_records import (FABRIC_STATES, NVLINK_COUNTERS, GpmMetrics, GpuFabric, GpuProcess, GpuSample,  # noqa: F401
                          MigDevice, NvLink, NvLinkErrorWindow, NvLinkRise, SXidEvent, XidEvent)  # (likewise)
from .fabric_records import IbPort, PciGpu  # noqa: F401  (likewise)

SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- host and sources


@dataclass(frozen=True)
class EngineStatus:
    """Whether the Docker engine answered, and if not, why in words a user can act on."""

    status: str  # "ok" | "unreachable" | "permission_denied" | "error" | "disabled"
    error: str | None
    docker_host: str  # the endpoint in use, e.g. "unix:///var/run/docker.sock" or "ssh://gpu-box"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class NvmlStatus:
    """Whether NVML answered, and if not, why. `cuda_driver_version` is "12.2" style."""

    status: str  # see probes.nvml.NvmlState for the values ("ok", "library_not_found", ...)
    error: str | None
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    library_path: str | None = None
    sxid_events: tuple[SXidEvent, ...] = ()  # NVSwitch errors from the kernel log, oldest first

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    kernel: str
    os_release: str | None
    cpu_count: int
    memory_total_bytes: int
    docker_version: str | None
    docker_host: str
    cgroup_version: int | None  # 1 or 2, from the engine (or the filesystem when the engine is down)
    cgroup_driver: str | None  # "cgroupfs" | "systemd"
    runtimes: tuple[str, ...]
    default_runtime: str | None
    cdi_spec_dirs: tuple[str, ...]
    engine: EngineStatus
    nvml: NvmlStatus
    # Host pressure (PSI) "some avg10" per resource when the kernel exposes it, and iowait share.
    pressure: Mapping[str, float] = field(default_factory=dict)
    iowait_percent: float | None = None
    # Facts about the mltop process itself that limit what it can see (e.g. running in a container
    # without --pid=host), in words.
    limitations: tuple[str, ...] = ()
    # Every source of containers asked this sweep, Docker first (snapshot --json's host.sources[])
    sources: tuple[SourceStatus, ...] = ()

    @property
    def engine_down(self) -> bool:
        """The Docker engine should answer and does not. False where it is absent but another source (a CRI
        runtime) answers: a Kubernetes node without Docker is no alarm; nor is an engine turned off
        (--docker-host none). ("absent" as the engine's own status: a fleet host read from an agent's
        mltop_engine_up, which says so where the agent judged it.)"""
        if self.engine.ok or self.engine.status in ("disabled", "absent"):
            return False
        docker = next((s for s in self.sources if s.kind == "docker"), None)
        return not (docker is not None and docker.quiet and any(s.ok for s in self.sources))

    @property
    def no_container_source(self) -> str | None:
        """Why no source names containers, by choice: the Docker engine turned off and no CRI runtime asked
        (--cri-endpoint none, or none of its default sockets here); None while one is asked."""
        if self.engine.status != "disabled" or any(s.kind == "cri" for s in self.sources):
            return None
        return (f"no container source is asked: {self.engine.error or 'Docker turned off'}, and no CRI runtime "
                "(--cri-endpoint none, or none of its default sockets here): the host and its GPUs only")


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class DeviceRequest:
    driver: str  # "" (default: nvidia), "nvidia", "cdi"
    count: int  # -1 = all
    device_ids: tuple[str, ...]
    capabilities: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class DeviceMapping:
    """One `--device` entry (HostConfig.Devices): a host device node passed into the container."""

    path_on_host: str
    path_in_container: str
    permissions: str = "rwm"


@dataclass(frozen=True)
class Mount:
    type: str  # "bind" | "volume" | "tmpfs" | ...
    source: str
    destination: str
    read_only: bool


@dataclass(frozen=True)
class ContainerConfig:
    """What matters for ML from `docker inspect`. Environment values are already redacted."""

    command: tuple[str, ...]
    entrypoint: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # (name, value) with secret-looking values redacted at the source
    labels: Mapping[str, str]
    created: str | None
    started_at: str | None
    finished_at: str | None
    restart_count: int
    restart_policy: str | None
    exit_code: int | None
    oom_killed: bool
    error: str | None  # State.Error, e.g. a failed start
    runtime: str | None  # HostConfig.Runtime
    device_requests: tuple[DeviceRequest, ...]
    shm_size_bytes: int | None
    ipc_mode: str | None
    pid_mode: str | None
    network_mode: str | None
    privileged: bool
    cap_add: tuple[str, ...]
    memory_limit_bytes: int | None  # HostConfig.Memory (None = unlimited)
    nano_cpus: int | None
    cpu_quota: int | None
    cpu_period: int | None
    cpuset_cpus: str | None
    mounts: tuple[Mount, ...]
    # HostConfig.BlkioDeviceReadBps etc: [{"Path": "/dev/vda", "Rate": 1048576}, ...]
    blkio_throttles: Mapping[str, tuple[Mapping[str, Any], ...]]
    ulimits: tuple[Mapping[str, Any], ...]
    devices: tuple[DeviceMapping, ...] = ()  # HostConfig.Devices (--device)
    # CRI containers: the container's annotations, its pod's labels and annotations (secret-looking values
    # redacted), and the kubelet's log file of the container
    annotations: Mapping[str, str] = field(default_factory=dict)
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    log_path: str | None = None
    # CRI containers: the CDI devices it asks for ("nvidia.com/gpu=0"), from the kubelet's CRI request
    # (CDI_devices) and the device plugin's `cdi.k8s.io/*` annotations; a CDI-enabled runtime injects them
    cdi_devices: tuple[str, ...] = ()

    def env_value(self, name: str) -> str | None:
        for key, value in self.env:
            if key == name:
                return value
        return None

    @property
    def requests_gpus(self) -> bool:
        """True when the container asks for GPUs by device request or by the nvidia runtime."""
        if self.runtime == "nvidia":
            return True
        for request in self.device_requests:
            if request.driver in ("", "nvidia") and any("gpu" in caps for caps in request.capabilities):
                return True
            if request.driver == "cdi" and any("nvidia.com/gpu" in d for d in request.device_ids):
                return True
        return False

    @property
    def nvidia_device_nodes(self) -> tuple[str, ...]:
        """The /dev/nvidia* nodes passed with --device (as the container sees them)."""
        return tuple(d.path_in_container for d in self.devices
                     if d.path_in_container.startswith("/dev/nvidia") or d.path_on_host.startswith("/dev/nvidia"))

    def memlock_limit(self) -> int | None:
        """The memlock ulimit's soft value from --ulimit (-1 = unlimited); None when not set here."""
        for u in self.ulimits:
            if str(u.get("Name", "")).lower() == "memlock":
                try:
                    return int(u.get("Soft", u.get("Hard")))
                except (TypeError, ValueError):
                    return None
        return None


@dataclass(frozen=True)
class Pressure:
    """PSI "some avg10" (%) per resource; None where the kernel gives no PSI for this cgroup."""

    cpu: float | None
    memory: float | None
    io: float | None


@dataclass(frozen=True)
class ProcessSample:
    host_pid: int
    container_pid: int | None  # innermost NSpid
    user: str | None
    cmdline: str
    cpu_percent: float | None  # None on the first sweep (no previous sample to diff against)
    rss_bytes: int | None
    gpu_memory_bytes: int | None = None
    gpu_indices: tuple[int, ...] = ()
    sm_percent: float | None = None
    ppid: int | None = None  # the parent's host PID (/proc/<pid>/stat), for the processes pane's tree (`t`)
    # /proc/<pid>/stat's start time (clock ticks since boot): with the PID, one program run. Checked again before
    # mltop attaches to or signals the PID (diagnostics/actions/pid_check.py). None: not read (a recording).
    start_ticks: int | None = None


@dataclass(frozen=True)
class ContainerGpuUse:
    index: int
    uuid: str
    memory_bytes: int | None
    sm_percent: float | None


@dataclass(frozen=True)
class NetInterface:
    """Counters of one network interface in a container's network namespace (/proc/<pid>/net/dev)."""

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


@dataclass(frozen=True)
class ContainerStats:
    """The rest of what cAdvisor exports of a container, read for `mltop serve` (probes/container_stats.py).
    None where this host's cgroups cannot give a figure (e.g. swap without swap accounting, failcnt on v2)."""

    cpu_user_seconds: float | None
    cpu_system_seconds: float | None
    cpu_cfs_periods: int | None
    cpu_cfs_throttled_periods: int | None
    cpu_cfs_throttled_seconds: float | None
    cpu_quota_us: int | None  # the CFS quota per period; None when unlimited
    cpu_period_us: int | None
    cpu_shares: int | None  # cpu.shares (v1), or cpu.weight converted to shares (v2), as cAdvisor does
    memory_usage_bytes: int | None  # memory.usage_in_bytes / memory.current: everything charged, cache included
    memory_rss_bytes: int | None
    memory_cache_bytes: int | None
    memory_swap_bytes: int | None
    memory_mapped_file_bytes: int | None
    memory_failcnt: int | None  # times usage hit the limit (v1 memory.failcnt; v2 memory.events max)
    memory_max_usage_bytes: int | None  # v1 memory.max_usage_in_bytes; v2 memory.peak where the kernel has it
    memory_reservation_bytes: int | None  # soft limit (v1) / memory.low (v2); None when unset
    processes: int | None
    threads: int | None  # tasks in the cgroup (pids.current)
    file_descriptors: int | None
    sockets: int | None
    network: tuple[NetInterface, ...] = ()


@dataclass(frozen=True)
class ContainerSample:
    id: str
    name: str
    image: str
    status: str  # engine State.Status: "running", "exited", "created", "paused", "restarting", "dead"
    pid: int | None  # State.Pid of the init process (None when not running)
    cpu_percent: float | None  # one busy core = 100
    cpu_limit_cores: float | None
    cpu_limit_percent: float | None  # share of the container's CPU limit, when it has one
    memory_bytes: int | None  # working set, as `docker stats` shows it
    memory_limit_bytes: int | None  # None = no limit
    memory_cache_bytes: int | None
    shm_bytes: int | None  # `shmem` in memory.stat: tmpfs (/dev/shm) pages charged to the cgroup
    pids: int | None
    io_read_bytes: int | None  # cumulative
    io_write_bytes: int | None
    io_read_bytes_per_s: float | None
    io_write_bytes_per_s: float | None
    net_rx_bytes: int | None
    net_tx_bytes: int | None
    net_rx_bytes_per_s: float | None
    net_tx_bytes_per_s: float | None
    oom_kills: int | None  # the cgroup's oom_kill counter
    cpu_throttled_periods: int | None
    pressure: Pressure | None
    cgroup_path: str | None
    gpus: tuple[ContainerGpuUse, ...]
    processes: tuple[ProcessSample, ...]
    config: ContainerConfig
    cpu_usage_seconds: float | None = None  # cumulative CPU time of the cgroup (a counter, for exporters)
    # True for a moment on a dense host's first sweeps in the dashboard: the container came from the engine's
    # list and its `docker inspect` is still on the way, so `config` is empty and processes are not read yet.
    config_pending: bool = False
    # The engine's words when its `docker inspect` failed (tried again at the next full list): `config` is as
    # empty as while pending (or, when a re-inspect after an event failed, the one read before).
    config_error: str | None = None
    # Seconds between the two readings of this container's counters that its rates (CPU, I/O, network) and
    # counter differences divide by: each reading is timed as it is made, not when the sweep began.
    interval_s: float | None = None
    # The figures of this sample taken from an earlier reading instead of read again, by field name (e.g.
    # "memory_bytes", "pids", "processes"): only for a container whose CPU counter did not move since, so no
    # task of it ran; a whole reading every few sweeps catches up what page aging moved meanwhile.
    carried: frozenset[str] = frozenset()
    stats: ContainerStats | None = None  # cAdvisor's further figures; read only when asked (mltop serve)
    runtime: str | None = None  # "docker" | "containerd" | "cri-o" | ... (the source that named it)
    kubernetes: KubernetesInfo | None = None  # None outside pods

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def config_unknown(self) -> str | None:
        """Why `config` holds nothing to judge (its docker inspect is pending or failed); None once it is read."""
        if self.config_error:
            return f"its docker inspect failed ({self.config_error})"
        if self.config_pending:
            return "its docker inspect is still pending"
        return None

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def gpu_memory_bytes(self) -> int | None:
        values = [g.memory_bytes for g in self.gpus if g.memory_bytes is not None]
        return sum(values) if values else None

    @property
    def gpu_sm_percent(self) -> float | None:
        values = [g.sm_percent for g in self.gpus if g.sm_percent is not None]
        return sum(values) if values else None


@dataclass(frozen=True)
class SelfCost:
    """What mltop itself costs, measured by the sweep that made the snapshot: so a user can see at a glance
    that the tool is not the problem. None where not known yet (CPU % needs two sweeps)."""

    cpu_percent: float | None  # the whole mltop process (every thread: UI, sampler, watchers), one core = 100
    rss_bytes: int | None
    sweep_s: float  # how long this sweep took: engine, cgroups, /proc, NVML, attribution
    nvml_slowest_call_s: float | None = None  # the slowest single NVML call of the sweep; None without NVML
    nvml_slowest_call: str | None = None  # its function name, e.g. "nvmlDeviceGetProcessUtilization"


@dataclass(frozen=True)
class Snapshot:
    """One sweep: host facts, GPUs, containers with their processes and GPU use."""

    taken_at: float  # unix time
    interval_s: float | None  # seconds since the previous sweep (each container's rates: its own interval_s)
    host: HostInfo
    gpus: tuple[GpuSample, ...]
    containers: tuple[ContainerSample, ...]
    schema_version: int = SCHEMA_VERSION
    self_cost: SelfCost | None = None  # None in snapshots not made by a live sweep (tests, recordings)
    # The host's fabric from sysfs (--sysfs-root): InfiniBand/RoCE ports, and the NVIDIA GPUs on PCI (listed by
    # NVML or not). Not recorded: a replayed snapshot has none.
    infiniband: tuple[IbPort, ...] = ()
    pci_gpus: tuple[PciGpu, ...] = ()

    def container(self, key: str) -> ContainerSample | None:
        """Find a container by full id, id prefix or name."""
        for c in self.containers:
            if c.id == key or c.name == key:
                return c
        matches = [c for c in self.containers if c.id.startswith(key)]
        return matches[0] if len(matches) == 1 else None

    def select(self, keys: Iterable[str] | None) -> tuple[tuple[ContainerSample, ...], tuple[str, ...]]:
        """(containers matching the names / ids / id prefixes, in that order without repeats; the keys that
        match none). All containers when `keys` is None or empty. A pod's `namespace/pod` that names no
        container itself selects every container of the pod (as `kubectl describe pod` shows them)."""
        if not keys:
            return self.containers, ()
        chosen: list[ContainerSample] = []
        missing: list[str] = []
        for key in keys:
            match = self.container(key)
            matches = [match] if match is not None else self.pod_containers(key)
            if not matches:
                missing.append(key)
            chosen += [m for m in matches if m not in chosen]
        return tuple(chosen), tuple(missing)

    def pod_containers(self, key: str) -> list[ContainerSample]:
        """The containers of pod `namespace/pod`; [] for a key that is not one."""
        namespace, _, pod = key.partition("/")
        if not pod or "/" in pod:
            return []
        return [c for c in self.containers
                if c.kubernetes is not None and (c.kubernetes.namespace, c.kubernetes.pod) == (namespace, pod)]

    # One place for "uses a GPU" and "has GPUs", so no finding contradicts what the same snapshot shows.

    def gpu_processes_of(self, c: ContainerSample) -> tuple[GpuProcess, ...]:
        """The NVML processes attributed to container `c`, on every GPU."""
        return tuple(p for g in self.gpus for p in g.processes if p.container_id == c.id)

    def uses_gpu(self, c: ContainerSample) -> bool:
        """NVML lists any of the container's processes on a GPU (whatever its configuration says)."""
        return bool(c.gpus) or bool(self.gpu_processes_of(c))

    def gpu_access(self, c: ContainerSample) -> tuple[str, ...]:
        """How the container reaches GPUs by its configuration, in words; empty when it asks for none.

        A device request (--gpus, CDI), the nvidia runtime (its own, or the engine's default runtime),
        /dev/nvidia* nodes passed with --device, or --privileged (every host device node).
        """
        cfg = c.config
        out = []
        if any(r.driver in ("", "nvidia") and any("gpu" in caps for caps in r.capabilities)
               for r in cfg.device_requests):
            out.append("HostConfig.DeviceRequests asks for GPUs (--gpus)")
        if any(r.driver == "cdi" and any("nvidia.com/gpu" in d for d in r.device_ids) for r in cfg.device_requests):
            out.append("HostConfig.DeviceRequests names CDI devices nvidia.com/gpu")
        if c.kubernetes is not None:  # a pod: its sandbox's runtime handler; the Docker engine's default is not its
            if cfg.runtime and cfg.runtime.startswith("nvidia"):
                out.append(f"runtime handler {cfg.runtime} (runtimeClassName)")
            cdi = [d for d in cfg.cdi_devices if d.startswith("nvidia.com/")]
            if cdi:
                out.append(f"CDI devices {', '.join(cdi)}")
            runtime = None
        else:
            runtime = cfg.runtime or self.host.default_runtime
        if runtime and runtime.startswith("nvidia"):
            how = "HostConfig.Runtime" if cfg.runtime else "the engine's default runtime"
            out.append(f"{how} {runtime}")
        nodes = cfg.nvidia_device_nodes
        if nodes:
            out.append(f"HostConfig.Devices passes {', '.join(nodes)}")
        if cfg.privileged:
            out.append("HostConfig.Privileged true (every host device node, /dev/nvidia* included)")
        return tuple(out)

    def has_gpus(self, c: ContainerSample) -> bool:
        """The container can reach GPUs: by configuration, or because NVML shows it on one."""
        return bool(self.gpu_access(c)) or self.uses_gpu(c)

    @property
    def host_gpu_processes(self) -> tuple[GpuProcess, ...]:
        return tuple(p for g in self.gpus for p in g.processes if p.container_id is None)


_SCALARS = (str, int, float, bool, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)  # exactly these types: taken as they are without a call
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def to_jsonable(value: Any) -> Any:
    """Turn snapshot records into JSON-ready dicts and lists (tuples become lists).

    (A snapshot of 500 containers is ~40,000 values, most of them plain scalars: those are taken where they
    stand, without a call, and a record class's field names are looked up once.)"""
    if isinstance(value, _SCALARS):
        return value
    cls = type(value)
    names = _FIELD_NAMES.get(cls)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(value))
    scalar = _SCALAR_TYPES
    if names is not None:
        out = {}
        for name in names:
            field = getattr(value, name)
            out[name] = field if type(field) in scalar else to_jsonable(field)
        return out
    if isinstance(value, Mapping):
        return {str(k): v if type(v) in scalar else to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [v if type(v) in scalar else to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(v if type(v) in scalar else to_jsonable(v) for v in value)
    return value


def snapshot_to_json(snapshot: Snapshot) -> dict[str, Any]:
    """The documented `mltop snapshot --json` document."""
    doc = to_jsonable(snapshot)
    doc = {"schema_version": doc.pop("schema_version"), **doc}
    # Derived per-container GPU totals are handy for scripts; they are properties, so add them.
    for c_doc, c in zip(doc["containers"], snapshot.containers):
        c_doc["gpu_memory_bytes"] = c.gpu_memory_bytes
        c_doc["gpu_sm_percent"] = c.gpu_sm_percent
    return doc
