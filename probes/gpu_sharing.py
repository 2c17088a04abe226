"""Who shares each GPU (or MIG device): the containers whose processes run on it or that the kubelet gave a
replica of it, how (MPS, time-slicing, or nobody asked), each one's GPU memory and SM, and the sums.

Computed once per sweep from the attributed NVML processes and the pod-resources allocations
(probes/pod_gpus.py), and kept on the GPU sample (`GpuSample.sharing`), so the dashboard, `snapshot --json` and
`mltop serve` read the same fact.

Decisions, in short:
- a sharer is a container, or the host's compute processes in no container taken together ("host"): a host
  process takes memory and SM time from a container just as another container does. Graphics-only host
  processes (a desktop's X server) are not a sharer: they make no GPU "shared" in the ML sense;
- the MPS server (`nvidia-cuda-mps-server`, whose /proc comm the kernel cuts to `nvidia-cuda-mps`) is no
  sharer, wherever it runs (a host daemon, or the device plugin's MPS daemon pod): it is what the sharers share
  through; its PID is kept on the record;
- a GPU in MIG mode is shared per MIG device (instances are partitions, not sharing); its whole is never;
- the mode: "mps" when an MPS server or an MPS client (NVML's MPS process list) is on the device,
  "time-sliced" when a sharer holds a time-slicing replica of it (`GPU-…::N`), else "shared": several users on
  one device and nobody asked for it.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from .model import ContainerSample, GpuProcess, GpuSample, GpuSharer, GpuSharing

MPS_SERVER = "nvidia-cuda-mps-server"
MPS_COMM = MPS_SERVER[:15]  # /proc/<pid>/comm keeps 15 characters: "nvidia-cuda-mps"
HOST = "host"  # the sharer name of the processes in no container


def is_mps_server(p: GpuProcess) -> bool:
    return bool(p.name) and p.name.startswith(MPS_COMM)


def with_gpu_sharing(gpus: Iterable[GpuSample], containers: Iterable[ContainerSample]) -> list[GpuSample]:
    """The GPUs with `sharing` set: one record per GPU, or per MIG device, that two or more sharers use."""
    allocated: dict[str, list[tuple[ContainerSample, tuple[str, ...], bool]]] = {}
    for c in containers:
        k = c.kubernetes
        by_uuid: dict[str, list] = {}
        for a in k.gpus_allocated if k is not None else ():
            by_uuid.setdefault(a.uuid, []).append(a)
        for uuid, allocations in by_uuid.items():
            replicas = any(a.replica is not None for a in allocations)
            allocated.setdefault(uuid, []).append((c, tuple(a.device_id for a in allocations), replicas))
    out = []
    for g in gpus:
        if g.mig_devices:
            records = [_sharing(g.index, m.index, m.uuid, m.memory_total_bytes, g.mig_processes(m),
                                allocated.get(m.uuid, ())) for m in g.mig_devices]
        else:
            records = [_sharing(g.index, None, g.uuid, g.memory_total_bytes, g.processes, allocated.get(g.uuid, ()))]
        sharing = tuple(r for r in records if r is not None)
        out.append(dataclasses.replace(g, sharing=sharing) if sharing or g.sharing else g)
    return out


def sharing_of(gpus: Iterable[GpuSample], container_id: str) -> tuple[GpuSharing, ...]:
    """The shared devices the container is one of the sharers of."""
    return tuple(s for g in gpus for s in g.sharing if any(x.container_id == container_id for x in s.sharers))


def _sharing(index: int, mig_index: int | None, uuid: str, total: int | None, processes, allocated
             ) -> GpuSharing | None:
    server = next((p for p in processes if is_mps_server(p)), None)
    groups: dict[str | None, list[GpuProcess]] = {}
    for p in processes:
        if is_mps_server(p):
            continue
        if p.container_id is None and p.type == "graphics":
            continue  # a desktop's X server shares nothing an ML job cares about
        groups.setdefault(p.container_id, []).append(p)
    holders = {c.id: (c, ids, replicas) for c, ids, replicas in allocated}
    if len(set(groups) | set(holders)) < 2:
        return None
    sharers = []
    for cid in set(groups) | set(holders):
        procs = groups.get(cid, [])
        held = holders.get(cid) if cid is not None else None
        if cid is None:
            name, runtime = HOST, None
        elif procs:
            name, runtime = procs[0].container_name or cid[:12], procs[0].runtime
        else:
            name, runtime = held[0].name, held[0].runtime
        sharers.append(GpuSharer(
            container_id=cid, name=name, runtime=runtime, device_ids=held[1] if held else (),
            pids=tuple(sorted(p.host_pid for p in procs)),
            memory_bytes=_sum([p.gpu_memory_bytes for p in procs]),
            sm_percent=_sum([p.sm_percent for p in procs]),
        ))
    sharers.sort(key=lambda s: (s.container_id is None, -(s.memory_bytes or 0), s.name))
    if server is not None or any(p.type == "mps" for procs in groups.values() for p in procs):
        mode = "mps"
    elif any(replicas for _, _, replicas in allocated):
        mode = "time-sliced"
    else:
        mode = "shared"
    return GpuSharing(
        uuid=uuid, index=index, mig_index=mig_index, mode=mode, sharers=tuple(sharers),
        memory_used_sum=_sum([s.memory_bytes for s in sharers]),
        memory_total_bytes=total,
        sm_sum=_sum([s.sm_percent for s in sharers]),
        mps_server_pid=server.host_pid if server is not None else None,
    )


def _sum(values: list):
    """The sum of the known figures: 0 for none at all (a replica no process uses), None when NVML gave none."""
    known = [v for v in values if v is not None]
    return sum(known) if known or not values else None
