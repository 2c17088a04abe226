"""Recent values per container and per GPU, kept from successive snapshots (or a recording) for graphs and
reports. One set of series names everywhere: CONTAINER_METRICS and GPU_METRICS."""

from __future__ import annotations

from collections import deque
from typing import Deque, Iterable, Mapping, Sequence

from .model import Snapshot

# Metrics kept per container and per GPU; a value is None where the snapshot had none (a gap in the graph).
CONTAINER_METRICS = ("cpu_percent", "memory_bytes", "gpu_percent", "gpu_memory_bytes")
GPU_METRICS = ("utilization_percent", "memory_used_bytes", "sm_active_percent", "tensor_active_percent")

Series = Deque[float | None]


def container_gpu_percent(sm_percent: float | None, gpu_utilizations: Sequence[float | None]) -> float | None:
    """A container's "GPU %": its SM share when the driver gives per-process utilisation, else the
    utilisation of the GPUs it uses (which it may share)."""
    if sm_percent is not None:
        return sm_percent
    known = [v for v in gpu_utilizations if v is not None]
    return max(known) if known else None


class History:
    """`deque(maxlen=length)` per metric, per container id and per GPU uuid.

    Containers and GPUs that leave the snapshot are forgotten, so the memory held is bounded by what is
    on screen.
    """

    def __init__(self, length: int):
        self.length = length
        self._containers: dict[str, dict[str, Series]] = {}
        self._gpus: dict[str, dict[str, Series]] = {}
        self._forget = True  # drop containers that leave (the dashboard); a report keeps them

    def record(self, snapshot: Snapshot) -> None:
        gpu_util = {g.index: g.utilization_percent for g in snapshot.gpus}
        seen = set()
        for c in snapshot.containers:
            seen.add(c.id)
            series = self._containers.get(c.id)
            if series is None:
                series = self._containers[c.id] = {m: deque(maxlen=self.length) for m in CONTAINER_METRICS}
            if c.gpus:
                gpu_percent = container_gpu_percent(c.gpu_sm_percent, [gpu_util.get(g.index) for g in c.gpus])
                gpu_memory = c.gpu_memory_bytes if c.running else None
            else:  # (most containers, every sweep: what the two lines above give without a GPU)
                gpu_percent = gpu_memory = None
            series["cpu_percent"].append(c.cpu_percent)
            series["memory_bytes"].append(c.memory_bytes)
            series["gpu_percent"].append(gpu_percent)
            series["gpu_memory_bytes"].append(gpu_memory)
        for gone in set(self._containers) - seen:
            if self._forget:
                del self._containers[gone]
            else:  # a gap, so every series stays aligned with the sweeps
                for values in self._containers[gone].values():
                    values.append(None)

        seen = set()
        for g in snapshot.gpus:
            seen.add(g.uuid)
            series = self._gpus.get(g.uuid)
            if series is None:
                series = self._gpus[g.uuid] = {m: deque(maxlen=self.length) for m in GPU_METRICS}
            series["utilization_percent"].append(g.utilization_percent)
            series["memory_used_bytes"].append(g.memory_used_bytes)
            gpm = g.gpm  # GPU Performance Metrics: None on GPUs without them (a gap, as for any unknown)
            series["sm_active_percent"].append(gpm.sm_active_percent if gpm is not None else None)
            series["tensor_active_percent"].append(gpm.tensor_active_percent if gpm is not None else None)
        for gone in set(self._gpus) - seen:
            del self._gpus[gone]

    @classmethod
    def from_snapshots(cls, snapshots: Iterable[Snapshot], length: int | None = None) -> "History":
        """A History of these snapshots, oldest first (reports given a list of sweeps use it). Containers
        that left before the last snapshot are kept too."""
        snapshots = list(snapshots)
        history = cls(length or max(len(snapshots), 1))
        history._forget = False
        for snap in snapshots:
            history.record(snap)
        return history

    def seed(self, containers: Mapping[str, Mapping[str, Sequence[float | None]]],
             gpus: Mapping[str, Mapping[str, Sequence[float | None]]]) -> None:
        """Start from series read elsewhere (a recording: RecordingStore.series), oldest first; what is
        recorded afterwards is appended."""
        for target, source, metrics in ((self._containers, containers, CONTAINER_METRICS),
                                        (self._gpus, gpus, GPU_METRICS)):
            target.clear()
            for key, series in source.items():
                target[key] = {m: deque(series.get(m, ()), maxlen=self.length) for m in metrics}

    def prepend(self, containers: Mapping[str, Mapping[str, Sequence[float | None]]],
                gpus: Mapping[str, Mapping[str, Sequence[float | None]]]) -> None:
        """Put older values (a recording's) before what was recorded here, for the keys still shown."""
        for target, source, metrics in ((self._containers, containers, CONTAINER_METRICS),
                                        (self._gpus, gpus, GPU_METRICS)):
            for key, series in target.items():
                older = source.get(key)
                if older:
                    for m in metrics:
                        series[m] = deque([*older.get(m, ()), *series[m]], maxlen=self.length)

    def container(self, container_id: str, metric: str) -> list[float | None]:
        series = self._containers.get(container_id)
        return list(series[metric]) if series else []

    def gpu(self, uuid: str, metric: str) -> list[float | None]:
        series = self._gpus.get(uuid)
        return list(series[metric]) if series else []
