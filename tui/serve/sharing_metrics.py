"""Shared GPUs as Prometheus series: how many share each GPU (or MIG device) and how (MPS, time-sliced,
shared), their memory and SM together, and each sharer's (records: probes/gpu_sharing.py)."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from mltop.probes.model import ContainerSample, GpuSample, GpuSharing

# dcgm-exporter's GPU labels; GPU_I_ID (the MIG GPU instance, as its profiling series name it) "" on a whole GPU
SHARING_LABELS = ["gpu", "UUID", "GPU_I_ID", "mode"]
SHARER_LABELS = ["container", "container_id", "image", *SHARING_LABELS]  # container "" for the host's processes


def _instance_id(g: GpuSample, s: GpuSharing) -> str:
    if s.mig_index is None:
        return ""
    mig = next((m for m in g.mig_devices if m.index == s.mig_index), None)
    return "" if mig is None or mig.gpu_instance_id is None else str(mig.gpu_instance_id)


def gpu_sharing_families(gpus: tuple[GpuSample, ...], containers: tuple[ContainerSample, ...]) -> Iterator[Metric]:
    sharers = GaugeMetricFamily(
        "mltop_gpu_sharers", "Containers (and the host's processes in no container, as one) sharing the GPU or "
        "MIG device, by mode: mps, time-sliced (the device plugin's replicas), shared (nobody asked). "
        "A device used by one has no series.", labels=SHARING_LABELS)
    memory = GaugeMetricFamily("mltop_gpu_shared_memory_bytes",
                               "GPU memory of all the sharers of a shared GPU or MIG device together.",
                               labels=SHARING_LABELS)
    sm = GaugeMetricFamily("mltop_gpu_shared_sm_utilization_percent",
                           "SM utilisation of all the sharers of a shared GPU together (NVML process samples, "
                           "in %: shares of time when time-sliced; under MPS it can pass 100).",
                           labels=SHARING_LABELS)
    sharer_memory = GaugeMetricFamily("mltop_container_gpu_sharer_memory_bytes",
                                      "GPU memory of one sharer of a shared GPU or MIG device.", labels=SHARER_LABELS)
    sharer_sm = GaugeMetricFamily("mltop_container_gpu_sharer_sm_utilization_percent",
                                  "SM utilisation of one sharer of a shared GPU or MIG device (in %).",
                                  labels=SHARER_LABELS)
    images = {c.id: c.image for c in containers}
    for g in gpus:
        for s in g.sharing:
            labels = [str(g.index), g.uuid, _instance_id(g, s), s.mode]
            sharers.add_metric(labels, float(len(s.sharers)))
            if s.memory_used_sum is not None:
                memory.add_metric(labels, float(s.memory_used_sum))
            if s.sm_sum is not None:
                sm.add_metric(labels, float(s.sm_sum))
            for x in s.sharers:
                who = [x.name, x.container_id, images.get(x.container_id, "")] if x.container_id else ["", "", ""]
                if x.memory_bytes is not None:
                    sharer_memory.add_metric([*who, *labels], float(x.memory_bytes))
                if x.sm_percent is not None:
                    sharer_sm.add_metric([*who, *labels], float(x.sm_percent))
    yield sharers
    yield memory
    yield sm
    yield sharer_memory
    yield sharer_sm
