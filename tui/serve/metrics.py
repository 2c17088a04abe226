"""Prometheus collectors that read only the loop's last published state: a scrape never touches the engine,
cgroups or NVML. Names follow dcgm-exporter (GPUs) and cAdvisor (containers) so their dashboards and alert
rules work unchanged; what neither has (GPU use by container, findings) is prefixed `mltop_`.

Labels carry names, ids and images only: never environment values, commands or log text.
"""

from __future__ import annotations

import platform
import threading
import time
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mltop.diagnostics.findings import SEVERITIES
from mltop.diagnostics.workload import classify_all
from mltop.probes.model import ContainerSample, GpuSample

from .cadvisor import container_text, machine_families
from .dcgm import gpu_families
from .infiniband_metrics import infiniband_families
from .loop import ServeState
from .pod_labels import label_pods
from .sharing_metrics import gpu_sharing_families


GPU_BY_CONTAINER_LABELS = ["container", "container_id", "image", "gpu", "UUID"]

# Xids the rules know, pre-set to 0 on every GPU so that the first one of a kind shows as an increase (a series
# that appears at 1 has no earlier sample, and increase() cannot see its first step). Hardware: NVIDIA's Xid
# catalog; application: the Xids k8s-device-plugin does not count against the GPU (internal/rm/health.go).
XID_HARDWARE = (48, 63, 64, 74, 79, 92, 94, 95, 119, 120)
XID_APPLICATION = (13, 31, 43, 45)


class XidTally:
    """Xid events counted per (GPU, Xid) across published states. A GPU sample carries the probe's recent
    Xid events (a bounded window, oldest first), so an event is counted once, the first time it is seen.
    The seen set is trimmed to what each listed GPU's window still holds, so it stays bounded too; a GPU
    missing from a sweep (lost, NVML down) keeps its seen events, so they do not count again when it is back."""

    def __init__(self) -> None:
        self._seen: set[tuple] = set()
        self.counts: dict[tuple[str, int], int] = {}  # (GPU uuid, xid) -> events seen
        self._lock = threading.Lock()

    def observe(self, gpus: tuple[GpuSample, ...]) -> dict[tuple[str, int], int]:
        with self._lock:
            window = set()
            for g in gpus:
                for e in g.xid_events:
                    key = (g.uuid, e.xid, e.time, e.source)
                    window.add(key)
                    if key not in self._seen:
                        self.counts[(g.uuid, e.xid)] = self.counts.get((g.uuid, e.xid), 0) + 1
            present = {g.uuid for g in gpus}
            self._seen = window | {key for key in self._seen if key[0] not in present}
            return dict(self.counts)


CgroupName = Callable[[str], "str | None"]  # a cgroup directory -> its path below the hierarchy's root
_host_locator = None


def host_cgroup_name(directory: str) -> str | None:
    """The cgroup locator's name for `directory` (probes.cgroups.CgroupLocator.hierarchy_path), with the
    hierarchies mounted where this process sees them: an agent in a container with the host's tree mounted
    elsewhere names `/docker/<id>` all the same."""
    global _host_locator
    if _host_locator is None:
        from mltop.probes.cgroups import CgroupLocator

        _host_locator = CgroupLocator()
    return _host_locator.hierarchy_path(directory)


def cgroup_id(c: ContainerSample, name: CgroupName | None = None) -> str:
    """cAdvisor's `id` label: the cgroup path below the hierarchy root (`/docker/<id>` with cgroupfs,
    `/system.slice/docker-<id>.scope` with systemd). A sample without a cgroup (a recording) gets cgroupfs's."""
    named = (name or host_cgroup_name)(c.cgroup_path) if c.cgroup_path else None
    return named or f"/docker/{c.id}"


class SnapshotCollector:
    """GPU, GPU-by-container, container and finding families from the last published state."""

    def __init__(self, state: Callable[[], ServeState], xids: XidTally | None = None,
                 cgroup_name: CgroupName | None = None, node_name: str | None = None):
        self._state = state
        self._xids = xids if xids is not None else XidTally()
        self._cgroup_name = cgroup_name
        self._node_name = node_name

    def describe(self) -> list[Metric]:
        return []  # unchecked: the families depend on what the snapshot holds

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        snapshot = state.snapshot
        if snapshot is None:
            return
        hostname = self._node_name or snapshot.host.hostname
        host = GaugeMetricFamily("mltop_host_info", "The host this agent samples (Hostname: --node-name, NODE_NAME "
                                 "or the machine's name); the value is 1. The fleet view lists hosts by it.",
                                 labels=["Hostname"])
        host.add_metric([hostname], 1.0)
        yield host
        yield from label_pods(self._families(state, hostname), snapshot, state.gpus_to_serve())

        yield from source_families(snapshot)
        yield engine_family(snapshot.host)
        nvml = GaugeMetricFamily("mltop_nvml_up", "1 when NVML answered the last sweep; the status says why not.",
                                 labels=["status"])
        nvml.add_metric([snapshot.host.nvml.status], 1.0 if snapshot.host.nvml.ok else 0.0)
        yield nvml
        last = GaugeMetricFamily("mltop_last_sweep_timestamp_seconds", "Unix time the last snapshot was taken.")
        last.add_metric([], snapshot.taken_at)
        yield last


    def _families(self, state: ServeState, hostname: str) -> Iterator[Metric]:
        snapshot = state.snapshot
        yield from gpu_families(state.gpus_to_serve(), hostname)
        yield xid_counter_family(state.gpus_to_serve(), self._xids.observe(state.gpus_to_serve()))
        yield from gpu_by_container_families(snapshot.containers, state.gpus_to_serve())
        yield gpu_allocated_family(snapshot.containers)
        yield from gpu_sharing_families(state.gpus_to_serve(), snapshot.containers)
        yield workload_family(snapshot, state.previous)
        yield from machine_families(snapshot.host)  # (the container families: cadvisor.container_text)
        yield from infiniband_families(snapshot.infiniband)
        yield from finding_families(state.doctor)


def engine_family(host) -> Metric:
    """mltop_engine_up: 1 when the Docker engine answered. Where it is meant not to (turned off by --docker-host
    none, or absent from a node whose CRI runtime answers) the status says so, as mltop_nvml_up's "disabled"
    does, and MltopEngineDown leaves it be; the fleet view reads the same label (probes/fleet_host.py)."""
    family = GaugeMetricFamily("mltop_engine_up", "1 when the Docker engine answered the last sweep; the status "
                               "says why not (disabled: --docker-host none; absent: a node without Docker).",
                               labels=["status"])
    docker = next((s for s in host.sources if s.kind == "docker"), None)
    status = docker.status if docker is not None and docker.quiet and not host.engine_down else host.engine.status
    family.add_metric([status], 1.0 if host.engine.ok else 0.0)
    return family


def source_families(snapshot) -> Iterator[Metric]:
    up = GaugeMetricFamily("mltop_source_up", "1 when the container source (the Docker engine, a CRI runtime) "
                           "answered the last sweep; the status says why not.",
                           labels=["kind", "endpoint", "runtime", "version", "status"])
    for s in snapshot.host.sources:
        up.add_metric([s.kind, s.endpoint, s.runtime or "", s.version or "", s.status], 1.0 if s.ok else 0.0)
    yield up


def xid_counter_family(gpus: tuple[GpuSample, ...], counts: dict[tuple[str, int], int]) -> Metric:
    family = CounterMetricFamily("mltop_gpu_xid_errors", "Xid errors the driver reported for the GPU since mltop "
                                 "started (NVML events and the kernel log), by Xid.", labels=["gpu", "UUID", "xid"])
    for g in gpus:
        mine = {xid: n for (uuid, xid), n in counts.items() if uuid == g.uuid}
        for xid in XID_HARDWARE + XID_APPLICATION:
            mine.setdefault(xid, 0)
        for xid, n in sorted(mine.items()):
            family.add_metric([str(g.index), g.uuid, str(xid)], float(n))
    return family


def workload_family(snapshot, previous=None) -> Metric:
    family = GaugeMetricFamily("mltop_container_workload", "1 for the class of each GPU container's workload: what "
                               "holds it back (gpu, input-cpu, input-io, memory, idle).",
                               labels=["container", "container_id", "image", "kind"])
    by_id = {c.id: c for c in snapshot.containers}
    for cid, workload in sorted(classify_all(snapshot, previous=previous).items(), key=lambda kv: by_id[kv[0]].name):
        c = by_id[cid]
        family.add_metric([c.name, c.id, c.image, workload.kind], 1.0)
    return family


def gpu_allocated_family(containers: tuple[ContainerSample, ...]) -> Metric:
    """One series per device the kubelet allocated to a pod container (its pod-resources API): 1 while a process
    of the container runs on it, 0 while none does (beside mltop_container_gpu_memory_bytes, what it uses)."""
    family = GaugeMetricFamily("mltop_container_gpu_allocated",
                               "Devices the kubelet allocated to the pod container (pod-resources API): 1 when a "
                               "process of the container runs on it (NVML), 0 when none does.",
                               labels=[*GPU_BY_CONTAINER_LABELS, "resource", "device_id"])
    for c in containers:
        for a in c.kubernetes.gpus_allocated if c.kubernetes is not None else ():
            family.add_metric([c.name, c.id, c.image, "" if a.index is None else str(a.index), a.uuid,
                               a.resource_name, a.device_id], 1.0 if a.in_use else 0.0)
    return family


def gpu_by_container_families(containers: tuple[ContainerSample, ...],
                              gpus: tuple[GpuSample, ...]) -> Iterator[Metric]:
    memory = GaugeMetricFamily("mltop_container_gpu_memory_bytes",
                               "GPU memory held by the container's processes on one GPU (NVML, by host PID).",
                               labels=GPU_BY_CONTAINER_LABELS)
    sm = GaugeMetricFamily("mltop_container_gpu_sm_utilization_percent",
                           "SM utilisation of the container's processes on one GPU (NVML process samples, in %).",
                           labels=GPU_BY_CONTAINER_LABELS)
    procs = GaugeMetricFamily("mltop_container_gpu_processes",
                              "Processes of the container that NVML lists on one GPU.",
                              labels=GPU_BY_CONTAINER_LABELS)
    images = {c.id: c.image for c in containers}
    # From the GPUs' process lists (so a container the engine does not list, e.g. podman, still counts).
    per: dict[tuple[str, int], list] = {}
    names: dict[str, str] = {}
    uuids = {g.index: g.uuid for g in gpus}
    for g in gpus:
        for p in g.processes:
            if p.container_id is not None:
                per.setdefault((p.container_id, g.index), []).append(p)
                names[p.container_id] = p.container_name or p.container_id[:12]
    for (cid, index), plist in sorted(per.items(), key=lambda kv: (names[kv[0][0]], kv[0][1])):
        labels = [names[cid], cid, images.get(cid, ""), str(index), uuids[index]]
        procs.add_metric(labels, float(len(plist)))
        mems = [p.gpu_memory_bytes for p in plist if p.gpu_memory_bytes is not None]
        if mems:
            memory.add_metric(labels, float(sum(mems)))
        sms = [p.sm_percent for p in plist if p.sm_percent is not None]
        if sms:
            sm.add_metric(labels, float(sum(sms)))
    yield memory
    yield sm
    yield procs

    host_procs = GaugeMetricFamily("mltop_host_gpu_processes",
                                   "GPU processes in no container (host processes), per GPU.", labels=["gpu", "UUID"])
    host_memory = GaugeMetricFamily("mltop_host_gpu_memory_bytes",
                                    "GPU memory held by processes in no container, per GPU.", labels=["gpu", "UUID"])
    for g in gpus:
        host = [p for p in g.processes if p.container_id is None]
        host_procs.add_metric([str(g.index), g.uuid], float(len(host)))
        mems = [p.gpu_memory_bytes for p in host if p.gpu_memory_bytes is not None]
        host_memory.add_metric([str(g.index), g.uuid], float(sum(mems)))
    yield host_procs
    yield host_memory


def finding_families(doctor) -> Iterator[Metric]:
    finding = GaugeMetricFamily("mltop_finding", "1 for every active doctor finding (host findings: container=\"\"); "
                                "silenced=\"true\": a silence in the host's recording holds it (`mltop silence list`).",
                                labels=["code", "severity", "container", "silenced"])
    totals = GaugeMetricFamily("mltop_findings", "Active doctor findings by severity, silenced ones left out.",
                               labels=["severity"])
    counts = dict.fromkeys(SEVERITIES, 0)
    seen: set[tuple[str, str, str, str]] = set()
    for f in (doctor.findings if doctor is not None else ()):
        silenced = "true" if f.silenced is not None else "false"
        key = (f.code, f.severity, f.container or "", silenced)
        if f.silenced is None:
            counts[f.severity] = counts.get(f.severity, 0) + 1
        if key not in seen:  # one series per (code, severity, container, silenced), however many findings share it
            seen.add(key)
            finding.add_metric(list(key), 1.0)
    for severity, n in counts.items():
        totals.add_metric([severity], float(n))
    yield finding
    if doctor is not None:
        yield totals
        yield skipped_family(doctor)


def skipped_family(doctor) -> Metric:
    """mltop_check_skipped: what the doctor could not judge, per check and container; the reasons are in
    /findings.json (free text is no label)."""
    skipped = GaugeMetricFamily("mltop_check_skipped", "1 for every check the last doctor run skipped, per "
                                "container (host or every container: container=\"\"); reasons in /findings.json.",
                                labels=["check", "container"])
    seen: set[tuple[str, str]] = set()
    for s in doctor.checks_skipped:
        for container in getattr(s, "containers", ()) or ("",):
            if (s.check, container) not in seen:
                seen.add((s.check, container))
                skipped.add_metric([s.check, container], 1.0)
    return skipped


class BuildInfoCollector:
    def __init__(self, version: str):
        self._labels = [version, platform.python_version()]

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("mltop_build_info", "mltop's version, as labels; the value is 1.",
                                 labels=["version", "pythonversion"])
        info.add_metric(self._labels, 1.0)
        yield info


class Exposition:
    """The /metrics text: the snapshot's families rendered once per published state (in the sweep thread, by
    `refresh`, or by the first scrape that finds them stale) followed by the agent's own few families
    rendered at each scrape. A scrape of 200 containers then costs a bytes copy, not a render."""

    def __init__(self, state: Callable[[], ServeState], version: str, cgroup_name: CgroupName | None = None,
                 node_name: str | None = None):
        self._state = state
        self._cgroup_name = cgroup_name  # None: the host's cgroup locator (tests name built snapshots' paths)
        self._node_name = node_name
        self.self_registry = CollectorRegistry(auto_describe=False)
        self.self_registry.register(BuildInfoCollector(version))
        self.self_registry.register(_AgeCollector(state))
        ProcessCollector(registry=self.self_registry)  # process_cpu_seconds_total, process_resident_memory_bytes
        self.sweep_seconds = Histogram("mltop_sweep_duration_seconds", "Time one sampling sweep took.",
                                       registry=self.self_registry,
                                       buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
        self._lock = threading.Lock()
        self._cached: tuple[ServeState | None, bytes] = (None, b"")
        self._xids = XidTally()  # outlives the cached text: counts carry from one state to the next

    def refresh(self) -> bytes:
        state = self._state()
        cached_state, text = self._cached
        if cached_state is state:
            return text
        with self._lock:
            if self._cached[0] is not state:
                self._cached = (state, generate_latest(_Pinned(state, self._xids, self._cgroup_name,
                                                               self._node_name))
                                + _container_text(state, self._cgroup_name))
            return self._cached[1]

    def render(self) -> bytes:
        return self.refresh() + generate_latest(self.self_registry)


def _container_text(state: ServeState, cgroup_name: CgroupName | None = None) -> bytes:
    """cAdvisor's container families of the state's snapshot, written directly (tui/serve/cadvisor.py)."""
    snapshot = state.snapshot
    if snapshot is None:
        return b""
    return container_text(snapshot.containers, snapshot.taken_at, lambda c: cgroup_id(c, cgroup_name)).encode()


class _Pinned:
    """A registry view whose collectors read one given state (so the cache matches what it was built from)."""

    def __init__(self, state: ServeState, xids: XidTally, cgroup_name: CgroupName | None = None,
                 node_name: str | None = None):
        self._state = state
        self._xids = xids
        self._cgroup_name = cgroup_name
        self._node_name = node_name

    def collect(self) -> Iterator[Metric]:
        yield from SnapshotCollector(lambda: self._state, self._xids, self._cgroup_name, self._node_name).collect()


class _AgeCollector:
    """How old the published data is: changes at every scrape, so it is not part of the cached text."""

    def __init__(self, state: Callable[[], ServeState]):
        self._state = state

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        now = time.monotonic()
        age = GaugeMetricFamily("mltop_last_sweep_age_seconds", "Seconds since the last published sweep.")
        age.add_metric([], max(now - state.swept_at, 0.0) if state.swept_at is not None else 0.0)
        yield age
        if state.doctor_at is not None:
            doc = GaugeMetricFamily("mltop_doctor_age_seconds", "Seconds since the last doctor run finished.")
            doc.add_metric([], max(now - state.doctor_at, 0.0))
            yield doc
