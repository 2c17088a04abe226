"""Kubernetes checks: the GPUs the kubelet allocated to a pod container (its pod-resources API) against the GPUs
its processes use (NVML). Evidence names both sources; fixes are in a pod spec's and kubectl's terms. (The node's
runtime configuration and device plugin: node_runtime.py.)"""

from __future__ import annotations

import time

from mltop.probes.cri.podresources import KIND as POD_RESOURCES
from mltop.probes.model import ContainerSample, GpuAllocation
from mltop.probes.pod_gpus import used_device_uuids

from ..findings import WARNING, Finding, evidence
from .base import CheckContext, CheckSkipped, _cfg_source, container_check


def _allocations_known(ctx: CheckContext) -> str:
    """The pod-resources endpoint when it answered this sweep; CheckSkipped otherwise (nothing to compare)."""
    for s in ctx.snapshot.host.sources:
        if s.kind == POD_RESOURCES:
            if s.ok:
                return s.endpoint
            raise CheckSkipped(s.error or s.status)
    raise CheckSkipped("the kubelet's pod-resources API was not asked (no socket, no pod containers)")


def _device(a: GpuAllocation) -> str:
    where = f"GPU {a.index}" if a.index is not None else "a GPU NVML does not list"
    return f"{a.resource_name} {a.device_id} ({where})"


def _kubectl(c: ContainerSample) -> str:
    k = c.kubernetes
    return f"kubectl -n {k.namespace} get pod {k.pod} -o yaml"


@container_check("k8s.gpu_allocated_unused")
def check_allocated_unused(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """k8s.gpu_allocated_unused: a GPU reserved for the container that none of its processes has used for the
    window (gpu_alloc_unused_s): a reservation the scheduler cannot give to anyone else."""
    k = c.kubernetes
    if k is None or not c.running or not k.gpus_allocated:  # (allocations exist only where the kubelet answered)
        return []
    endpoint = _allocations_known(ctx)
    t = ctx.thresholds
    now = ctx.snapshot.taken_at
    idle = [a for a in k.gpus_allocated
            if not a.in_use and a.unused_since is not None and now - a.unused_since >= t.gpu_alloc_unused_s]
    if not idle:
        if c.id in ctx.allocation_unknown and any(not a.in_use for a in k.gpus_allocated):
            raise CheckSkipped(ctx.allocation_unknown[c.id])  # no history: it cannot tell, rather than stay silent
        return []
    ev = []
    for a in idle:
        since = time.strftime("%H:%M:%S", time.localtime(a.unused_since))
        ev.append(evidence(f"allocated {_device(a)} to {k.display_name}", f"kubelet pod-resources List at {endpoint}"))
        ev.append(evidence(f"no process of {k.display_name} on {a.uuid} since {since} ({now - a.unused_since:.0f} s "
                           f">= {t.named('gpu_alloc_unused_s')})", "NVML running processes joined to containers"
                           + (f", as {ctx.allocation_history} saw them" if ctx.allocation_history else "")))
    return [Finding("k8s.gpu_allocated_unused", WARNING, c.name,
                    f"Holds {len(idle)} allocated GPU(s) that none of its processes has used for "
                    f"{t.gpu_alloc_unused_s:g} s or more",
                    tuple(ev),
                    f"If the work is done or stuck, free the GPU: `kubectl -n {k.namespace} delete pod {k.pod}` "
                    "(or scale its Deployment/Job down); if it only needs a GPU at times, drop `nvidia.com/gpu` "
                    f"from `resources.limits` of container {k.container} and use a time-sliced or MIG share")]


@container_check("k8s.gpu_used_unallocated")
def check_used_unallocated(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """k8s.gpu_used_unallocated: a process of a pod container runs on a GPU the kubelet did not allocate to it
    (NVIDIA_VISIBLE_DEVICES=all in the image or the env, a privileged pod, a shared GPU used without a request)."""
    k = c.kubernetes
    if k is None:
        return []
    used = used_device_uuids(c.id, ctx.snapshot.gpus)
    if not used:
        return []
    endpoint = _allocations_known(ctx)
    allocated = {a.uuid for a in k.gpus_allocated}
    # a process on a MIG device also shows on its parent GPU: judge the MIG device, not its parent; a MIG
    # device of a GPU allocated whole is allocated
    mig_parent = {m.uuid: g.uuid for g in ctx.snapshot.gpus for m in g.mig_devices}
    parents_of_used_migs = {mig_parent[u] for u in used if u in mig_parent}
    stray = sorted(u for u in used - allocated if u not in parents_of_used_migs and mig_parent.get(u) not in allocated)
    if not stray:
        return []
    ev = [evidence(f"allocated to {k.display_name}: "
                   + (", ".join(a.device_id for a in k.gpus_allocated) or "no GPU"),
                   f"kubelet pod-resources List at {endpoint}")]
    for g in ctx.snapshot.gpus:
        for p in g.processes:
            if p.container_id == c.id and (g.uuid in stray or any(m.uuid in stray for m in g.mig_devices
                                                                  if p.host_pid in m.host_pids)):
                ev.append(evidence(f"host pid {p.host_pid} ({p.name or '?'}) of {k.display_name} runs on GPU "
                                   f"{g.index} ({g.uuid})", "NVML running processes joined to containers"))
    visible = c.config.env_value("NVIDIA_VISIBLE_DEVICES")
    if visible is not None:
        ev.append(evidence(f"env NVIDIA_VISIBLE_DEVICES={visible}", "CRI ContainerStatus"))
    return [Finding("k8s.gpu_used_unallocated", WARNING, c.name,
                    f"Runs on {len(stray)} GPU(s) the kubelet did not allocate to it: the scheduler may give "
                    "them to another pod",
                    tuple(ev),
                    f"Request what it uses: `resources.limits: {{nvidia.com/gpu: {len(stray) + len(allocated)}}}` "
                    f"on container {k.container}, and remove `NVIDIA_VISIBLE_DEVICES=all` and "
                    f"`privileged: true` from its spec ({_kubectl(c)} shows both)")]


def _asks_for_gpus(c: ContainerSample) -> list[str]:
    """Evidence that a pod container was meant to get GPUs: a kubelet allocation, or the device plugin's env."""
    k = c.kubernetes
    ev = [evidence(f"allocated {a.resource_name} {a.device_id}", "kubelet pod-resources List")
          for a in (k.gpus_allocated if k is not None else ())]
    visible = c.config.env_value("NVIDIA_VISIBLE_DEVICES")
    if visible and visible.strip().lower() not in ("void", "none"):
        ev.append(evidence(f"env NVIDIA_VISIBLE_DEVICES={visible}", _cfg_source(c)))
    return ev
