"""Memory checks: OOM kills, the memory limit, CUDA out-of-memory, /dev/shm."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mltop.probes.model import ContainerSample
from mltop.probes.units import binary_size

from ..findings import CRITICAL, INFO, WARNING, Finding, evidence
from .base import (CheckContext, LogSign, _bytes, _cfg_source, _line, _log_evidence, _matches, _mebibytes, by_runtime,
                   container_check, looks_like_gpu_workload, pod_resources_fix)


# --------------------------------------------------------------------------- memory


_OOM_LOG = re.compile(r"killed by signal: Killed|Out of memory|MemoryError|Killed$", re.IGNORECASE)


@container_check("oom")
def check_host_oom(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """oom.killed (State.OOMKilled, the cgroup's oom_kill counter, exit 137 with log evidence), oom.near_limit."""
    cfg = c.config
    t = ctx.thresholds
    out: list[Finding] = []
    limit = c.memory_limit_bytes or cfg.memory_limit_bytes
    limit_ev = evidence(f"HostConfig.Memory {_bytes(limit) if limit else 'unlimited'}", _cfg_source(c))
    fix = ("Raise the limit (`--memory`), use fewer DataLoader workers or smaller batches; /dev/shm usage is "
           "charged to the memory limit too")
    if c.kubernetes is not None:  # the same facts in a pod spec's terms
        limit_ev = evidence(f"resources.limits.memory {_bytes(limit) if limit else 'none (unlimited)'} (the "
                            "container's cgroup memory limit)", _cfg_source(c))
        fix = pod_resources_fix(c, "memory", _mebibytes(2 * limit) if limit else "<what it needs>",
                                "or use fewer DataLoader workers or smaller batches (a /dev/shm emptyDir of "
                                "medium Memory is charged to the limit too)")
    if cfg.oom_killed:
        ev = [evidence(f"State.OOMKilled true, ExitCode {cfg.exit_code}, FinishedAt {cfg.finished_at}",
                       _cfg_source(c)), limit_ev]
        ev += _log_evidence(ctx, c, _matches(ctx.log_lines(c), _OOM_LOG, keep=2))
        out.append(Finding("oom.killed", CRITICAL, c.name, "The container was killed for running out of memory",
                           tuple(ev), fix))
    elif c.oom_kills:
        prev = ctx.previous_of(c)
        rising = prev is not None and prev.oom_kills is not None and c.oom_kills > prev.oom_kills
        counter_file = "memory.events" if ctx.snapshot.host.cgroup_version == 2 else "memory.oom_control"
        was = f" (was {prev.oom_kills} at the previous sweep)" if rising else ""
        ev = [evidence(f"oom_kill {c.oom_kills}{was}", f"{c.cgroup_path}/{counter_file}"), limit_ev]
        ev += _log_evidence(ctx, c, _matches(ctx.log_lines(c), _OOM_LOG, keep=2))
        out.append(Finding("oom.killed", CRITICAL if rising else WARNING, c.name,
                           f"{c.oom_kills} process(es) in the container were OOM-killed (the container lives on, "
                           "often a DataLoader worker)", tuple(ev), fix))
    elif cfg.exit_code == 137 and c.status == "exited":
        hits = _matches(ctx.log_lines(c), _OOM_LOG, keep=2)
        if hits and limit:
            ev = [evidence("ExitCode 137 (SIGKILL), State.OOMKilled false", _cfg_source(c)), limit_ev]
            ev += _log_evidence(ctx, c, hits)
            out.append(Finding("oom.killed", WARNING, c.name,
                               "The container died of SIGKILL with out-of-memory messages in its log",
                               tuple(ev), fix))

    if c.running and limit and c.memory_bytes is not None:
        ratio = c.memory_bytes / limit
        if ratio >= t.memory_near_limit:
            ev = [
                evidence(f"working set {_bytes(c.memory_bytes)} = {ratio:.0%} of limit {_bytes(limit)}",
                         f"{c.cgroup_path} (usage - inactive_file)"),
                evidence(f"{ratio:.2f} >= {t.named('memory_near_limit')}", "mltop doctor"),
            ]
            if c.shm_bytes:
                ev.append(evidence(f"of which /dev/shm (shmem) {_bytes(c.shm_bytes)}", f"{c.cgroup_path}/memory.stat"))
            out.append(Finding("oom.near_limit", WARNING, c.name,
                               f"Memory at {ratio:.0%} of its limit: an OOM kill is imminent", tuple(ev), fix))
    return out


# CUDA/accelerator OOM messages of PyTorch, TensorFlow, JAX/XLA and cuBLAS.
_CUDA_OOM = re.compile(
    r"CUDA out of memory|OutOfMemoryError|OOM when allocating tensor|RESOURCE_EXHAUSTED: Out of memory|"
    r"CUBLAS_STATUS_ALLOC_FAILED|CUDA_ERROR_OUT_OF_MEMORY|CUDA error: out of memory|cudaErrorMemoryAllocation")
_TRIED = re.compile(r"Tried to allocate ([\d.]+) ?([KMGT]i?B|B|bytes)", re.IGNORECASE)
_XLA_BYTES = re.compile(r"(?:allocat[a-z]{0,6}|trying to allocate) (\d+) bytes", re.IGNORECASE)  # bounded: linear
_TF_SHAPE = re.compile(r"OOM when allocating tensor with shape\s*\[([^\]]{0,200})\] and type (\w+)")  # bounded
_GPU_INDEX = re.compile(r"\bGPU (\d+)\b|device:GPU:(\d+)|GPU_(\d+)_bfc")
_TORCH_PROCESS = re.compile(r"Process (\d+) has ([\d.]+ ?[KMGT]i?B) memory in use")
_UNITS = {"b": 1, "bytes": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_DTYPE_SIZE = {"float": 4, "float32": 4, "half": 2, "float16": 2, "bfloat16": 2, "double": 8, "float64": 8,
               "int32": 4, "int64": 8, "int8": 1, "uint8": 1}


@dataclass(frozen=True)
class CudaOom:
    """What one accelerator out-of-memory message says."""

    framework: str
    requested_bytes: int | None
    requested_text: str | None  # as the message wrote it, e.g. "2.00 GiB"
    gpu_index: int | None
    other_processes: tuple[tuple[int, str], ...]  # (pid, memory text) the message names (PyTorch >= 2.1)


def parse_cuda_oom(text: str) -> CudaOom | None:
    """Parse an OOM message (one line or a whole traceback); None when it is not one."""
    if not _CUDA_OOM.search(text):
        return None
    if "OOM when allocating tensor" in text:
        framework = "tensorflow"
    elif "RESOURCE_EXHAUSTED" in text:
        framework = "jax/xla"
    elif "CUBLAS_STATUS_ALLOC_FAILED" in text:
        framework = "cublas"
    else:
        framework = "pytorch" if ("torch" in text or "Tried to allocate" in text or "CUDA out of memory" in text) \
            else "cuda"
    requested = requested_text = None
    m = _TRIED.search(text)
    if m:
        requested_text = f"{m.group(1)} {m.group(2)}"
        requested = int(float(m.group(1)) * _UNITS.get(m.group(2).lower(), 1))
    else:
        m = _XLA_BYTES.search(text)
        if m:
            requested = int(m.group(1))
            requested_text = f"{requested} bytes"
        else:
            m = _TF_SHAPE.search(text)
            if m:
                dims = [int(d) for d in re.findall(r"\d+", m.group(1))]
                size = _DTYPE_SIZE.get(m.group(2).lower())
                if dims and size:
                    n = size
                    for d in dims:
                        n *= d
                    requested = n
                    requested_text = f"tensor [{m.group(1)}] of {m.group(2)}"
    gpu = None
    g = _GPU_INDEX.search(text)
    if g:
        gpu = int(next(x for x in g.groups() if x is not None))
    others = tuple((int(p), mem) for p, mem in _TORCH_PROCESS.findall(text))
    return CudaOom(framework, requested, requested_text, gpu, others)


@container_check("oom.cuda")
def check_cuda_oom(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """oom.cuda: accelerator OOM in recent logs, with the size asked for and who else holds that GPU."""
    lines = ctx.log_lines(c)
    hits = [i for i, line in enumerate(lines) if _CUDA_OOM.search(line)]
    if not hits:
        return []
    last = hits[-1]
    # The size and the other processes can sit on the lines after the exception name.
    window = "\n".join(lines[last:last + 4])
    oom = parse_cuda_oom(window) or parse_cuda_oom(lines[last])
    ev = _log_evidence(ctx, c, [lines[last]])
    if len(hits) > 1:
        ev.append(evidence(f"{len(hits)} out-of-memory lines in the last {len(lines)} log lines", ctx.log_source(c)))
    title = "Out of GPU memory"
    if oom is not None:
        if oom.requested_bytes is not None:
            ev.append(evidence(f"requested {oom.requested_text} = {_bytes(oom.requested_bytes)} ({oom.framework})",
                               "parsed from the log line"))
            title += f" allocating {oom.requested_text}"
        if oom.gpu_index is not None:
            title += f" on GPU {oom.gpu_index}"
        for pid, mem in oom.other_processes:
            ev.append(evidence(f"process {pid} holds {mem} on that GPU", "the framework's message"))
    # Other processes on this container's GPUs: noisy neighbours.
    indices = {u.index for u in c.gpus}
    if oom is not None and oom.gpu_index is not None and not indices:
        indices = {oom.gpu_index}
    neighbours = []
    for index in sorted(indices):
        g = ctx.gpu(index)
        if g is None:
            continue
        if g.memory_used_bytes is not None and g.memory_total_bytes:
            ev.append(evidence(f"GPU {index} memory used {_bytes(g.memory_used_bytes)} of "
                               f"{_bytes(g.memory_total_bytes)}", "NVML nvmlDeviceGetMemoryInfo"))
        for p in g.processes:
            if p.container_id == c.id:
                continue
            who = f"container {p.container_name}" if p.container_name else "a host process"
            mem = _bytes(p.gpu_memory_bytes) if p.gpu_memory_bytes is not None else "an unknown amount"
            neighbours.append(f"{who} (pid {p.host_pid}{', ' + p.name if p.name else ''})")
            ev.append(evidence(f"GPU {index} also used by {who}, host pid {p.host_pid} "
                               f"{p.name or ''} holding {mem}".replace("  ", " "),
                               "NVML nvmlDeviceGetComputeRunningProcesses joined to containers"))
    if neighbours:
        title += f"; shared with {', '.join(neighbours[:3])}"
    severity = WARNING if c.running else CRITICAL  # a running job may have caught it (batch-size finders do)
    return [Finding(
        "oom.cuda", severity, c.name, title, tuple(ev), by_runtime(
            c, "Smaller batch or mixed precision; `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`; JAX: "
               "`XLA_PYTHON_CLIENT_PREALLOCATE=false`; TF: `TF_FORCE_GPU_ALLOW_GROWTH=true`"
               + ("; move the other processes off this GPU or pin this job to a free one" if neighbours else ""),
            lambda k: "Smaller batch or mixed precision; in the pod spec (its Deployment/StatefulSet/Job) "
                      + k.in_spec('env: [{name: PYTORCH_CUDA_ALLOC_CONF, value: "expandable_segments:True"}]')
                      + " (JAX: `XLA_PYTHON_CLIENT_PREALLOCATE=false`, TF: `TF_FORCE_GPU_ALLOW_GROWTH=true`, the "
                      f"same way); the whole traceback: `{k.logs}` (`--previous` once it restarted)"
                      + ("; the GPU is shared (time-slicing, MPS, or a pod without `nvidia.com/gpu`): request a "
                         "whole GPU in `resources.limits`, or move the other pods off it" if neighbours else "")),
    )]


# --------------------------------------------------------------------------- shared memory


_SHM_LOG = LogSign.of(
    r"bus error|out of shared memory|failed to extend /dev/shm", (r"/dev/shm", r"No space left on device"),
    (r"No space left on device", r"/dev/shm"), (r"NCCL", r"shm|shared memory"), flags=re.IGNORECASE)


def _ml_signs(ctx: CheckContext, c: ContainerSample) -> list[str]:
    """Weak signs of an ML workload, enough to mention a small shm as info."""
    signs = looks_like_gpu_workload(c)
    if ctx.has_gpus(c):
        signs += ctx.gpu_access_evidence(c)[:2]
    for p in c.processes:
        if re.search(r"\b(python[\d.]*|torchrun|accelerate|deepspeed)\b", p.cmdline):
            signs.append(evidence(f"process {p.container_pid or p.host_pid}: {_line(p.cmdline, 120)!r}",
                                  f"/proc/{p.host_pid}/cmdline"))
            break
    return signs


@container_check("shm")
def check_shm(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """shm.too_small: a default-sized /dev/shm under pressure (logs, usage, exit 135); info when quiet."""
    cfg = c.config
    t = ctx.thresholds
    ipc = cfg.ipc_mode or "private"
    if ipc == "host" or ipc.startswith("container:"):
        return []
    size = cfg.shm_size_bytes
    if size is None or size > t.shm_small_bytes:
        return []
    shm_config = f"HostConfig.ShmSize {_bytes(size)}, IpcMode {ipc}"
    if c.kubernetes is not None:
        shm_config = f"/dev/shm {_bytes(size)} (the pod's own tmpfs: containerd's default size, no emptyDir there)"
    ev = [evidence(shm_config, _cfg_source(c)),
          evidence(f"{size} <= {t.named('shm_small_bytes')}", "mltop doctor")]
    pressure = False
    hits = _matches(ctx.log_lines(c), _SHM_LOG)
    if hits:
        pressure = True
        ev += _log_evidence(ctx, c, hits)
    if c.shm_bytes is not None and c.running:
        ratio = c.shm_bytes / size
        ev.append(evidence(f"/dev/shm holds {_bytes(c.shm_bytes)} = {ratio:.0%} of its size",
                           f"{c.cgroup_path}/memory.stat shmem"))
        if ratio >= t.shm_near_full:
            pressure = True
            ev.append(evidence(f"{ratio:.2f} >= {t.named('shm_near_full')}", "mltop doctor"))
    if cfg.exit_code == 135:
        pressure = True
        ev.append(evidence("ExitCode 135 (SIGBUS)", _cfg_source(c)))
    fix = "Run with `--ipc=host` or `--shm-size=8g` (NCCL: `--shm-size=1g --ulimit memlock=-1`)"
    if c.kubernetes is not None:
        fix = ("Mount a memory-backed emptyDir at /dev/shm: `volumes: [{name: dshm, emptyDir: {medium: Memory, "
               f"sizeLimit: 8Gi}}}}]` and in container `{c.kubernetes.container}` `volumeMounts: [{{name: dshm, "
               "mountPath: /dev/shm}]` (its pages count against resources.limits.memory: raise that with it)")
    if pressure:
        return [Finding("shm.too_small", WARNING, c.name,
                        f"/dev/shm is only {binary_size(size)} and the workload runs out of it", tuple(ev), fix)]
    signs = _ml_signs(ctx, c)
    if not signs:
        return []
    return [Finding("shm.too_small", INFO, c.name,
                    f"/dev/shm is only {binary_size(size)}: PyTorch DataLoader workers and NCCL often need more",
                    tuple(ev + signs), fix)]


