"""Recent values per container and per GPU, kept from successive snapshots for the graphs."""

from __future__ import annotations

from collections import deque
from typing import Deque

from .model import Snapshot

# Metrics kept per container and per GPU; a value is None where the snapshot had none (a gap in the graph).
CONTAINER_METRICS = ("cpu_percent", "memory_bytes", "gpu_percent", "gpu_memory_bytes")
GPU_METRICS = ("utilization_percent", "memory_used_bytes")

Series = Deque[float | None]


class History:
    """`deque(maxlen=length)` per metric, per container id and per GPU uuid.

    Containers and GPUs that leave the snapshot are forgotten, so the memory held is bounded by what is
    on screen.
    """

    def __init__(self, length: int):
        self.length = length
        self._containers: dict[str, dict[str, Series]] = {}
        self._gpus: dict[str, dict[str, Series]] = {}

    def record(self, snapshot: Snapshot) -> None:
        gpu_util = {g.index: g.utilization_percent for g in snapshot.gpus}
        seen = set()
        for c in snapshot.containers:
            seen.add(c.id)
            series = self._containers.get(c.id)
            if series is None:
                series = self._containers[c.id] = {m: deque(maxlen=self.length) for m in CONTAINER_METRICS}
            # A container's "GPU %" is its SM share when the driver gives per-process utilisation, else
            # the utilisation of the GPUs it uses (which it may share).
            gpu_percent = c.gpu_sm_percent
            if gpu_percent is None and c.gpus:
                values = [gpu_util.get(g.index) for g in c.gpus]
                known = [v for v in values if v is not None]
                gpu_percent = max(known) if known else None
            series["cpu_percent"].append(c.cpu_percent)
            series["memory_bytes"].append(c.memory_bytes)
            series["gpu_percent"].append(gpu_percent)
            series["gpu_memory_bytes"].append(c.gpu_memory_bytes if c.running else None)
        for gone in set(self._containers) - seen:
            del self._containers[gone]

        seen = set()
        for g in snapshot.gpus:
            seen.add(g.uuid)
            series = self._gpus.get(g.uuid)
            if series is None:
                series = self._gpus[g.uuid] = {m: deque(maxlen=self.length) for m in GPU_METRICS}
            series["utilization_percent"].append(g.utilization_percent)
            series["memory_used_bytes"].append(g.memory_used_bytes)
        for gone in set(self._gpus) - seen:
            del self._gpus[gone]

    def container(self, container_id: str, metric: str) -> list[float | None]:
        series = self._containers.get(container_id)
        return list(series[metric]) if series else []

    def gpu(self, uuid: str, metric: str) -> list[float | None]:
        series = self._gpus.get(uuid)
        return list(series[metric]) if series else []
