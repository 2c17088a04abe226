"""Performance checks: CPU throttling, GPUs held while idle, input-bound training."""

from __future__ import annotations

from mltop.probes.model import ContainerSample

from ..findings import INFO, WARNING, Finding, evidence
from ..workload import INPUT_CPU, INPUT_IO, classify
from .base import CheckContext, _bytes, _cfg_source, by_runtime, container_check, pod_resources_fix


@container_check("cpu.throttled")
def check_cpu_throttle(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """cpu.throttled: CFS throttling in a large share of recent periods (cpu.stat nr_throttled rising)."""
    if not c.running or c.cpu_throttled_periods is None:
        return []
    t = ctx.thresholds
    facts = ctx.facts(c)
    stat = facts.cpu_stat
    prev = ctx.previous_of(c)
    interval_s = c.interval_s or ctx.snapshot.interval_s  # between the two readings of its counters
    if prev is not None and prev.cpu_throttled_periods is not None and interval_s:
        # nr_periods is not in the snapshot: count the periods elapsed between the two readings.
        period_s = (c.config.cpu_period or 100_000) / 1e6
        throttled = c.cpu_throttled_periods - prev.cpu_throttled_periods
        # an estimate: the kernel counted at least the periods it throttled (it said "23 of ~23 = 101%")
        periods = max(interval_s / period_s, throttled)
        basis = f"{throttled} of ~{periods:.0f} periods in the last {interval_s:.1f} s"
    elif stat.get("nr_periods"):
        periods = stat["nr_periods"]
        throttled = stat.get("nr_throttled", 0)
        basis = f"{throttled} of {periods} periods since the container started"
    else:
        return []
    ratio = throttled / periods if periods else 0.0
    if throttled <= 0 or ratio < t.cpu_throttled_ratio:
        return []
    limit = c.cpu_limit_cores
    ev = [evidence(f"nr_throttled {c.cpu_throttled_periods}: {basis} = {ratio:.0%}",
                   facts.cpu_stat_file or "cgroup cpu.stat"),
          evidence(f"{ratio:.2f} >= {t.named('cpu_throttled_ratio')}", "mltop doctor")]
    if limit:
        ev.append(evidence(f"CPU limit {limit:g} cores, using {c.cpu_percent or 0:.0f}% of one core",
                           _cfg_source(c)))
    fix = ("Raise `--cpus` (or remove the quota); match DataLoader workers and `OMP_NUM_THREADS` to the "
           "cores the container has")
    if c.kubernetes is not None:
        more = f"{2 * limit:g}" if limit else "<cores it needs>"
        fix = pod_resources_fix(c, "cpu", more, "or remove the CPU limit (keep `requests.cpu`); match DataLoader "
                                "workers and `OMP_NUM_THREADS` to the cores it has")
    return [Finding("cpu.throttled", WARNING, c.name,
                    f"CPU-throttled in {ratio:.0%} of scheduler periods: the data pipeline may starve the GPU",
                    tuple(ev), fix)]


@container_check("gpu.idle_reserved")
def check_gpu_idle(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """gpu.idle_reserved: the container holds memory on a GPU that is doing nothing."""
    if not c.running or not c.gpus:
        return []
    t = ctx.thresholds
    idle = []
    for use in c.gpus:
        g = ctx.gpu(use.index)
        if g is None or g.utilization_percent is None or not use.memory_bytes:
            continue
        if g.utilization_percent <= t.gpu_idle_util_percent and not use.sm_percent:
            idle.append((g, use))
    if not idle:
        return []
    ev = []
    for g, use in idle:
        ev.append(evidence(f"GPU {g.index} ({g.uuid}) utilisation {g.utilization_percent:g}% <= "
                           f"{t.named('gpu_idle_util_percent')}", "NVML nvmlDeviceGetUtilizationRates"))
        ev.append(evidence(f"{c.name} holds {_bytes(use.memory_bytes)} on it", "NVML per-process memory"))
    return [Finding("gpu.idle_reserved", INFO, c.name,
                    f"Holds memory on {len(idle)} idle GPU(s) (one sample: may be a pause between steps)",
                    tuple(ev),
                    by_runtime(c, f"If the job is finished or stuck, stop it (`docker stop {c.name}`) to free the "
                                  "GPU; check again with `mltop` over a minute",
                               lambda k: f"If the job is finished or stuck, free the GPU: `{k.delete}` (or scale "
                                         "its Deployment/Job down); check again with `mltop` over a minute"))]




_INPUT_FIX = {
    INPUT_CPU: "Give the input pipeline more CPU: raise `--cpus` (or remove the quota), add DataLoader workers "
               "(`num_workers`) up to the cores you have, `pin_memory=True`, move decoding/augmentation to the GPU "
               "(DALI) or preprocess offline",
    INPUT_IO: "Feed the GPU faster: a faster volume (local NVMe), stage shards locally, sharded formats "
              "(WebDataset/TFRecord), more DataLoader workers with `prefetch_factor`, `pin_memory=True`",
}


@container_check("perf.input_bound")
def check_input_bound(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """perf.input_bound: the GPU mostly waits for input (CPU quota or busy loader workers, or stalled reads)."""
    w = classify(c, ctx.snapshot, ctx.workload_thresholds, previous=ctx.previous)
    if w is None or w.kind not in (INPUT_CPU, INPUT_IO):
        return []
    what = "CPU" if w.kind == INPUT_CPU else "reads"
    ev = [evidence(r, "mltop workload classification (one sweep)") for r in w.reasons]
    ev += [evidence(f"GPU {u.index} ({u.uuid}) SM {u.sm_percent if u.sm_percent is not None else '?'}%, "
                    f"{_bytes(u.memory_bytes or 0)} held", "NVML per-process samples") for u in c.gpus]
    fix = _INPUT_FIX[w.kind]
    if c.kubernetes is not None and w.kind == INPUT_CPU:
        limit = c.cpu_limit_cores
        fix = pod_resources_fix(c, "cpu", f"{2 * limit:g}" if limit else "<cores it needs>",
                                "or remove the CPU limit; add DataLoader workers (`num_workers`) up to the cores it "
                                "has, `pin_memory=True`, move decoding/augmentation to the GPU (DALI) or preprocess "
                                "offline")
    return [Finding("perf.input_bound", WARNING, c.name,
                    f"Input-bound ({w.kind}): the GPU waits for the data pipeline's {what}", tuple(ev), fix)]
