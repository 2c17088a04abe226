"""Pack one sweep into compact rows, and rebuild Snapshots from them.

A sweep's containers are one zlib-compressed blob of column-major little-endian uint32 arrays: similar
numbers sit next to each other (all CPU figures, then all memory figures...), which compresses far better
than one record per container. Values are scaled integers; NONE marks a value the snapshot did not have.

Pod containers' facts that change rarely (the QoS class, the kubelet's GPU allocations with whether each is in
use and since when not) are interned in `pod_facts` (schema version 2); a sweep that has any ends its blob with
one pod-facts id per container (NONE for a Docker container). A blob without them (every blob of a version-1
recording, and of a host without pods) is exactly the version-1 layout, so old recordings decode unchanged.

A GPU with GPU Performance Metrics (Hopper and newer) ends its row of the GPU blob with them, and a MIG device
with its GPU instance's (schema version 3): what the dashboard's `SM x% TC y%` and the doctor's perf.* checks
read. A row without GPM (every row of older recordings, and of GPUs without it) is the version-2 row.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Sequence

from ..gpu_sharing import with_gpu_sharing
from ..identity import DOCKER as DOCKER_RUNTIME
from ..model import (
    ContainerConfig,
    ContainerGpuUse,
    ContainerSample,
    DeviceRequest,
    EngineStatus,
    GpuProcess,
    GpuSample,
    HostInfo,
    Mount,
    NvmlStatus,
    Pressure,
    SourceStatus,
    Snapshot,
    to_jsonable,
)
from ..model import ContainerAttempt, GpmMetrics, GpuAllocation, KubernetesInfo, MigDevice, SXidEvent

NONE = 0xFFFFFFFF
_MAX = NONE - 1
KIB = 1024
MIB = 1 << 20

STATUSES = ("running", "exited", "created", "paused", "restarting", "dead", "removing", "unknown")
_STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}

# (ContainerSample field, scale): stored = round(value / scale); scale RATE: 3 significant digits, see _rate.
RATE = 0.0
COLUMNS: tuple[tuple[str, float], ...] = (
    ("cpu_percent", 0.01),
    ("memory_bytes", KIB),
    ("memory_limit_bytes", KIB),
    ("io_read_bytes_per_s", RATE),
    ("io_write_bytes_per_s", RATE),
    ("net_rx_bytes_per_s", RATE),
    ("net_tx_bytes_per_s", RATE),
    ("pids", 1),
    ("oom_kills", 1),
)
_MANTISSA_BITS = 10  # rates keep ~3 significant digits: what the dashboard shows, and it compresses


def _enc(value: float | None, scale: float) -> int:
    if value is None:
        return NONE
    if scale == RATE:
        return _rate(value)
    v = int(round(value / scale))
    return 0 if v < 0 else (_MAX if v > _MAX else v)


def _rate(value: float) -> int:
    """A rate as exponent << 10 | mantissa (value ~ mantissa * 2**exponent, mantissa < 1024)."""
    v = int(round(value))
    if v <= 0:
        return 0
    exponent = max(0, v.bit_length() - _MANTISSA_BITS)
    mantissa = (v + (1 << exponent >> 1)) >> exponent if exponent else v
    if mantissa >> _MANTISSA_BITS:  # rounding carried into a new bit
        exponent += 1
        mantissa >>= 1
    return exponent << _MANTISSA_BITS | mantissa


def _unrate(code: int) -> float:
    return float((code & ((1 << _MANTISSA_BITS) - 1)) << (code >> _MANTISSA_BITS))


def _dec(value: int, scale: float) -> float | None:
    if value == NONE:
        return None
    return _unrate(value) if scale == RATE else value * scale


def pack_containers(containers: Sequence[ContainerSample], cids: Sequence[int],
                    pod_ids: Sequence[int] | None = None) -> bytes:
    """The container blob: n, m, cids, statuses, one array per COLUMNS entry, then m GPU uses
    (container position, GPU index, memory MiB, SM %·100), then, when any container has pod facts, n
    pod-facts ids (NONE where none)."""
    n = len(containers)
    columns: list[int] = list(cids)
    columns.extend(_STATUS_CODE.get(c.status, len(STATUSES) - 1) for c in containers)
    for name, scale in COLUMNS:
        columns.extend(_enc(getattr(c, name), scale) for c in containers)
    uses: list[int] = []
    for position, c in enumerate(containers):
        for g in c.gpus:
            uses.extend((position, g.index, _enc(g.memory_bytes, MIB), _enc(g.sm_percent, 0.01)))
    return _pack(n, columns, uses, pod_ids)


def _pack(n: int, columns: list[int], uses: list[int], pod_ids: Sequence[int] | None) -> bytes:
    tail = list(pod_ids) if pod_ids is not None and any(p != NONE for p in pod_ids) else []
    assert not tail or len(tail) == n
    raw = struct.pack(f"<II{len(columns)}I{len(uses)}I{len(tail)}I", n, len(uses) // 4, *columns, *uses, *tail)
    return zlib.compress(raw, 6)


@dataclass(frozen=True)
class ContainerColumns:
    """A decoded container blob: per container its intern id, status and figures (scaled back)."""

    cids: tuple[int, ...]
    statuses: tuple[str, ...]
    values: dict[str, tuple[float | None, ...]]
    gpu_uses: tuple[tuple[int, int, float | None, float | None], ...]  # (position, index, bytes, sm %)
    pod_ids: tuple[int, ...] | None = None  # per container its pod_facts id (NONE: none); None: none in the sweep


def unpack_containers(blob: bytes) -> ContainerColumns:
    raw = zlib.decompress(blob)
    n, m = struct.unpack_from("<II", raw)
    ints = struct.unpack_from(f"<{n * (2 + len(COLUMNS)) + 4 * m}I", raw, 8)
    cids = ints[:n]
    statuses = tuple(STATUSES[min(s, len(STATUSES) - 1)] for s in ints[n:2 * n])
    values = {}
    for i, (name, scale) in enumerate(COLUMNS):
        start = (2 + i) * n
        if scale == RATE:
            values[name] = tuple(None if v == NONE else _unrate(v) for v in ints[start:start + n])
        else:
            values[name] = tuple(None if v == NONE else v * scale for v in ints[start:start + n])
    base = n * (2 + len(COLUMNS))
    uses = tuple(
        (ints[base + 4 * k], ints[base + 4 * k + 1], _dec(ints[base + 4 * k + 2], MIB),
         _dec(ints[base + 4 * k + 3], 0.01))
        for k in range(m)
    )
    pod_ids = None
    if n and len(raw) == 8 + 4 * (base + 4 * m + n):  # the version-2 tail: pod-facts ids
        pod_ids = struct.unpack_from(f"<{n}I", raw, 8 + 4 * (base + 4 * m))
    return ContainerColumns(tuple(cids), statuses, values, uses, pod_ids)


# --------------------------------------------------------------------------- pods

_ALLOCATION = ("resource_name", "device_id", "uuid", "replica", "mig", "index", "in_use", "unused_since")
_ATTEMPT = ("attempt", "container_id", "status", "exit_code", "reason", "started_at", "finished_at", "log_path")


def pod_doc(k: KubernetesInfo | None, runtime: str | None = None) -> str | None:
    """A pod container's facts the kubelet's labels do not give, interned in pod_facts: {"qos", "gpus":
    [[resource_name, device_id, uuid, replica, mig, index, in_use, unused_since], ...], "runtime": the CRI
    runtime that named it (containerd, cri-o; absent for Docker's)}; None: nothing to keep."""
    runtime = runtime if runtime and runtime != DOCKER_RUNTIME else None
    if k is None or (k.qos is None and not k.gpus_allocated and runtime is None and not k.previous_attempts):
        return None
    doc: dict[str, Any] = {"qos": k.qos}
    if runtime is not None:
        doc["runtime"] = runtime
    if k.previous_attempts:  # how the earlier attempts ended (CrashLoopBackOff's evidence), newest first
        doc["attempts"] = [[getattr(a, f) for f in _ATTEMPT] for a in k.previous_attempts]
    if k.gpus_allocated:
        doc["gpus"] = [[getattr(a, f) for f in _ALLOCATION] for a in k.gpus_allocated]
    return json.dumps(doc, separators=(",", ":"))


class PodFactIds:
    """The writer's pod_facts ids: doc -> pfid, with (qos, allocations) -> doc kept so that the sweeps that
    repeat the last facts (most) skip the JSON encoding. Both remember what the last sweep used only
    (end_sweep()): the facts of pods long gone (each attempt's exit, each allocation's unused-since) would
    otherwise pile up on a node that runs pods all day; facts seen again are found in the file."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self._docs: dict[tuple, str | None] = {}
        self._used_ids: dict[str, int] = {}
        self._used_docs: dict[tuple, str | None] = {}

    def load(self, db) -> None:
        self.ids = {doc: pfid for pfid, doc in db.execute("SELECT pfid, doc FROM pod_facts")}
        self._used_ids = {}

    def end_sweep(self) -> None:
        """Forget what this sweep did not use."""
        self.ids, self._used_ids = self._used_ids, {}
        self._docs, self._used_docs = self._used_docs, {}

    def id_of(self, db, k: KubernetesInfo | None, runtime: str | None = None) -> int:
        """The id of a pod container's facts, inserted when new; NONE for none."""
        if k is None:
            return NONE
        key = (k.qos, k.gpus_allocated, runtime, k.previous_attempts)
        doc = self._used_docs.get(key, False)
        if doc is False:
            doc = self._docs.get(key, False)
            if doc is False:
                doc = pod_doc(k, runtime)
            self._used_docs[key] = doc
        if doc is None:
            return NONE
        pfid = self._used_ids.get(doc) or self.ids.get(doc)
        if pfid is None:
            pfid = db.execute("INSERT INTO pod_facts(doc) VALUES (?)", (doc,)).lastrowid
        self._used_ids[doc] = pfid
        return pfid


PodFacts = tuple  # (qos, allocations, runtime, previous attempts): what pod_facts_from_doc gives


def pod_facts_from_doc(doc: str) -> tuple[str | None, tuple[GpuAllocation, ...], str | None,
                                          tuple[ContainerAttempt, ...]]:
    d = json.loads(doc)
    return (d.get("qos"), tuple(GpuAllocation(**dict(zip(_ALLOCATION, a))) for a in d.get("gpus") or ()),
            d.get("runtime"), tuple(ContainerAttempt(**dict(zip(_ATTEMPT, a))) for a in d.get("attempts") or ()))


def container_runtimes(cols: "ContainerColumns", interned: Mapping[int, "Interned"],
                       pod_facts: Mapping[int, PodFacts] | None) -> dict[str, str | None]:
    """{container id: the runtime that named it} for a recorded sweep: a pod container's from its pod facts
    (None where a version-1 recording kept none: a CRI runtime, which one unknown), Docker's otherwise."""
    out: dict[str, str | None] = {}
    for i, cid in enumerate(cols.cids):
        who = interned.get(cid)
        if who is None:
            continue
        facts = _facts(cols, i, pod_facts)
        if facts is not None and facts[2]:
            out[who.id] = facts[2]
        elif who.config.pod_labels or "io.kubernetes.pod.name" in who.config.labels:
            out[who.id] = None
        else:
            out[who.id] = DOCKER_RUNTIME
    return out


# --------------------------------------------------------------------------- GPUs and host

GPU_STATIC = ("index", "uuid", "name", "memory_total_bytes", "power_limit_w", "persistence_mode", "pci_bus_id")


def gpu_static_doc(g: GpuSample) -> str:
    doc = {k: getattr(g, k) for k in GPU_STATIC}
    doc["unavailable"] = dict(g.unavailable)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def gpu_row(g: GpuSample, gid: int, cid_of: Mapping[str, int]) -> list[Any]:
    """One GPU's varying figures: [gid, util, mem util, mem used MiB, temp, power, throttles, processes]; for a
    GPU in MIG mode its MIG devices (a ninth item), and for a GPU with GPM its metrics (a tenth, the ninth then
    null without MIG). Rows without them read as before; a MIG device with GPM ends with its instance's."""
    procs = [[p.host_pid, p.type[:1], _mib(p.gpu_memory_bytes), p.sm_percent, p.name,
              cid_of.get(p.container_id) if p.container_id else None] for p in g.processes]
    row = [gid, g.utilization_percent, g.memory_utilization_percent, _mib(g.memory_used_bytes),
           g.temperature_c, g.power_w, list(g.throttle_reasons), procs]
    if g.mig_devices:  # which process runs on which MIG device: what pod allocations of MIG devices are judged by
        migs = []
        for m in g.mig_devices:
            mig = [m.index, m.uuid, m.gpu_instance_id, m.compute_instance_id, _mib(m.memory_used_bytes),
                   _mib(m.memory_total_bytes), list(m.host_pids), m.profile]
            if m.gpm is not None:
                mig.append(gpm_list(m.gpm))
            migs.append(mig)
        row.append(migs)
    if g.gpm is not None:
        if not g.mig_devices:
            row.append(None)
        row.append(gpm_list(g.gpm))
    return row


# GpmMetrics' fields in order (interval_s first); a recorded GPM list holds their values, trailing Nones cut.
GPM_FIELDS = tuple(f.name for f in fields(GpmMetrics))


def gpm_list(m: GpmMetrics) -> list[float | None]:
    """The metrics as they were (floats kept whole: `SM 14%`, `14.0%` and each threshold read them exactly)."""
    values = [getattr(m, f) for f in GPM_FIELDS]
    while values and values[-1] is None:
        values.pop()
    return values


def gpm_from_list(values: list[float | None] | None) -> GpmMetrics | None:
    if not values:
        return None
    return GpmMetrics(**dict(zip(GPM_FIELDS, [*values, *[None] * (len(GPM_FIELDS) - len(values))])))


def row_gpm(row: list[Any]) -> list[float | None] | None:
    """A GPU row's GPM list, None where the row has none."""
    return row[9] if len(row) > 9 else None


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / MIB, 1)


def pack_gpus(rows: list[list[Any]]) -> bytes | None:
    if not rows:
        return None
    return zlib.compress(json.dumps(rows, separators=(",", ":")).encode(), 6)


def unpack_gpus(blob: bytes | None) -> list[list[Any]]:
    return json.loads(zlib.decompress(blob)) if blob else []


def host_doc(h: HostInfo) -> str:
    """The host facts that rarely change (load figures go per sweep), interned."""
    doc = to_jsonable(h)
    doc.pop("pressure", None)
    doc.pop("iowait_percent", None)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def host_load(h: HostInfo) -> str | None:
    p = h.pressure or {}
    values = [h.iowait_percent, p.get("cpu"), p.get("memory"), p.get("io")]
    if all(v is None for v in values):
        return None
    return json.dumps([None if v is None else round(float(v), 2) for v in values], separators=(",", ":"))


def config_doc(c: ContainerConfig) -> str:
    return json.dumps(to_jsonable(c), sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- rebuilding records


def host_from_doc(doc: str, load: str | None) -> HostInfo:
    d = json.loads(doc)
    d["engine"] = EngineStatus(**d["engine"])
    d["sources"] = tuple(SourceStatus(**s) for s in d.get("sources") or ())
    nvml = d["nvml"]
    nvml["sxid_events"] = tuple(SXidEvent(**e) for e in nvml.get("sxid_events") or ())
    d["nvml"] = NvmlStatus(**nvml)
    d["runtimes"] = tuple(d.get("runtimes") or ())
    d["cdi_spec_dirs"] = tuple(d.get("cdi_spec_dirs") or ())
    d["limitations"] = tuple(d.get("limitations") or ())
    pressure: dict[str, float] = {}
    iowait = None
    if load:
        iowait, *psi = json.loads(load)
        pressure = {k: v for k, v in zip(("cpu", "memory", "io"), psi) if v is not None}
    return HostInfo(**d, pressure=pressure, iowait_percent=iowait)


def config_from_doc(doc: str) -> ContainerConfig:
    d = json.loads(doc)
    d["device_requests"] = tuple(
        DeviceRequest(driver=r["driver"], count=r["count"], device_ids=tuple(r["device_ids"]),
                      capabilities=tuple(tuple(c) for c in r["capabilities"]))
        for r in d.get("device_requests") or ())
    d["mounts"] = tuple(Mount(**m) for m in d.get("mounts") or ())
    for key in ("command", "entrypoint", "cap_add", "ulimits", "cdi_devices"):
        d[key] = tuple(d.get(key) or ())
    d["env"] = tuple(tuple(pair) for pair in d.get("env") or ())
    d["blkio_throttles"] = {k: tuple(v) for k, v in (d.get("blkio_throttles") or {}).items()}
    return ContainerConfig(**d)


@dataclass(frozen=True)
class Interned:
    """One row of the containers table."""

    id: str
    name: str
    image: str
    config: ContainerConfig


def _pod_of(cfg: ContainerConfig, facts: PodFacts | None):
    """A recorded pod container's pod, from the kubelet's labels its configuration kept, with the QoS class, GPU
    allocations and earlier attempts the sweep recorded (`facts`; None in a version-1 recording, which kept
    none of them)."""
    if not cfg.pod_labels and "io.kubernetes.pod.name" not in cfg.labels:
        return None
    from ..cri.source import kubernetes_from_labels

    if facts is None:
        return kubernetes_from_labels(cfg.labels, cfg.annotations)
    k = kubernetes_from_labels(cfg.labels, cfg.annotations, qos=facts[0])
    if k is None:
        return None
    return replace(k, gpus_allocated=facts[1], previous_attempts=facts[3] if len(facts) > 3 else ())


def _facts(cols: ContainerColumns, i: int, pod_facts: Mapping[int, Any] | None):
    """The container's recorded pod facts; None where the sweep kept none for it."""
    return None if cols.pod_ids is None else (pod_facts or {}).get(cols.pod_ids[i])


def _limit_cores(cfg: ContainerConfig) -> float | None:
    if cfg.nano_cpus:
        return cfg.nano_cpus / 1e9
    if cfg.cpu_quota and cfg.cpu_period:
        return cfg.cpu_quota / cfg.cpu_period
    return None


def build_containers(cols: ContainerColumns, interned: Mapping[int, Interned],
                     gpu_uuids: Mapping[int, str],
                     pod_facts: Mapping[int, PodFacts] | None = None,
                     runtimes: Mapping[str, str | None] | None = None) -> tuple[ContainerSample, ...]:
    uses: dict[int, list[ContainerGpuUse]] = {}
    for position, index, memory, sm in cols.gpu_uses:
        uses.setdefault(position, []).append(
            ContainerGpuUse(index=index, uuid=gpu_uuids.get(index, ""),
                            memory_bytes=None if memory is None else int(memory),
                            sm_percent=sm))
    out = []
    v = cols.values
    for i, cid in enumerate(cols.cids):
        who = interned.get(cid)
        if who is None:
            continue
        cfg = who.config
        cores = _limit_cores(cfg)
        cpu = v["cpu_percent"][i]
        mem = v["memory_bytes"][i]
        limit = v["memory_limit_bytes"][i]

        def as_int(x: float | None) -> int | None:
            return None if x is None else int(x)

        out.append(ContainerSample(
            id=who.id, name=who.name, image=who.image, status=cols.statuses[i], pid=None,
            runtime=(runtimes or {}).get(who.id, DOCKER_RUNTIME),
            cpu_percent=cpu, cpu_limit_cores=cores,
            cpu_limit_percent=(cpu / cores if cpu is not None and cores else None),
            memory_bytes=as_int(mem), memory_limit_bytes=as_int(limit), memory_cache_bytes=None,
            shm_bytes=None, pids=as_int(v["pids"][i]), io_read_bytes=None, io_write_bytes=None,
            io_read_bytes_per_s=v["io_read_bytes_per_s"][i], io_write_bytes_per_s=v["io_write_bytes_per_s"][i],
            net_rx_bytes=None, net_tx_bytes=None,
            net_rx_bytes_per_s=v["net_rx_bytes_per_s"][i], net_tx_bytes_per_s=v["net_tx_bytes_per_s"][i],
            oom_kills=as_int(v["oom_kills"][i]), cpu_throttled_periods=None, pressure=None, cgroup_path=None,
            gpus=tuple(uses.get(i, ())), processes=(), config=cfg,
            kubernetes=_pod_of(cfg, _facts(cols, i, pod_facts)),
        ))
    return tuple(sorted(out, key=lambda c: c.name))


def build_gpus(rows: list[list[Any]], gpu_docs: Mapping[int, dict], interned: Mapping[int, Interned],
               runtimes: Mapping[str, str | None] | None = None) -> tuple[GpuSample, ...]:
    out = []
    for gid, util, mem_util, used_mib, temp, power, throttles, procs, *rest in rows:
        static = gpu_docs[gid]
        processes = []
        for pid, kind, mem_mib, sm, name, cid in procs:
            who = interned.get(cid) if cid is not None else None
            processes.append(GpuProcess(
                host_pid=pid, type={"g": "graphics", "m": "mps"}.get(kind, "compute"),
                gpu_memory_bytes=None if mem_mib is None else int(mem_mib * MIB), sm_percent=sm, name=name,
                container_id=who.id if who else None, container_name=who.name if who else None,
                runtime=(runtimes or {}).get(who.id, DOCKER_RUNTIME) if who else None))
        out.append(GpuSample(
            index=static["index"], uuid=static["uuid"], name=static["name"], utilization_percent=util,
            memory_utilization_percent=mem_util,
            memory_used_bytes=None if used_mib is None else int(used_mib * MIB),
            memory_total_bytes=static["memory_total_bytes"], temperature_c=temp, power_w=power,
            power_limit_w=static["power_limit_w"], throttle_reasons=tuple(throttles),
            persistence_mode=static["persistence_mode"], processes=tuple(processes),
            pci_bus_id=static["pci_bus_id"], unavailable=static.get("unavailable") or {},
            mig_devices=tuple(_mig_from_row(m) for m in (rest[0] if rest and rest[0] else ())),
            mig_enabled=True if rest and rest[0] is not None else None,
            gpm=gpm_from_list(rest[1] if len(rest) > 1 else None)))
    return tuple(out)


def _mig_from_row(m: list[Any]) -> MigDevice:
    index, uuid, gi, ci, used_mib, total_mib, pids, profile, *gpm = m
    return MigDevice(index=index, uuid=uuid, gpu_instance_id=gi, compute_instance_id=ci,
                     memory_used_bytes=None if used_mib is None else int(used_mib * MIB),
                     memory_total_bytes=None if total_mib is None else int(total_mib * MIB),
                     host_pids=tuple(pids), profile=profile, gpm=gpm_from_list(gpm[0] if gpm else None))


def build_snapshot(t_ms: int, interval_ms: int | None, host: HostInfo, gpus: tuple[GpuSample, ...],
                   containers: tuple[ContainerSample, ...]) -> Snapshot:
    # Who shares a GPU, again from the recorded processes (allocations are not recorded: a time-sliced GPU
    # replays as "shared" unless MPS shows).
    gpus = tuple(with_gpu_sharing(gpus, containers))
    return Snapshot(taken_at=t_ms / 1000.0, interval_s=None if interval_ms is None else interval_ms / 1000.0,
                    host=host, gpus=gpus, containers=containers)
