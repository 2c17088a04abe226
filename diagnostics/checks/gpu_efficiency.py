"""GPU efficiency checks from GPU Performance Metrics: launch-bound, tensor cores idle, memory-bound.

They judge a GPU (or a MIG instance) from its GPM figures over the last sweep interval. When one container's
processes are all that run on it, the finding is that container's and says so; when several share it, the
finding stays the GPU's and names them.
"""

from __future__ import annotations

from mltop.probes.model import GpmMetrics, GpuProcess, GpuSample, Snapshot

from ..findings import INFO, WARNING, Finding, evidence
from .base import CheckContext, host_check

GPM_SOURCE = "NVML GPU Performance Metrics (nvmlGpmMetricsGet, between two sweeps)"

LAUNCH_BOUND_FIX = ("Give the GPU bigger pieces of work: larger batches; CUDA graphs "
                    "(`torch.compile(mode=\"reduce-overhead\")` or `torch.cuda.graphs`); fewer host syncs "
                    "(`.item()`, `.cpu()`, printing tensors) inside the step; fuse small ops (`torch.compile`)")
TENSOR_IDLE_FIX = ("Let matmuls use the tensor cores: `torch.backends.cuda.matmul.allow_tf32 = True` "
                   "(or `torch.set_float32_matmul_precision(\"high\")`) and `torch.backends.cudnn.allow_tf32 = "
                   "True`, or mixed precision with `torch.autocast(\"cuda\", dtype=torch.bfloat16)`; in JAX "
                   "`jax.default_matmul_precision(\"tensorfloat32\")`, in TensorFlow "
                   "`tf.keras.mixed_precision.set_global_policy(\"mixed_bfloat16\")`")
MEMORY_BOUND_FIX = ("The kernels wait on GPU memory bandwidth: fuse elementwise ops (`torch.compile`), use "
                    "bf16/fp16 activations (half the bytes), larger batches for better reuse, FlashAttention-style "
                    "kernels; for LLM decoding this is expected: batch more requests")


class _Unit:
    """A GPU or one MIG instance of it, with its GPM figures and the processes on it."""

    def __init__(self, name: str, gpu: GpuSample, gpm: GpmMetrics, util: float | None, util_source: str,
                 processes: tuple[GpuProcess, ...]):
        self.name, self.gpu, self.gpm, self.util, self.util_source = name, gpu, gpm, util, util_source
        self.processes = processes

    def containers(self) -> list[str]:
        return sorted({p.container_name or (p.container_id or "")[:12] for p in self.processes if p.container_id})

    def owner(self) -> str | None:
        """The one container whose processes are all that NVML lists here, else None."""
        names = self.containers()
        if len(names) == 1 and all(p.container_id for p in self.processes):
            return names[0]
        return None


def _units(snapshot: Snapshot) -> list[_Unit]:
    out = []
    for g in snapshot.gpus:
        if g.gpm is not None:
            out.append(_Unit(f"GPU {g.index}", g, g.gpm, g.utilization_percent,
                             "NVML nvmlDeviceGetUtilizationRates", g.processes))
        for m in g.mig_devices:
            if m.gpm is not None:
                # NVML has no utilisation per MIG instance: the engine-active share stands in for it.
                out.append(_Unit(f"GPU {g.index} MIG instance {m.gpu_instance_id} ({m.uuid})", g, m.gpm,
                                 m.gpm.graphics_active_percent, GPM_SOURCE + " graphics engine active",
                                 g.mig_processes(m)))
    return out


def _whose(u: _Unit) -> tuple[str | None, str]:
    """(the finding's container, how the title says whose figures these are)."""
    owner = u.owner()
    if owner is not None:
        return owner, f"{u.name} (used by {owner} alone: these are its figures)"
    names = u.containers()
    if names:
        return None, f"{u.name} (shared by {', '.join(names)}: figures for the whole GPU)"
    return None, u.name


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}%"


@host_check("perf.gpu_efficiency")
def check_gpu_efficiency(ctx: CheckContext) -> list[Finding]:
    """perf.launch_bound, perf.tensor_cores_idle, perf.memory_bound from each GPU's (or MIG instance's) GPM."""
    t = ctx.thresholds
    out: list[Finding] = []
    for u in _units(ctx.snapshot):
        g = u.gpm
        container, whose = _whose(u)
        span = f"over {g.interval_s:.1f} s"
        memory_bound = (g.dram_active_percent is not None and g.sm_active_percent is not None
                        and g.dram_active_percent >= t.memory_bound_dram_active_percent
                        and g.sm_active_percent < t.memory_bound_sm_active_percent)
        if memory_bound:
            out.append(Finding(
                "perf.memory_bound", INFO, container,
                f"{whose}: memory-bound: DRAM bandwidth {_pct(g.dram_active_percent)} busy while only "
                f"{_pct(g.sm_active_percent)} of SMs are active",
                (evidence(f"{u.name} DRAM active {_pct(g.dram_active_percent)} {span} >= "
                          f"{t.named('memory_bound_dram_active_percent')}", GPM_SOURCE),
                 evidence(f"{u.name} SM active {_pct(g.sm_active_percent)} < "
                          f"{t.named('memory_bound_sm_active_percent')}", GPM_SOURCE)),
                MEMORY_BOUND_FIX))
        # High DRAM use explains low SM activity better than launch overhead: one finding, not two.
        if (not memory_bound and u.util is not None and g.sm_active_percent is not None
                and u.util >= t.launch_bound_util_percent and g.sm_active_percent < t.launch_bound_sm_active_percent):
            out.append(Finding(
                "perf.launch_bound", WARNING, container,
                f"{whose}: launch-bound: utilisation {_pct(u.util)} but only {_pct(g.sm_active_percent)} of SMs "
                "active (small kernels or CPU-side launch overhead)",
                (evidence(f"{u.name} utilisation {_pct(u.util)} >= {t.named('launch_bound_util_percent')}",
                          u.util_source),
                 evidence(f"{u.name} SM active {_pct(g.sm_active_percent)} {span} < "
                          f"{t.named('launch_bound_sm_active_percent')}", GPM_SOURCE)),
                LAUNCH_BOUND_FIX))
        if (u.containers() and g.tensor_active_percent is not None and u.util is not None
                and u.util >= t.gpu_busy_util_percent and g.tensor_active_percent < t.tensor_idle_percent):
            pipes = ", ".join(f"{name} {_pct(v)}" for name, v in (("FP32", g.fp32_active_percent),
                                                                  ("FP16", g.fp16_active_percent),
                                                                  ("FP64", g.fp64_active_percent)) if v is not None)
            ev = [evidence(f"{u.name} utilisation {_pct(u.util)} >= {t.named('gpu_busy_util_percent')}, "
                           f"running {', '.join(u.containers())}", u.util_source),
                  evidence(f"{u.name} tensor pipes active {_pct(g.tensor_active_percent)} {span} < "
                           f"{t.named('tensor_idle_percent')}", GPM_SOURCE)]
            if pipes:
                ev.append(evidence(f"{u.name} non-tensor pipes: {pipes}", GPM_SOURCE))
            out.append(Finding(
                "perf.tensor_cores_idle", WARNING, container,
                f"{whose}: busy, but the tensor cores are idle ({_pct(g.tensor_active_percent)}): FP32 matmuls "
                "without TF32 or mixed precision?",
                tuple(ev), TENSOR_IDLE_FIX))
    return out
