""""Why is my training slow?": what holds a GPU container back, from one snapshot, in one word and its reasons.

Kinds: `gpu` (the GPU is busy: the job is GPU-bound, as it should be), `input-cpu` (GPU mostly idle while the
container sits at its CPU quota or its data-loader processes each burn a full core), `input-io` (GPU mostly idle
while reads stall under I/O pressure), `memory` (near the memory limit or reclaiming), `idle` (GPU memory held,
nothing running). None for containers that use no GPU, or when the snapshot cannot tell (no rates yet).
Thresholds are heuristics, options of WorkloadThresholds, and named in the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from mltop.probes.model import ContainerSample, Snapshot

GPU = "gpu"
INPUT_CPU = "input-cpu"
INPUT_IO = "input-io"
MEMORY = "memory"
IDLE = "idle"
KINDS = (GPU, INPUT_CPU, INPUT_IO, MEMORY, IDLE)


def _option(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class WorkloadThresholds:
    gpu_busy_percent: float = _option(60.0, "GPU/SM utilisation % from which a container is GPU-bound")
    gpu_idle_percent: float = _option(5.0, "GPU/SM utilisation % at or below which its GPU is idle")
    cpu_quota_share: float = _option(0.9, "share of the CPU limit from which the container sits at its quota")
    cpu_throttled_share: float = _option(0.25, "share of CFS periods throttled (between 2 sweeps) from which the "
                                               "quota holds the container back")
    loader_core_percent: float = _option(90.0, "CPU % of one core from which a data-loader process is saturated")
    io_psi_percent: float = _option(20.0, "I/O pressure (PSI some avg10, %) from which reads stall")
    memory_share: float = _option(0.9, "working set / memory limit from which memory holds the job back")
    memory_psi_percent: float = _option(10.0, "memory pressure (PSI some avg10, %) from which it reclaims")
    cpu_idle_percent: float = _option(5.0, "CPU % of one core at or below which the container does nothing")

    def named(self, name: str) -> str:
        return f"{name}={getattr(self, name)}"

    @classmethod
    def options(cls) -> list[tuple[str, type, object, str]]:
        return [(f.name, type(f.default), f.default, f.metadata.get("help", "")) for f in fields(cls)]


@dataclass(frozen=True)
class Workload:
    kind: str  # one of KINDS
    reasons: tuple[str, ...]  # the values that decided it, each naming its threshold

    def to_json(self) -> dict:
        return {"kind": self.kind, "reasons": list(self.reasons)}


def gpu_busy_percent(c: ContainerSample, snapshot: Snapshot | None = None) -> float | None:
    """The container's SM % from NVML's per-process samples; else the busiest of its GPUs (shared GPUs count)."""
    if c.gpu_sm_percent is not None:
        return c.gpu_sm_percent
    if snapshot is None:
        return None
    utils = [g.utilization_percent for g in snapshot.gpus
             if g.utilization_percent is not None and g.index in {u.index for u in c.gpus}]
    return max(utils) if utils else None


def classify(c: ContainerSample, snapshot: Snapshot | None = None,
             t: WorkloadThresholds = WorkloadThresholds(), previous: Snapshot | None = None) -> Workload | None:
    """What holds `c` back, or None when it uses no GPU or the snapshot cannot tell. With `previous` (an earlier
    sweep) CFS throttling between the two counts too."""
    if not c.running or not c.gpus:
        return None
    busy = gpu_busy_percent(c, snapshot)
    if busy is None:
        return None
    util = f"GPU {busy:.0f}%"
    if busy >= t.gpu_busy_percent:
        return Workload(GPU, (f"{util} >= {t.named('gpu_busy_percent')}",))
    starved = f"{util} < {t.named('gpu_busy_percent')}"

    limit = c.memory_limit_bytes or c.config.memory_limit_bytes
    if limit and c.memory_bytes is not None and c.memory_bytes / limit >= t.memory_share:
        return Workload(MEMORY, (starved, f"working set {c.memory_bytes / limit:.0%} of the limit >= "
                                          f"{t.named('memory_share')}"))
    if c.pressure is not None and c.pressure.memory is not None and c.pressure.memory >= t.memory_psi_percent:
        return Workload(MEMORY, (starved, f"memory pressure {c.pressure.memory:.0f}% >= "
                                          f"{t.named('memory_psi_percent')}"))

    if c.cpu_limit_percent is not None and c.cpu_limit_percent >= t.cpu_quota_share * 100:
        return Workload(INPUT_CPU, (starved, f"CPU at {c.cpu_limit_percent:.0f}% of its limit "
                                             f"({c.cpu_limit_cores:g} cores) >= {t.named('cpu_quota_share')}"))
    throttled = _throttled_share(c, snapshot, previous)
    if throttled is not None and throttled >= t.cpu_throttled_share:
        return Workload(INPUT_CPU, (starved, f"CFS-throttled in {throttled:.0%} of periods >= "
                                             f"{t.named('cpu_throttled_share')}"))
    # Data-loader workers: the processes besides the main one (the oldest: lowest PID), each at a full core.
    procs = sorted((p for p in c.processes if p.cpu_percent is not None),
                   key=lambda p: (p.container_pid if p.container_pid is not None else p.host_pid, p.host_pid))
    workers = procs[1:]
    if len(workers) >= 1 and all((p.cpu_percent or 0) >= t.loader_core_percent for p in workers):
        return Workload(INPUT_CPU, (starved, f"{len(workers)} worker process(es) each at >= "
                                             f"{t.loader_core_percent:g}% of a core ({t.named('loader_core_percent')})"))

    io_psi = c.pressure.io if c.pressure is not None else None
    io_source = "I/O pressure"
    if io_psi is None and snapshot is not None:
        io_psi = snapshot.host.pressure.get("io")
        io_source = "host I/O pressure"
    if io_psi is not None and io_psi >= t.io_psi_percent and (c.io_read_bytes_per_s or 0) > 0:
        return Workload(INPUT_IO, (starved, f"{io_source} {io_psi:.0f}% >= {t.named('io_psi_percent')} while "
                                            f"reading {(c.io_read_bytes_per_s or 0) / 1e6:.1f} MB/s"))

    if busy <= t.gpu_idle_percent and c.cpu_percent is not None and c.cpu_percent <= t.cpu_idle_percent:
        return Workload(IDLE, (f"{util} <= {t.named('gpu_idle_percent')}",
                               f"CPU {c.cpu_percent:.0f}% <= {t.named('cpu_idle_percent')}",
                               f"holds {(c.gpu_memory_bytes or 0) / (1 << 30):.1f} GiB of GPU memory"))
    return None  # underused, but not for a reason the snapshot shows


def _throttled_share(c: ContainerSample, snapshot: Snapshot | None, previous: Snapshot | None) -> float | None:
    interval_s = c.interval_s or (snapshot.interval_s if snapshot is not None else None)  # between its readings
    if previous is None or snapshot is None or not interval_s or c.cpu_throttled_periods is None:
        return None
    before = next((p for p in previous.containers if p.id == c.id), None)
    if before is None or before.cpu_throttled_periods is None:
        return None
    periods = interval_s / ((c.config.cpu_period or 100_000) / 1e6)
    return (c.cpu_throttled_periods - before.cpu_throttled_periods) / periods if periods else None


def classify_all(snapshot: Snapshot, t: WorkloadThresholds = WorkloadThresholds(),
                 previous: Snapshot | None = None) -> dict[str, Workload]:
    """{container id: its workload} for the containers that have one. Every place that shows the class (table,
    detail, `snapshot --json`, serve) and the doctor's perf.input_bound pass the same snapshot and previous
    sweep, so they never disagree."""
    out = {}
    for c in snapshot.containers:
        w = classify(c, snapshot, t, previous=previous)
        if w is not None:
            out[c.id] = w
    return out
