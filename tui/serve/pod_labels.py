"""The kubelet's label names on pod containers' series: cAdvisor's `namespace`, `pod`, `container` on every
container_* series (beside `name`, `image`, `id`), on mltop_container_* and mltop_finding; dcgm-exporter's
`namespace`, `pod`, `container` on a DCGM_* GPU series whose processes all belong to one pod container.

Applied to the families after they are built, keyed by the labels they already carry (a container's `name`,
`container_id`, a GPU's `gpu`), so the families themselves stay runtime-blind. Docker containers' series keep
exactly the labels they had.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from prometheus_client.core import Metric

from mltop.probes.model import GpuSample, KubernetesInfo, Snapshot

POD_LABELS = ("namespace", "pod", "container")


def _pod(k: KubernetesInfo) -> dict[str, str]:
    return {"namespace": k.namespace, "pod": k.pod, "container": k.container}


def gpu_pod(g: GpuSample) -> KubernetesInfo | None:
    """The one pod container that every process on the GPU belongs to, or None (none, several, or a host
    process among them): dcgm-exporter's per-GPU pod labels, by who really uses the GPU."""
    pods = {p.kubernetes for p in g.processes}
    if len(pods) == 1:
        return next(iter(pods))
    return None


def label_pods(families: Iterable[Metric], snapshot: Snapshot, gpus: tuple[GpuSample, ...]) -> Iterator[Metric]:
    by_name = {c.name: c.kubernetes for c in snapshot.containers if c.kubernetes is not None}
    by_id = {c.id: c.kubernetes for c in snapshot.containers if c.kubernetes is not None}
    for g in gpus:  # a pod container only NVML saw (its runtime not asked): still labelled by its process
        for p in g.processes:
            if p.kubernetes is not None and p.container_id is not None:
                by_id.setdefault(p.container_id, p.kubernetes)
                by_name.setdefault(p.container_name or "", p.kubernetes)
    by_gpu = {str(g.index): pod for g in gpus if (pod := gpu_pod(g)) is not None}
    for family in families:
        if by_name or by_gpu:
            _relabel(family, by_name, by_id, by_gpu)
        yield family


def _relabel(family: Metric, by_name, by_id, by_gpu) -> None:
    name = family.name
    if name.startswith("container_"):
        def extra(labels):  # cAdvisor: name (mltop's), image, id (cgroup), plus the pod's
            k = by_name.get(labels.get("name", ""))
            return _pod(k) if k else None
    elif name.startswith("mltop_container_"):
        def extra(labels):  # `container` becomes the pod's container; mltop's name moves to `name`
            k = by_id.get(labels.get("container_id", ""))
            return {**_pod(k), "name": labels.get("container", "")} if k else None
    elif name == "mltop_finding":
        def extra(labels):
            k = by_name.get(labels.get("container", ""))
            return {**_pod(k), "name": labels.get("container", "")} if k else None
    elif name.startswith("DCGM_"):
        def extra(labels):
            k = by_gpu.get(labels.get("gpu", ""))
            return _pod(k) if k else None
    else:
        return
    samples = family.samples
    for i, sample in enumerate(samples):
        more = extra(sample.labels)
        if more:
            samples[i] = sample._replace(labels={**sample.labels, **more})
