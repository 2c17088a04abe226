"""GPU allocation beside GPU use for pod containers: the kubelet's allocations (probes/cri/podresources.py)
joined to the containers by namespace, pod and container name, each marked in use when a process of the
container runs on the device (NVML, after attribution) and, when not, since when."""

from __future__ import annotations

import dataclasses

from .cri.podresources import PodResourcesSource
from .model import ContainerSample, GpuSample, SourceStatus


def used_device_uuids(container_id: str, gpus: tuple[GpuSample, ...] | list[GpuSample]) -> set[str]:
    """The UUIDs of the GPUs (and MIG devices) on which a process of the container runs."""
    used = set()
    for g in gpus:
        pids = {p.host_pid for p in g.processes if p.container_id == container_id}
        if not pids:
            continue
        used.add(g.uuid)
        used.update(m.uuid for m in g.mig_devices if pids & set(m.host_pids))
    return used


class PodGpuAllocations:
    def __init__(self, cli_value: str | None = None):
        self.source = PodResourcesSource(cli_value)
        self._unused_since: dict[tuple[str, str], float] = {}  # (container id, device id) -> unix time

    def close(self) -> None:
        self.source.close()

    def apply(self, containers: list[ContainerSample], gpus, taken_at: float
              ) -> tuple[SourceStatus | None, list[ContainerSample]]:
        pods_seen = any(c.kubernetes is not None for c in containers)
        status, allocations = self.source.list(pods_seen)
        if not allocations:
            self._unused_since.clear()
            return status, containers
        out, live = [], set()
        for c in containers:
            k = c.kubernetes
            found = allocations.get((k.namespace, k.pod, k.container)) if k is not None and c.running else None
            if not found:
                out.append(c)
                continue
            used = used_device_uuids(c.id, gpus)
            index_of = {g.uuid: g.index for g in gpus} | {m.uuid: g.index for g in gpus for m in g.mig_devices}
            marked = []
            for a in found:
                a = dataclasses.replace(a, index=index_of.get(a.uuid))
                key = (c.id, a.device_id)
                live.add(key)
                if a.uuid in used:
                    self._unused_since.pop(key, None)
                    marked.append(dataclasses.replace(a, in_use=True))
                else:
                    since = self._unused_since.setdefault(key, taken_at)
                    marked.append(dataclasses.replace(a, unused_since=since))
            out.append(dataclasses.replace(c, kubernetes=dataclasses.replace(k, gpus_allocated=tuple(marked))))
        for stale in set(self._unused_since) - live:
            del self._unused_since[stale]
        return status, out
