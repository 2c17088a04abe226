"""GPU health checks: clocks held down, persistence, Xid errors, ECC, the PCIe link, memory nobody holds."""

from __future__ import annotations


from mltop.probes.model import GpuSample
from mltop.probes.units import local_time

from ..findings import CRITICAL, INFO, WARNING, Finding, evidence
from .base import CheckContext, CheckSkipped, _bytes, host_check


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




# --------------------------------------------------------------------------- Xid

# What the common Xids mean for an ML job and what to do, after NVIDIA's Xid catalog
# (https://docs.nvidia.com/deploy/xid-errors/) as summarised in the knowledge base (fleet-and-gpu-health.md).
# "application": the job crashed, the GPU is fine (NVIDIA's k8s-device-plugin treats 13, 31, 43, 45, 68 and
# 109 so); "hardware": the GPU or its link needs a reset or service.
XID_CATALOG: dict[int, tuple[str, str, str]] = {  # xid -> (kind, meaning, what to do)
    13: ("application", "graphics engine exception (illegal address or instruction in a kernel)",
         "Debug the job (run it under compute-sanitizer); the same Xid across different jobs points at hardware"),
    31: ("application", "GPU memory page fault (an illegal memory access by the job)",
         "Debug the job's illegal memory access (CUDA_LAUNCH_BLOCKING=1, compute-sanitizer)"),
    43: ("application", "GPU stopped processing (a user application fault)",
         "Restart the job; the GPU itself stays healthy"),
    45: ("application", "preemptive cleanup after earlier errors (a process was killed or faulted)",
         "Look at the Xid logged before it; restart the job"),
    48: ("hardware", "double-bit ECC error",
         "Drain the GPU and reset it (`sudo nvidia-smi -r -i N`) or reboot; recurring: hardware service"),
    63: ("hardware", "ECC page retirement or row remap recorded",
         "Reset the GPU when it is free (`sudo nvidia-smi -r -i N`) so the retirement takes effect"),
    64: ("hardware", "ECC page retirement or row remap recording failed",
         "Drain the GPU and have it serviced"),
    68: ("application", "video processor exception", "Restart the job"),
    74: ("hardware", "NVLink error",
         "Check NVLink/NVSwitch (`nvidia-smi nvlink -s`); reset the GPU; recurring: service"),
    79: ("hardware", "GPU has fallen off the bus",
         "Reset the GPU or reboot; check power, PCIe seating and thermals; recurring: service"),
    92: ("hardware", "high single-bit ECC error rate", "Watch the ECC counters and plan service"),
    94: ("hardware", "contained ECC error (the affected application was killed)",
         "Restart the job; reset the GPU when it is free"),
    95: ("hardware", "uncontained ECC error (every application on the GPU is affected)",
         "Drain the GPU and reset it (`sudo nvidia-smi -r -i N`)"),
    109: ("application", "context switch timeout", "Restart the job"),
    119: ("hardware", "GSP RPC timeout", "Reset the GPU or reboot; update the driver"),
    120: ("hardware", "GSP error", "Reset the GPU or reboot; update the driver"),
    154: ("hardware", "recovery action changed", "Do what the driver asks: reset the GPU or reboot"),
}
_XID_CRITICAL = {48, 64, 79, 95, 119, 120}  # the GPU cannot be trusted until reset or serviced


def _xid_severity(xid: int, recent: bool) -> str:
    if not recent:
        return INFO
    kind = XID_CATALOG.get(xid, ("unknown", "", ""))[0]
    if kind == "hardware" and xid in _XID_CRITICAL:
        return CRITICAL
    return WARNING


@host_check("gpu.xid")
def check_xid(ctx: CheckContext) -> list[Finding]:
    """gpu.xid: Xid errors on a GPU (NVML events, kernel log), what they mean, and who was on that GPU."""
    t = ctx.thresholds
    now = ctx.snapshot.taken_at
    out = []
    for g in ctx.snapshot.gpus:
        if not g.xid_events:
            continue
        by_code: dict[int, list] = {}
        for e in g.xid_events:
            by_code.setdefault(e.xid, []).append(e)
        for xid, events in sorted(by_code.items()):
            last = max(events, key=lambda e: e.time)
            age = now - last.time
            recent = age <= t.xid_recent_s
            kind, meaning, action = XID_CATALOG.get(
                xid, ("unknown", "not in mltop's table", "Look the code up in NVIDIA's Xid catalog"))
            ev = [evidence(f"GPU {g.index} ({g.name}, {g.uuid}, PCI {g.pci_bus_id}) Xid {xid} x{len(events)}, "
                           f"last {_ago(age)} at {_when(last.time)}", last.source)]
            ev += [evidence(f"kernel log {e.text!r}", e.source) for e in events[-2:] if e.text]
            if not recent:
                ev.append(evidence(f"older than {t.named('xid_recent_s')}", "mltop doctor"))
            ev.append(evidence(f"on this GPU now: {_gpu_users(g)}", "NVML processes joined to containers"))
            who = "the job crashed, the GPU is fine" if kind == "application" else \
                "the GPU needs attention" if kind == "hardware" else "unknown Xid"
            users = _gpu_container_names(g)
            out.append(Finding(
                "gpu.xid", _xid_severity(xid, recent), None,
                f"GPU {g.index}: Xid {xid}, {meaning} ({who})" + (f"; affects {', '.join(users)}" if users else ""),
                tuple(ev), action.replace(" N`", f" {g.index}`") + (
                    f" (`sudo nvidia-smi -r -i {g.index}` resets GPU {g.index} once no process uses it)"
                    if kind == "hardware" and " -r -i" not in action else "")
                + _pod_steps(ctx, g, hardware=kind != "application"), gpu=g.uuid,
            ))
    return out


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _when(t: float) -> str:
    return local_time(t)


def _gpu_container_names(g: GpuSample) -> list[str]:
    return sorted({p.container_name for p in g.processes if p.container_name})


def _pod_steps(ctx: CheckContext, g: GpuSample, hardware: bool) -> str:
    """What to do with the pods on GPU `g` (empty when none): a restart is a new pod from its controller, and
    while the GPU needs a reset the node is cordoned first so the scheduler does not put the new pods back on it."""
    pods = sorted({(p.kubernetes.namespace, p.kubernetes.pod) for p in g.processes if p.kubernetes is not None})
    if not pods:
        return ""
    deletes = " and ".join(f"`kubectl -n {ns} delete pod {pod}`" for ns, pod in pods)
    if hardware:
        return (f"; for the pods on it: keep new pods off this node first (`kubectl cordon "
                f"{ctx.snapshot.host.hostname}`), then {deletes} (their controllers start them again elsewhere); "
                f"`kubectl uncordon {ctx.snapshot.host.hostname}` once the GPU is reset")
    return f"; restart the pods on it: {deletes} (their controllers start them again)"


# --------------------------------------------------------------------------- ECC


@host_check("gpu.ecc")
def check_ecc(ctx: CheckContext) -> list[Finding]:
    """gpu.ecc: uncorrectable ECC errors, a page retirement or row remap waiting for a reset, a failed remap."""
    out = []
    for g in ctx.snapshot.gpus:
        ev = []
        severity = None
        fix = []
        if g.remapped_rows_failed:
            ev.append(evidence(f"row remapping failed (uncorrectable rows {g.remapped_rows_uncorrectable})",
                               "NVML nvmlDeviceGetRemappedRows"))
            severity = CRITICAL
            fix.append("the GPU needs service: drain it and open a hardware ticket")
        if g.ecc_volatile_uncorrected:
            ev.append(evidence(f"{g.ecc_volatile_uncorrected} uncorrectable ECC error(s) since the driver loaded "
                               f"(lifetime {g.ecc_aggregate_uncorrected})", "NVML nvmlDeviceGetTotalEccErrors"))
            severity = CRITICAL
            fix.append("jobs on it may have computed on corrupt memory: restart them after a GPU reset "
                       f"(`sudo nvidia-smi -r -i {g.index}`)")
        if g.remapped_rows_pending:
            ev.append(evidence("a row remap is pending", "NVML nvmlDeviceGetRemappedRows"))
            severity = severity or WARNING
            fix.append(f"reset the GPU when it is free (`sudo nvidia-smi -r -i {g.index}`) so the remap takes effect")
        if g.retired_pages_pending:
            ev.append(evidence("a page retirement is pending", "NVML nvmlDeviceGetRetiredPagesPendingStatus"))
            severity = severity or WARNING
            fix.append(f"reset the GPU when it is free (`sudo nvidia-smi -r -i {g.index}`) so the retirement "
                       "takes effect")
        if severity is None:
            continue  # corrected errors alone are ECC doing its job
        if g.ecc_volatile_corrected:
            ev.append(evidence(f"{g.ecc_volatile_corrected} corrected ECC error(s) since the driver loaded",
                               "NVML nvmlDeviceGetTotalEccErrors"))
        ev.append(evidence(f"on this GPU now: {_gpu_users(g)}", "NVML processes joined to containers"))
        users = _gpu_container_names(g)
        out.append(Finding(
            "gpu.ecc", severity, None,
            f"GPU {g.index} has memory errors" + (f"; affects {', '.join(users)}" if users else ""),
            tuple(ev), "; ".join(dict.fromkeys(fix)).capitalize() + _pod_steps(ctx, g, hardware=True), gpu=g.uuid,
        ))
    return out


# --------------------------------------------------------------------------- PCIe


@host_check("gpu.pcie_degraded")
def check_pcie(ctx: CheckContext) -> list[Finding]:
    """gpu.pcie_degraded: the PCIe link runs below its maximum generation or width while the GPU is busy.

    An idle GPU lowers its link generation to save power, so only a busy one counts."""
    t = ctx.thresholds
    out = []
    for g in ctx.snapshot.gpus:
        gen_low = g.pcie_generation is not None and g.pcie_generation_max is not None and \
            g.pcie_generation < g.pcie_generation_max
        width_low = g.pcie_width is not None and g.pcie_width_max is not None and g.pcie_width < g.pcie_width_max
        if not (gen_low or width_low):
            continue
        busy = g.utilization_percent is not None and g.utilization_percent >= t.pcie_busy_util_percent
        if not busy:
            continue
        ev = [evidence(f"GPU {g.index} ({g.uuid}, PCI {g.pci_bus_id}) link Gen{g.pcie_generation} x{g.pcie_width}, "
                       f"capable of Gen{g.pcie_generation_max} x{g.pcie_width_max}",
                       "NVML nvmlDeviceGetCurrPcieLink*/nvmlDeviceGetMaxPcieLink*"),
              evidence(f"utilisation {g.utilization_percent:g}% >= {t.named('pcie_busy_util_percent')}",
                       "NVML nvmlDeviceGetUtilizationRates")]
        if g.pcie_rx_bytes_per_s is not None and g.pcie_tx_bytes_per_s is not None:
            ev.append(evidence(f"PCIe rx {g.pcie_rx_bytes_per_s / 1e6:.0f} MB/s, tx {g.pcie_tx_bytes_per_s / 1e6:.0f} "
                               "MB/s", "NVML nvmlDeviceGetPcieThroughput"))
        ev.append(evidence(f"on this GPU now: {_gpu_users(g)}", "NVML processes joined to containers"))
        users = _gpu_container_names(g)
        what = " and ".join(x for x in (f"Gen{g.pcie_generation} of Gen{g.pcie_generation_max}" if gen_low else "",
                                         f"x{g.pcie_width} of x{g.pcie_width_max}" if width_low else "") if x)
        out.append(Finding(
            "gpu.pcie_degraded", WARNING, None,
            f"GPU {g.index}'s PCIe link trained down ({what}) while busy"
            + (f"; slows {', '.join(users)}" if users else ""),
            tuple(ev),
            "Reseat the GPU or its riser, check the slot's BIOS link settings; "
            f"`sudo lspci -vv -s {g.pci_bus_id or '<bus id>'}` shows LnkSta against LnkCap",
        ))
    return out


# --------------------------------------------------------------------------- orphaned memory


@host_check("gpu.memory_orphaned")
def check_orphaned_memory(ctx: CheckContext) -> list[Finding]:
    """gpu.memory_orphaned: GPU memory no process NVML names holds, or held by a process of a stopped container."""
    t = ctx.thresholds
    snap = ctx.snapshot
    if not snap.gpus:
        return []
    if snap.host.limitations:
        raise CheckSkipped("mltop cannot see every process here (" + snap.host.limitations[0][:80] + "…)")
    by_id = {c.id: c for c in snap.containers}
    out = []
    for g in snap.gpus:
        if g.memory_used_bytes is None or "processes" in g.unavailable:
            continue
        ev = []
        stopped = [(p, by_id[p.container_id]) for p in g.processes
                   if p.container_id in by_id and not by_id[p.container_id].running]
        for p, c in stopped:
            ev.append(evidence(f"host pid {p.host_pid} of container {c.name} (status {c.status}) holds "
                               f"{_bytes(p.gpu_memory_bytes) if p.gpu_memory_bytes is not None else 'memory'}",
                               "NVML running processes joined to containers"))
        known = [p.gpu_memory_bytes for p in g.processes]
        unnamed = None
        if all(m is not None for m in known):
            unnamed = g.memory_used_bytes - sum(known)  # type: ignore[arg-type]
            if unnamed >= t.orphaned_memory_bytes:
                ev.append(evidence(f"GPU {g.index} ({g.uuid}) memory used {_bytes(g.memory_used_bytes)}, processes "
                                   f"NVML lists hold {_bytes(sum(known))} ({len(known)} process(es)): "
                                   f"{_bytes(unnamed)} held by none", "NVML nvmlDeviceGetMemoryInfo / running "
                                   "processes"))
                ev.append(evidence(f"{unnamed} >= {t.named('orphaned_memory_bytes')}", "mltop doctor"))
        if not ev:
            continue
        out.append(Finding(
            "gpu.memory_orphaned", WARNING, None,
            f"GPU {g.index} holds memory no running job owns" + (
                f" (stopped container {', '.join(sorted({c.name for _, c in stopped}))})" if stopped else ""),
            tuple(ev),
            "Find the holder with `sudo fuser -v /dev/nvidia*` or `sudo lsof /dev/nvidia*` (a zombie or a process "
            "in another PID namespace) and end it; if none remains, reset the GPU "
            f"(`sudo nvidia-smi -r -i {g.index}`)",
        ))
    return out
