"""One host of the fleet as a snapshot source: its GPUs and containers rebuilt from the series its `mltop serve`
exposed, read from Prometheus at a time (instant queries filtered to the host's target), graphs from range
queries. It behaves like a recording (`live` False, a time cursor that can step and jump), so the dashboard
shows it with every screen it has; it can never act: nothing here reaches the host.

What Prometheus does not hold stays unknown (None): a container's configuration, its processes, the kernel.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Mapping

from .model import (
    ContainerConfig,
    ContainerGpuUse,
    ContainerSample,
    EngineStatus,
    GpuProcess,
    GpuSample,
    HostInfo,
    NvmlStatus,
    Snapshot,
)
from .prometheus_api import PrometheusClient, PrometheusError, Sample

MIB = 1 << 20
STEP_S = 15.0  # how far `]` moves: a typical scrape interval
HISTORY_POINTS = 120  # graph resolution of `store.series`
CANNOT_ACT = "The fleet view reads Prometheus"


class RemoteSilence:
    """A silence a host's agent reports (silenced="true"); its end and reason stay on the host."""

    __slots__ = ("target", "until", "reason", "words")

    def __init__(self, hostname: str):
        self.target, self.until = "", None
        self.reason = self.words = f"silenced on the host (`ssh {hostname} mltop silence list` says until when and why)"


class HostFinding:
    """A finding as `mltop_finding` exposes it: code, severity and container; the evidence stays on the host."""

    __slots__ = ("code", "severity", "container", "title", "evidence", "fix", "gpu", "silenced")

    def __init__(self, code: str, severity: str, container: str | None, hostname: str, silenced: bool = False):
        self.gpu = None
        # silenced="true": the host's silence holds it; until when and why are in `mltop silence list` there
        self.silenced = RemoteSilence(hostname) if silenced else None
        self.code = code
        self.severity = severity
        self.container = container
        self.title = code
        self.evidence = ("read from Prometheus (mltop_finding): the evidence is on the host",)
        self.fix = f"run `ssh -t {hostname} mltop` and press d for the evidence and the fix"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "critical": 2}.get(self.severity, 0)

    def to_json(self) -> dict:
        return {"code": self.code, "severity": self.severity, "container": self.container, "title": self.title,
                "evidence": list(self.evidence), "fix": self.fix}


def _empty_config(labels: Mapping[str, str] | None = None) -> ContainerConfig:
    return ContainerConfig(
        command=(), entrypoint=(), env=(), labels=dict(labels or {}), created=None, started_at=None,
        finished_at=None, restart_count=0, restart_policy=None, exit_code=None, oom_killed=False, error=None,
        runtime=None, device_requests=(), shm_size_bytes=None, ipc_mode=None, pid_mode=None, network_mode=None,
        privileged=False, cap_add=(), memory_limit_bytes=None, nano_cpus=None, cpu_quota=None, cpu_period=None,
        cpuset_cpus=None, mounts=(), blkio_throttles={}, ulimits=())


def container_id_of(labels: Mapping[str, str]) -> str:
    """The container id from serve's labels: `container_id` on GPU series, the last part of cAdvisor's `id`."""
    if labels.get("container_id"):
        return labels["container_id"]
    path = labels.get("id", "")
    tail = path.rstrip("/").rpartition("/")[2]
    for prefix in ("docker-", "cri-containerd-", "crio-", "libpod-"):
        if tail.startswith(prefix):
            tail = tail[len(prefix):]
    return tail.removesuffix(".scope") or labels.get("name", "")


class _SeriesStore:
    """What the dashboard's graphs ask of a recording (`series`), answered with range queries."""

    def __init__(self, source: "PrometheusHostSource"):
        self._source = source

    def series(self, t0: float, t1: float):
        return self._source.series(t0, t1)

    def events(self, **kwargs) -> list:
        return []  # Prometheus holds no engine events: the host's own `mltop events` has them

    def close(self) -> None:
        pass


class PrometheusHostSource:
    """A fleet host as a SnapshotSource with a time cursor. Following the present (the default), each
    `latest()` reads the newest figures; after a step back it stays at its time until moved."""

    live = False
    cannot_act = CANNOT_ACT
    past_label = "PROMETHEUS"
    follows_present = True  # the dashboard starts playing: each refresh reads the newest figures

    def __init__(self, client: PrometheusClient, job: str, instance: str, hostname: str, *,
                 lookback_s: float = 3600.0, clock: Callable[[], float] = time.time):
        self.client = client
        self.job, self.instance, self.hostname = job, instance, hostname
        self.lookback_s = lookback_s
        self._clock = clock
        self._time: float | None = None  # None: follow the present
        self._last_read: float = clock()
        self.store = _SeriesStore(self)
        self.act_command = f"ssh -t {hostname} mltop"

    # -- SnapshotSource ---------------------------------------------------------------------------------

    def latest(self) -> Snapshot:
        t = self.time
        self._last_read = t
        return self.snapshot_at(t)

    def close(self) -> None:
        pass

    # -- time, as a recording's ------------------------------------------------------------------------

    @property
    def time(self) -> float:
        return self._clock() if self._time is None else self._time

    @property
    def horizon(self) -> float | None:
        return None if self._time is None else self._time + STEP_S - 0.001

    @property
    def first_time(self) -> float:
        return self._clock() - self.lookback_s

    @property
    def last_time(self) -> float:
        return self._clock()

    def at(self, t: float) -> Snapshot:
        self.seek(t)
        return self.latest()

    def range(self, t0: float, t1: float) -> Iterator[Snapshot]:
        t = t0
        while t <= t1:
            yield self.snapshot_at(t)
            t += STEP_S

    def seek(self, t: float) -> None:
        now = self._clock()
        self._time = None if t >= now - 1 else max(t, now - self.lookback_s)

    def step(self, sweeps: int) -> bool:
        return self.jump(sweeps * STEP_S)

    def jump(self, seconds: float) -> bool:
        before = self._time
        if self._time is None and seconds >= 0:
            return False  # already at the present
        self.seek(self.time + seconds)
        return self._time != before

    def findings(self) -> list[HostFinding]:
        return [HostFinding(s.labels.get("code", ""), s.labels.get("severity", ""), s.labels.get("container") or None,
                            self.hostname, silenced=s.labels.get("silenced") == "true")
                for s in self._query("mltop_finding", self.time) if s.value == 1.0]

    def events(self, **kwargs) -> list:
        return []

    # -- reading ----------------------------------------------------------------------------------------

    def _selector(self, extra: str = "") -> str:
        job = self.job.replace("\\", "\\\\").replace('"', '\\"')
        instance = self.instance.replace("\\", "\\\\").replace('"', '\\"')
        return f'job="{job}",instance="{instance}"' + (f",{extra}" if extra else "")

    def _query(self, name_or_expr: str, t: float, *, name_regex: bool = False) -> list[Sample]:
        if name_regex:
            expr = f'{{__name__=~"{name_or_expr}",{self._selector()}}}'
        else:
            expr = f"{name_or_expr}{{{self._selector()}}}"
        return self.client.query(expr, at=t)

    def _rate(self, counter: str, t: float) -> dict[str, float]:
        samples = self.client.query(f"rate({counter}{{{self._selector()}}}[1m])", at=t)
        return {container_id_of(s.labels): s.value for s in samples}

    def snapshot_at(self, t: float) -> Snapshot:
        """The host's figures at `t`. Raises PrometheusError when Prometheus cannot be read."""
        dcgm = self._query("DCGM_FI_DEV_.*|DCGM_FI_PROF_.*", t, name_regex=True)
        cadvisor = self._query("container_.*|machine_.*", t, name_regex=True)
        mine = self._query("mltop_container_gpu_.*|mltop_host_gpu_.*|mltop_(nvml|engine)_up|mltop_host_info", t,
                           name_regex=True)
        rates = {name: self._rate(name, t) for name in (
            "container_cpu_usage_seconds_total", "container_fs_reads_bytes_total",
            "container_fs_writes_bytes_total", "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total")}
        gpus = self._gpus(dcgm, mine)
        containers = self._containers(cadvisor, mine, rates, gpus)
        by_name: dict[str, list[Sample]] = {}
        for s in mine + cadvisor:
            by_name.setdefault(s.labels.get("__name__", ""), []).append(s)
        nvml = (by_name.get("mltop_nvml_up") or [None])[0]
        engine = (by_name.get("mltop_engine_up") or [None])[0]
        machine_cores = (by_name.get("machine_cpu_cores") or [None])[0]
        machine_memory = (by_name.get("machine_memory_bytes") or [None])[0]
        host = HostInfo(
            hostname=self.hostname, kernel="", os_release=None,
            cpu_count=int(machine_cores.value) if machine_cores else 0,
            memory_total_bytes=int(machine_memory.value) if machine_memory else 0,
            docker_version=None, docker_host=f"prometheus: {self.instance}",
            cgroup_version=None, cgroup_driver=None, runtimes=(), default_runtime=None, cdi_spec_dirs=(),
            engine=EngineStatus(engine.labels.get("status", "ok") if engine else "unknown",
                                None if engine is None or engine.value == 1 else _engine_error(engine.labels),
                                f"prometheus: {self.instance}"),
            nvml=NvmlStatus(nvml.labels.get("status", "ok") if nvml else "unknown",
                            None if nvml is None or nvml.value == 1 else "the agent's NVML did not answer"),
            limitations=(f"read from Prometheus ({self.client.display_url}): no processes, logs or container "
                         f"configuration; run `ssh -t {self.hostname} mltop` for them",),
        )
        return Snapshot(taken_at=t, interval_s=STEP_S, host=host, gpus=gpus, containers=containers)

    def _gpus(self, dcgm: list[Sample], mine: list[Sample]) -> tuple[GpuSample, ...]:
        fields: dict[str, dict[str, float]] = {}
        labels: dict[str, Mapping[str, str]] = {}
        for s in dcgm:
            uuid = s.labels.get("UUID", "")
            if s.labels.get("GPU_I_ID"):
                continue  # MIG instance series: the parent GPU's own series carry the totals
            fields.setdefault(uuid, {})[s.labels.get("__name__", "")] = s.value
            labels.setdefault(uuid, s.labels)
        procs: dict[str, list[GpuProcess]] = {}
        for s in mine:
            if s.labels.get("__name__") != "mltop_container_gpu_memory_bytes":
                continue
            cid = container_id_of(s.labels)
            procs.setdefault(s.labels.get("UUID", ""), []).append(GpuProcess(
                host_pid=0, type="compute", gpu_memory_bytes=int(s.value), sm_percent=None,
                name=None, container_id=cid, container_name=s.labels.get("container") or cid[:12]))
        sm_by = {(container_id_of(s.labels), s.labels.get("UUID", "")): s.value for s in mine
                 if s.labels.get("__name__") == "mltop_container_gpu_sm_utilization_percent"}
        out = []
        for uuid, f in fields.items():
            lab = labels[uuid]

            def v(name: str) -> float | None:
                return f.get(name)

            used, free = v("DCGM_FI_DEV_FB_USED"), v("DCGM_FI_DEV_FB_FREE")
            plist = tuple(
                GpuProcess(p.host_pid, p.type, p.gpu_memory_bytes, sm_by.get((p.container_id or "", uuid)), p.name,
                           p.container_id, p.container_name) for p in procs.get(uuid, ()))
            index = lab.get("gpu", "0")
            out.append(GpuSample(
                index=int(index) if index.isdigit() else 0, uuid=uuid, name=lab.get("modelName", ""),
                utilization_percent=v("DCGM_FI_DEV_GPU_UTIL"),
                memory_utilization_percent=v("DCGM_FI_DEV_MEM_COPY_UTIL"),
                memory_used_bytes=int(used * MIB) if used is not None else None,
                memory_total_bytes=int((used + free) * MIB) if used is not None and free is not None else None,
                temperature_c=v("DCGM_FI_DEV_GPU_TEMP"), power_w=v("DCGM_FI_DEV_POWER_USAGE"), power_limit_w=None,
                throttle_reasons=(), persistence_mode=None, processes=plist, pci_bus_id=lab.get("pci_bus_id") or None,
                sm_clock_mhz=_int(v("DCGM_FI_DEV_SM_CLOCK")), sm_clock_max_mhz=_int(v("DCGM_FI_DEV_MAX_SM_CLOCK")),
                memory_clock_mhz=_int(v("DCGM_FI_DEV_MEM_CLOCK")),
                memory_clock_max_mhz=_int(v("DCGM_FI_DEV_MAX_MEM_CLOCK")),
                performance_state=_int(v("DCGM_FI_DEV_PSTATE")), fan_percent=v("DCGM_FI_DEV_FAN_SPEED"),
                ecc_volatile_corrected=_int(v("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL")),
                ecc_volatile_uncorrected=_int(v("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL")),
                pcie_generation=_int(v("DCGM_FI_DEV_PCIE_LINK_GEN")), pcie_width=_int(v("DCGM_FI_DEV_PCIE_LINK_WIDTH")),
                pcie_generation_max=_int(v("DCGM_FI_DEV_PCIE_MAX_LINK_GEN")),
                pcie_width_max=_int(v("DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH")),
                encoder_percent=v("DCGM_FI_DEV_ENC_UTIL"), decoder_percent=v("DCGM_FI_DEV_DEC_UTIL"),
            ))
        out.sort(key=lambda g: g.index)
        return tuple(out)

    def _containers(self, cadvisor: list[Sample], mine: list[Sample], rates: Mapping[str, Mapping[str, float]],
                    gpus: tuple[GpuSample, ...]) -> tuple[ContainerSample, ...]:
        values: dict[str, dict[str, float]] = {}
        labels: dict[str, Mapping[str, str]] = {}
        for s in cadvisor:
            name = s.labels.get("__name__", "")
            if not name.startswith("container_"):
                continue
            cid = container_id_of(s.labels)
            values.setdefault(cid, {})[name] = s.value
            labels.setdefault(cid, s.labels)
        uses: dict[str, list[ContainerGpuUse]] = {}
        for g in gpus:
            for p in g.processes:
                if p.container_id:
                    uses.setdefault(p.container_id, []).append(
                        ContainerGpuUse(g.index, g.uuid, p.gpu_memory_bytes, p.sm_percent))
        out = []
        for cid, f in values.items():
            lab = labels[cid]
            limit = f.get("container_spec_memory_limit_bytes")
            quota, period = f.get("container_spec_cpu_quota"), f.get("container_spec_cpu_period")
            cores = quota / period if quota and period else None
            cpu = rates["container_cpu_usage_seconds_total"].get(cid)
            cpu_percent = cpu * 100 if cpu is not None else None
            usage, wss = f.get("container_memory_usage_bytes"), f.get("container_memory_working_set_bytes")
            out.append(ContainerSample(
                id=cid, name=lab.get("name") or cid[:12], image=lab.get("image", ""), status="running", pid=None,
                cpu_percent=cpu_percent, cpu_limit_cores=cores,
                cpu_limit_percent=cpu_percent / cores if cpu_percent is not None and cores else None,
                memory_bytes=_int(wss), memory_limit_bytes=_int(limit) if limit else None,
                memory_cache_bytes=_int(usage - wss) if usage is not None and wss is not None else None,
                shm_bytes=None, pids=_int(f.get("container_processes")),
                io_read_bytes=_int(f.get("container_fs_reads_bytes_total")),
                io_write_bytes=_int(f.get("container_fs_writes_bytes_total")),
                io_read_bytes_per_s=rates["container_fs_reads_bytes_total"].get(cid),
                io_write_bytes_per_s=rates["container_fs_writes_bytes_total"].get(cid),
                net_rx_bytes=_int(f.get("container_network_receive_bytes_total")),
                net_tx_bytes=_int(f.get("container_network_transmit_bytes_total")),
                net_rx_bytes_per_s=rates["container_network_receive_bytes_total"].get(cid),
                net_tx_bytes_per_s=rates["container_network_transmit_bytes_total"].get(cid),
                oom_kills=_int(f.get("container_oom_events_total")),
                cpu_throttled_periods=_int(f.get("container_cpu_cfs_throttled_periods_total")),
                pressure=None, cgroup_path=lab.get("id"), gpus=tuple(uses.get(cid, ())), processes=(),
                config=_empty_config(), cpu_usage_seconds=f.get("container_cpu_usage_seconds_total"),
            ))
        out.sort(key=lambda c: c.name)
        return tuple(out)

    def series(self, t0: float, t1: float):
        """(times, per container id {metric: values}, per GPU uuid {metric: values}) as a recording's store
        gives them, from range queries at HISTORY_POINTS steps."""
        step = max((t1 - t0) / HISTORY_POINTS, 1.0)
        times = []
        t = t0
        while t <= t1:
            times.append(t)
            t += step
        if not times:
            return [], {}, {}

        def by_time(expr: str, key: Callable[[Mapping[str, str]], str], scale: float = 1.0) -> dict[str, list]:
            out: dict[str, list] = {}
            try:
                result = self.client.query_range(expr, times[0], times[-1], step)
            except PrometheusError:
                return out
            for series in result:
                values: list = [None] * len(times)
                for pt, pv in series.points:
                    i = round((pt - times[0]) / step)
                    if 0 <= i < len(times):
                        values[i] = pv * scale
                out[key(series.labels)] = values
            return out

        sel = self._selector()
        cpu = by_time(f"rate(container_cpu_usage_seconds_total{{{sel}}}[1m])", container_id_of, 100.0)
        mem = by_time(f"container_memory_working_set_bytes{{{sel}}}", container_id_of)
        gmem = by_time(f"sum by (container_id) (mltop_container_gpu_memory_bytes{{{sel}}})", container_id_of)
        gsm = by_time(f"sum by (container_id) (mltop_container_gpu_sm_utilization_percent{{{sel}}})", container_id_of)
        containers = {}
        for cid in set(cpu) | set(mem) | set(gmem):
            containers[cid] = {"cpu_percent": cpu.get(cid, [None] * len(times)),
                               "memory_bytes": mem.get(cid, [None] * len(times)),
                               "gpu_percent": gsm.get(cid, [None] * len(times)),
                               "gpu_memory_bytes": gmem.get(cid, [None] * len(times))}
        util = by_time(f"DCGM_FI_DEV_GPU_UTIL{{{sel}}}", lambda labels: labels.get("UUID", ""))
        used = by_time(f"DCGM_FI_DEV_FB_USED{{{sel}}}", lambda labels: labels.get("UUID", ""), float(MIB))
        gpus = {uuid: {"utilization_percent": util.get(uuid, [None] * len(times)),
                       "memory_used_bytes": used.get(uuid, [None] * len(times))} for uuid in set(util) | set(used)}
        return times, containers, gpus


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _engine_error(labels: dict) -> str:
    """Why an agent's engine gave no containers, from mltop_engine_up's status (metrics.engine_family)."""
    status = labels.get("status", "")
    if status == "disabled":
        return "Docker turned off on the agent (--docker-host none)"
    if status == "absent":
        return "no Docker engine on the agent's node (its CRI runtime answers)"
    return "the agent's engine did not answer"
