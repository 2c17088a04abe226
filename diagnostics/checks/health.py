"""GPU health checks: clocks held down, persistence, Xid errors, ECC, the PCIe link, memory nobody holds."""

from __future__ import annotations

from mltop.probes.model import GpuSample

from ..findings import INFO, WARNING, Finding, evidence
from .base import CheckContext, CheckSkipped, host_check


BAD_CLOCK_REASONS = ("hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")


def _gpu_users(gpu: GpuSample) -> str:
    names = sorted({p.container_name or f"host pid {p.host_pid}" for p in gpu.processes})
    return ", ".join(names) if names else "none"


@host_check("gpu.health")
def check_gpu_health(ctx: CheckContext) -> list[Finding]:
    """gpu.throttled (bad clock-event reasons) and gpu.persistence_off, per host."""
    nvml = ctx.snapshot.host.nvml
    if nvml.status == "disabled":
        raise CheckSkipped("NVML disabled (--no-nvml)")
    if not nvml.ok and not ctx.snapshot.gpus:
        raise CheckSkipped(f"NVML unavailable ({nvml.status})")
    out = []
    for g in ctx.snapshot.gpus:
        bad = [r for r in g.throttle_reasons if r in BAD_CLOCK_REASONS]
        if bad:
            ev = [
                evidence(f"GPU {g.index} ({g.name}, {g.uuid}) clock event reasons {', '.join(g.throttle_reasons)}",
                         "NVML nvmlDeviceGetCurrentClocksEventReasons"),
                evidence(f"temperature {g.temperature_c} C, power {g.power_w} W of {g.power_limit_w} W",
                         "NVML nvmlDeviceGetTemperature / nvmlDeviceGetPowerUsage"),
                evidence(f"used by {_gpu_users(g)}", "NVML processes joined to containers"),
            ]
            thermal = any("thermal" in r for r in bad)
            out.append(Finding(
                "gpu.throttled", WARNING, None,
                f"GPU {g.index} is slowed down by {'heat' if thermal else 'hardware/power'} ({', '.join(bad)})",
                tuple(ev),
                "Check cooling and power delivery (fans, airflow, PSU, `nvidia-smi -q -d PERFORMANCE`); "
                "if the power cap is deliberate, ignore",
            ))
    off = [g for g in ctx.snapshot.gpus if g.persistence_mode is False]
    if off:
        out.append(Finding(
            "gpu.persistence_off", INFO, None,
            f"Persistence mode is off on {len(off)} GPU(s): every CUDA start-up re-initialises the driver",
            tuple(evidence(f"GPU {g.index} ({g.uuid}) persistence mode 0", "NVML nvmlDeviceGetPersistenceMode")
                  for g in off),
            "`sudo systemctl enable --now nvidia-persistenced`",
        ))
    return out


