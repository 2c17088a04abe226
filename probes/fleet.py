"""The fleet as Prometheus sees it: one row per host that runs `mltop serve`, read with a few queries that
aggregate in Prometheus (one answer row per host, never every container's series).

A host is a scrape target (`job`, `instance`) that has exposed `mltop_host_info` within the look-back
window; its name is that series' `Hostname` label (`mltop serve --node-name`, else the machine's name). A
host whose agent stopped keeps its row: `up` says 0 (or nothing), and the last sweep's time comes from
`last_over_time`, so it is shown down with when it was last seen instead of vanishing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .prometheus_api import PrometheusClient, PrometheusError, Sample

HostKey = tuple[str, str]  # (job, instance)

NO_TARGETS = ("no mltop serve targets in this Prometheus: add the scrape config from "
              "`mltop serve --print-scrape-config`")


@dataclass(frozen=True)
class FleetGpu:
    index: str
    uuid: str
    model: str
    utilization_percent: float | None
    sm_active: float | None  # GPM ratio 0-1, where the GPU has it
    memory_used_bytes: float | None
    memory_total_bytes: float | None


@dataclass(frozen=True)
class FleetFinding:
    job: str
    instance: str
    hostname: str
    code: str
    severity: str
    container: str  # "" for a host finding


@dataclass(frozen=True)
class GpuConsumer:
    """A container (or pod container) holding GPU memory somewhere in the fleet, summed over its GPUs."""

    job: str
    instance: str
    hostname: str
    container: str
    container_id: str
    namespace: str
    pod: str
    gpu_memory_bytes: float
    sm_percent: float | None
    gpus: int


@dataclass(frozen=True)
class FleetHost:
    job: str
    instance: str
    hostname: str
    up: bool
    last_sweep: float | None  # unix time of the agent's last sweep seen by Prometheus
    gpus: tuple[FleetGpu, ...] = ()
    containers_running: int = 0
    findings_by_severity: Mapping[str, int] = field(default_factory=dict)
    findings: tuple[FleetFinding, ...] = ()

    @property
    def key(self) -> HostKey:
        return (self.job, self.instance)

    @property
    def gpu_utilization_mean(self) -> float | None:
        values = [g.utilization_percent for g in self.gpus if g.utilization_percent is not None]
        return sum(values) / len(values) if values else None

    @property
    def sm_active_mean(self) -> float | None:
        values = [g.sm_active for g in self.gpus if g.sm_active is not None]
        return sum(values) / len(values) if values else None

    @property
    def gpu_memory_used_bytes(self) -> float | None:
        values = [g.memory_used_bytes for g in self.gpus if g.memory_used_bytes is not None]
        return sum(values) if values else None

    @property
    def gpu_memory_total_bytes(self) -> float | None:
        values = [g.memory_total_bytes for g in self.gpus if g.memory_total_bytes is not None]
        return sum(values) if values else None


@dataclass(frozen=True)
class FleetSnapshot:
    taken_at: float
    prometheus: str  # the URL read, without credentials
    hosts: tuple[FleetHost, ...]
    consumers: tuple[GpuConsumer, ...]
    errors: tuple[str, ...] = ()  # queries that failed (the rest of the view still stands)

    @property
    def hosts_up(self) -> int:
        return sum(1 for h in self.hosts if h.up)

    @property
    def hosts_down(self) -> int:
        return sum(1 for h in self.hosts if not h.up)

    @property
    def findings(self) -> tuple[FleetFinding, ...]:
        return tuple(f for h in self.hosts for f in h.findings)

    def host(self, key: HostKey) -> FleetHost | None:
        return next((h for h in self.hosts if h.key == key), None)


MIB = 1024 * 1024


class FleetReader:
    """Reads a FleetSnapshot from Prometheus. `lookback` bounds how long a stopped agent stays listed."""

    def __init__(self, client: PrometheusClient, *, lookback: str = "1h", top: int = 50,
                 clock: Callable[[], float] = time.time):
        self.client = client
        self.lookback = lookback
        self.top = top
        self._clock = clock

    def read(self) -> FleetSnapshot:
        """One look at the fleet. Raises PrometheusError when Prometheus itself cannot be read (the host list
        query fails); a later query that fails is kept in `errors` and its column stays empty."""
        now = self._clock()
        lb = self.lookback
        info = self.client.query(f"last_over_time(mltop_host_info[{lb}])", at=now)
        errors: list[str] = []

        def q(expr: str) -> list[Sample]:
            try:
                return self.client.query(expr, at=now)
            except PrometheusError as err:
                if err.kind == "unreachable":
                    raise
                errors.append(str(err))
                return []

        names: dict[HostKey, str] = {}
        for s in info:
            key = _key(s.labels)
            names[key] = s.labels.get("Hostname") or s.labels.get("instance", "?")
        up = {_key(s.labels): s.value == 1.0 for s in q("up")}
        last = {_key(s.labels): s.value for s in q(f"last_over_time(mltop_last_sweep_timestamp_seconds[{lb}])")}
        running = {_key(s.labels): _count(s.value)
                   for s in q("count by (job, instance) (container_last_seen)")}
        by_severity: dict[HostKey, dict[str, int]] = {}
        for s in q("sum by (job, instance, severity) (mltop_findings)"):
            by_severity.setdefault(_key(s.labels), {})[s.labels.get("severity", "")] = _count(s.value)
        findings: dict[HostKey, list[FleetFinding]] = {}
        for s in q('mltop_finding{silenced!="true"} == 1'):  # what the host's team silenced does not count here
            key = _key(s.labels)
            findings.setdefault(key, []).append(FleetFinding(
                key[0], key[1], names.get(key, key[1]), s.labels.get("code", ""), s.labels.get("severity", ""),
                s.labels.get("container", "")))
        gpus = self._gpus(q)
        consumers = self._consumers(q, names)

        hosts = []
        for key, hostname in names.items():
            hosts.append(FleetHost(
                job=key[0], instance=key[1], hostname=hostname, up=up.get(key, False), last_sweep=last.get(key),
                gpus=tuple(sorted(gpus.get(key, ()), key=lambda g: _index_key(g.index))),
                containers_running=running.get(key, 0) if up.get(key, False) else 0,
                findings_by_severity=by_severity.get(key, {}) if up.get(key, False) else {},
                findings=tuple(sorted(findings.get(key, ()), key=lambda f: (f.code, f.container)))
                if up.get(key, False) else ()))
        return FleetSnapshot(taken_at=now, prometheus=self.client.display_url, hosts=tuple(hosts),
                             consumers=consumers, errors=tuple(errors))

    def _gpus(self, q: Callable[[str], list[Sample]]) -> dict[HostKey, list[FleetGpu]]:
        """The per-GPU figures: a host has at most a few GPUs, so these are a handful of rows per host."""
        def by_gpu(expr: str) -> dict[tuple[str, str, str], Sample]:
            return {(*_key(s.labels), s.labels.get("UUID", "")): s for s in q(expr)}

        util = by_gpu("DCGM_FI_DEV_GPU_UTIL")
        used = by_gpu("DCGM_FI_DEV_FB_USED")
        free = by_gpu("DCGM_FI_DEV_FB_FREE")
        sm = by_gpu("DCGM_FI_PROF_SM_ACTIVE")
        out: dict[HostKey, list[FleetGpu]] = {}
        for gk in sorted(set(util) | set(used)):
            labels = (util.get(gk) or used[gk]).labels
            u = used.get(gk)
            f = free.get(gk)
            out.setdefault(gk[:2], []).append(FleetGpu(
                index=labels.get("gpu", "?"), uuid=gk[2], model=labels.get("modelName", ""),
                utilization_percent=util[gk].value if gk in util else None,
                sm_active=sm[gk].value if gk in sm else None,
                memory_used_bytes=u.value * MIB if u is not None else None,
                memory_total_bytes=(u.value + f.value) * MIB if u is not None and f is not None else None))
        return out

    def _consumers(self, q: Callable[[str], list[Sample]], names: Mapping[HostKey, str]) -> tuple[GpuConsumer, ...]:
        """The top containers by GPU memory across every host: topk runs in Prometheus."""
        group = "job, instance, container, container_id, namespace, pod"
        memory = q(f"topk({self.top}, sum by ({group}) (mltop_container_gpu_memory_bytes))")
        if not memory:
            return ()
        sm = {_consumer_key(s.labels): s.value
              for s in q(f"sum by ({group}) (mltop_container_gpu_sm_utilization_percent)")}
        count = {_consumer_key(s.labels): _count(s.value)
                 for s in q(f"count by ({group}) (mltop_container_gpu_memory_bytes)")}
        out = []
        for s in memory:
            key = _key(s.labels)
            ck = _consumer_key(s.labels)
            out.append(GpuConsumer(
                job=key[0], instance=key[1], hostname=names.get(key, key[1]),
                container=s.labels.get("container", ""), container_id=s.labels.get("container_id", ""),
                namespace=s.labels.get("namespace", ""), pod=s.labels.get("pod", ""),
                gpu_memory_bytes=s.value, sm_percent=sm.get(ck), gpus=count.get(ck, 0)))
        out.sort(key=lambda c: (-c.gpu_memory_bytes, c.hostname, c.container))
        return tuple(out)


def _key(labels: Mapping[str, str]) -> HostKey:
    return (labels.get("job", ""), labels.get("instance", ""))


def _consumer_key(labels: Mapping[str, str]) -> tuple[str, ...]:
    return (*_key(labels), labels.get("container_id", ""), labels.get("container", ""))


def _count(value: float) -> int:
    """A count from Prometheus as an int; NaN or ±Inf (which a server may answer) count as 0."""
    return int(value) if math.isfinite(value) else 0


def _index_key(index: str) -> tuple[int, str]:
    return (int(index), "") if index.isdigit() else (1 << 30, index)
