"""GPU attribution: NVML's host PIDs joined to containers through their cgroup (probes/identity.py), so every
GPU process is its container's, whatever runtime runs it and whatever the container asked for."""

from __future__ import annotations

import dataclasses

from .catalog import ContainerCatalog
from .identity import identity_of_pid
from .model import ContainerGpuUse, ContainerSample, GpuProcess, GpuSample


def attribute_gpu_processes(
    gpus: tuple[GpuSample, ...] | list[GpuSample],
    containers: list[ContainerSample],
    catalog: ContainerCatalog | None = None,
) -> tuple[list[GpuSample], list[ContainerSample]]:
    """Join NVML's host PIDs to containers: host PID → /proc/<pid>/cgroup → container id → name.

    Returns GPUs whose processes carry container ids and names, and containers carrying their GPU use
    (per GPU and per process). Processes in containers the engine does not know (podman, Kubernetes) keep
    the id with the runtime's name; processes in no container stay host processes.
    """

    by_id = {c.id: c for c in containers}
    per_container_gpu: dict[str, dict[int, list[GpuProcess]]] = {}
    per_pid: dict[int, list[tuple[GpuSample, GpuProcess]]] = {}
    new_gpus: list[GpuSample] = []
    for gpu in gpus:
        procs = []
        for proc in gpu.processes:
            identity = identity_of_pid(proc.host_pid)
            if identity is not None:
                runtime, cid = identity.runtime, identity.container_id
                container = by_id.get(cid)
                kubernetes = None
                if container is None and catalog is not None:
                    meta = catalog.get(cid)
                    name = meta.name if meta else None
                else:
                    name = container.name if container else None
                if container is not None:
                    runtime = container.runtime or runtime
                    kubernetes = container.kubernetes
                if name is None:
                    name = f"{runtime or 'pod'}:{cid[:12]}"
                proc = dataclasses.replace(proc, container_id=cid, container_name=name, runtime=runtime,
                                           kubernetes=kubernetes)
                per_container_gpu.setdefault(cid, {}).setdefault(gpu.index, []).append(proc)
                per_pid.setdefault(proc.host_pid, []).append((gpu, proc))
            procs.append(proc)
        new_gpus.append(dataclasses.replace(gpu, processes=tuple(procs)))

    new_containers = []
    for container in containers:
        uses = per_container_gpu.get(container.id)
        if not uses:
            new_containers.append(container)
            continue
        gpu_uses = []
        for gpu in new_gpus:
            procs = uses.get(gpu.index)
            if not procs:
                continue
            mems = [p.gpu_memory_bytes for p in procs if p.gpu_memory_bytes is not None]
            sms = [p.sm_percent for p in procs if p.sm_percent is not None]
            gpu_uses.append(ContainerGpuUse(gpu.index, gpu.uuid, sum(mems) if mems else None,
                                            sum(sms) if sms else None))
        processes = []
        for p in container.processes:
            entries = per_pid.get(p.host_pid)
            if entries:
                mems = [gp.gpu_memory_bytes for _, gp in entries if gp.gpu_memory_bytes is not None]
                sms = [gp.sm_percent for _, gp in entries if gp.sm_percent is not None]
                p = dataclasses.replace(
                    p,
                    gpu_memory_bytes=sum(mems) if mems else None,
                    gpu_indices=tuple(sorted({g.index for g, _ in entries})),
                    sm_percent=sum(sms) if sms else None,
                )
            processes.append(p)
        new_containers.append(dataclasses.replace(container, gpus=tuple(gpu_uses), processes=tuple(processes)))
    return new_gpus, new_containers
