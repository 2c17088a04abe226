"""GPU visibility checks: a GPU workload sees the GPUs it was given, by the indices it uses."""

from __future__ import annotations

import re

from mltop.probes.model import ContainerSample

from ..findings import WARNING, Finding, evidence
from .base import (CheckContext, _cfg_source, _line, _log_evidence, _matches, by_runtime, container_check,
                   looks_like_gpu_workload)
from .toolkit import toolkit_injected


_NO_GPU_LOG = re.compile(
    r"no CUDA-capable device is detected|Found no NVIDIA driver on your system|"
    r"Could not find cuda drivers on your machine|No GPU/TPU found|CUDA driver initialization failed|"
    r"cudaErrorNoDevice|CUDA_ERROR_NO_DEVICE", re.IGNORECASE)


_FRAMEWORK_GPU_NOTE = re.compile(r"cuda|gpu|nvidia|driver|device", re.IGNORECASE)


def _framework_gpu_evidence(ctx: CheckContext, c: ContainerSample) -> tuple[list[str], bool]:
    """(evidence of CUDA builds that find no GPU, whether any framework does find one), from the device check.

    A CPU-only build (built_with_cuda None) is no sign of a GPU workload: it could not use one anyway.
    """
    ev: list[str] = []
    sees_gpu = False
    source = ctx.framework_source(c)
    for module, fw in ctx.imported_frameworks(c):
        if fw.get("gpu_available"):
            sees_gpu = True
        elif fw.get("built_with_cuda") and fw.get("gpu_available") is False:
            ev.append(evidence(f"{module} {fw.get('version')} built with CUDA {fw.get('built_with_cuda')} finds no "
                               f"GPU (device count {fw.get('device_count')})", source))
            notes = [n for n in [*(fw.get("errors") or ()), *(fw.get("warnings") or ())]
                     if _FRAMEWORK_GPU_NOTE.search(str(n))]
            ev += [evidence(f"{module} said {_line(str(n))!r}", source) for n in notes[:2]]
    return ev, sees_gpu


@container_check("gpu.not_visible")
def check_gpu_visible(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """gpu.not_visible: a GPU workload without GPUs (no request, NVIDIA_VISIBLE_DEVICES void/none/empty), or a
    CUDA build of a framework that finds no GPU (from the device check)."""
    cfg = c.config
    signs = looks_like_gpu_workload(c)
    log_hits = _matches(ctx.log_lines(c), _NO_GPU_LOG)
    framework_ev, framework_sees_gpu = _framework_gpu_evidence(ctx, c)
    if framework_sees_gpu and not framework_ev:
        log_hits = []  # the container's own framework found a GPU just now: older log lines are outvoted
    uses_gpu = ctx.uses_gpu(c)
    if uses_gpu:
        log_hits = []  # NVML lists its processes on a GPU now: older "no GPU" log lines are outvoted
    access = ctx.snapshot.gpu_access(c)
    has_gpus = ctx.has_gpus(c) or framework_sees_gpu
    visible = cfg.env_value("NVIDIA_VISIBLE_DEVICES")
    ev: list[str] = []
    title = None
    # a pod the kubelet gave GPUs that cannot reach them runs without NVIDIA's runtime: k8s.gpu_runtime says
    # so with the fix (runtimeClassName); "no GPU assigned, ask for nvidia.com/gpu" would be wrong
    allocated = c.kubernetes is not None and bool(c.kubernetes.gpus_allocated)
    if not has_gpus and not allocated and (signs or log_hits or framework_ev):
        title = "Looks like a GPU workload but has no GPU assigned"
        ev += signs + framework_ev
        host = ctx.snapshot.host
        ev.append(evidence(by_runtime(
            c, "HostConfig.DeviceRequests empty (no --gpus, no CDI device), Runtime "
               f"{cfg.runtime or 'unset'} (engine default {host.default_runtime or 'unknown'}), "
               "no /dev/nvidia* in HostConfig.Devices, not privileged",
            lambda k: "no GPU allocated to it (no `nvidia.com/gpu` in its resources.limits), runtime handler "
                      f"{cfg.runtime or 'the default (no runtimeClassName)'}"), _cfg_source(c)))
        ev.append(evidence("none of its processes on any GPU", "NVML running processes joined to containers"))
    elif toolkit_injected(ctx, c) and not cfg.device_requests and not uses_gpu and not cfg.nvidia_device_nodes \
            and not cfg.privileged and visible is not None and visible.strip().lower() in ("", "void", "none"):
        # With the nvidia runtime (and no other way in) the variable decides which GPUs are injected.
        title = f"NVIDIA_VISIBLE_DEVICES={visible!r} hides every GPU from the container"
        ev.append(evidence(by_runtime(c, "Config.Env", lambda k: "env") + f" NVIDIA_VISIBLE_DEVICES={visible!r}",
                           _cfg_source(c)))
        ev += framework_ev
    elif has_gpus and (log_hits or framework_ev):
        if uses_gpu:
            title = "A framework finds no GPU although the container's processes use one"
        elif cfg.requests_gpus:
            title = "The container asks for GPUs but its framework finds none"
        elif access:
            title = "The container has GPUs but its framework finds none"
        else:
            title = "A framework finds no GPU although another one in the container does"
        ev += ctx.gpu_access_evidence(c) + framework_ev
    if title is None:
        return _check_cuda_visible_devices(c)
    ev += _log_evidence(ctx, c, log_hits)
    return [Finding(
        "gpu.not_visible", WARNING, c.name, title, tuple(ev), by_runtime(
            c, "Run with `--gpus all` (or `--gpus '\"device=<uuid>\"'`); do not set NVIDIA_VISIBLE_DEVICES to "
               "void/none/empty; unset a stale CUDA_VISIBLE_DEVICES",
            lambda k: "Ask for GPUs in the pod spec: " + k.in_spec("resources: {limits: {nvidia.com/gpu: 1}}")
                      + " with `runtimeClassName: nvidia`; do not set NVIDIA_VISIBLE_DEVICES to void/none/empty in "
                      f"its env; unset a stale CUDA_VISIBLE_DEVICES (`{k.yaml}` shows both)"),
    )] + _check_cuda_visible_devices(c)


def _check_cuda_visible_devices(c: ContainerSample) -> list[Finding]:
    """CUDA_VISIBLE_DEVICES naming host indices that do not exist inside (GPUs are renumbered from 0)."""
    value = c.config.env_value("CUDA_VISIBLE_DEVICES")
    if not value or not c.config.device_requests:
        return []
    assigned = None
    for r in c.config.device_requests:
        if r.device_ids:
            assigned = len(r.device_ids)
        elif r.count and r.count > 0:
            assigned = r.count
    if assigned is None:
        return []
    indices = [int(p) for p in value.split(",") if p.strip().isdigit()]
    too_high = [i for i in indices if i >= assigned]
    if not too_high:
        return []
    return [Finding(
        "gpu.not_visible", WARNING, c.name,
        f"CUDA_VISIBLE_DEVICES={value} names GPU indices the container does not have",
        (evidence(f"Config.Env CUDA_VISIBLE_DEVICES={value}", _cfg_source(c)),
         evidence(f"{assigned} GPU(s) assigned by HostConfig.DeviceRequests; inside they are numbered from 0",
                  _cfg_source(c))),
        "Inside the container GPUs are renumbered from 0: use `CUDA_VISIBLE_DEVICES=0` (or unset it) and pick "
        "GPUs with `--gpus '\"device=<uuid>\"'`; set `CUDA_DEVICE_ORDER=PCI_BUS_ID`",
    )]


