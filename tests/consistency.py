"""The rule "evidence never contradicts the snapshot", written down: what each finding code claims, checked
against the very snapshot it was judged from. A new code must declare its claim here, or the tests fail."""

from __future__ import annotations

import re
from typing import Callable

from mltop.diagnostics.checks import Thresholds
from mltop.diagnostics.findings import Finding
from mltop.probes.model import ContainerSample, GpuSample, Snapshot

T = Thresholds()
Claim = Callable[[Snapshot, Finding, "ContainerSample | None"], "str | None"]


def _gpu(s: Snapshot, f: Finding) -> GpuSample | None:
    m = re.search(r"\bGPU (\d+)\b", f.title)
    return next((g for g in s.gpus if m and g.index == int(m.group(1))), None)


def _named_on_gpu(s: Snapshot, f: Finding) -> str | None:
    """Containers a GPU finding says it affects must be on that GPU."""
    g = _gpu(s, f)
    if g is None:
        return "names a GPU the snapshot does not hold"
    m = re.search(r"(?:affects|slows) (.+)$", f.title)
    if m:
        on_gpu = {p.container_name for p in g.processes}
        stray = [n for n in m.group(1).split(", ") if n not in on_gpu]
        if stray:
            return f"says it affects {stray}, who are not on GPU {g.index}"
    return None


def _not_visible(s: Snapshot, f: Finding, c: ContainerSample | None) -> str | None:
    assert c is not None
    if "no GPU assigned" in f.title and s.has_gpus(c):
        return f"says no GPU is assigned, but the snapshot shows {s.gpu_access(c) or 'NVML use'}"
    if "hides every GPU" in f.title and s.uses_gpu(c):
        return "says every GPU is hidden, but NVML lists its processes"
    if "asks for GPUs" in f.title and not c.config.requests_gpus:
        return "says it asks for GPUs, but it has no request"
    return None


def _idle_reserved(s: Snapshot, f: Finding, c: ContainerSample | None) -> str | None:
    assert c is not None
    if not s.uses_gpu(c):
        return "says it holds GPU memory, but NVML lists none of its processes"
    idle = [g for g in s.gpus if g.index in {u.index for u in c.gpus}
            and g.utilization_percent is not None and g.utilization_percent <= T.gpu_idle_util_percent]
    return None if idle else "says its GPU is idle, but none of its GPUs is"


def _xid(s: Snapshot, f: Finding, c) -> str | None:
    g = _gpu(s, f)
    code = re.search(r"Xid (\d+)", f.title)
    if g is None or code is None or int(code.group(1)) not in {e.xid for e in g.xid_events}:
        return "names an Xid the GPU's events do not hold"
    return _named_on_gpu(s, f)


def _ecc(s: Snapshot, f: Finding, c) -> str | None:
    g = _gpu(s, f)
    if g is None or not (g.ecc_volatile_uncorrected or g.remapped_rows_pending or g.remapped_rows_failed
                         or g.retired_pages_pending):
        return "reports memory errors the GPU's counters do not show"
    return _named_on_gpu(s, f)


def _pcie(s: Snapshot, f: Finding, c) -> str | None:
    g = _gpu(s, f)
    if g is None or not ((g.pcie_generation or 0) < (g.pcie_generation_max or 0)
                         or (g.pcie_width or 0) < (g.pcie_width_max or 0)):
        return "says the link trained down, but it runs at its maximum"
    if (g.utilization_percent or 0) < T.pcie_busy_util_percent:
        return "says the GPU is busy, but it is idle"
    return _named_on_gpu(s, f)


def _orphaned(s: Snapshot, f: Finding, c) -> str | None:
    g = _gpu(s, f)
    if g is None:
        return "names a GPU the snapshot does not hold"
    listed = sum(p.gpu_memory_bytes or 0 for p in g.processes)
    stopped = {x.id for x in s.containers if not x.running}
    if (g.memory_used_bytes or 0) - listed < T.orphaned_memory_bytes and \
            not any(p.container_id in stopped for p in g.processes):
        return "says memory is orphaned, but listed live processes hold it"
    return None


def _needs(predicate: Callable[[Snapshot, ContainerSample], bool], what: str) -> Claim:
    def claim(s: Snapshot, f: Finding, c: ContainerSample | None) -> str | None:
        assert c is not None, f"{f.code} is a container finding"
        return None if predicate(s, c) else f"implies {what}, which the snapshot contradicts"
    return claim


def _host(predicate: Callable[[Snapshot], bool], what: str) -> Claim:
    return lambda s, f, c: None if predicate(s) else f"implies {what}, which the snapshot contradicts"


def _no_claim_on_the_snapshot(s, f, c) -> str | None:
    """The finding rests on logs, image metadata or a timed read: nothing in the snapshot can deny it."""
    return None


def _nvlink_down(s: Snapshot, f: Finding, c) -> str | None:
    g = _gpu(s, f)
    if g is None or not any(not link.active for link in g.nvlinks):
        return "says an NVLink is down, but every link of that GPU is up (or it has none)"
    return _named_on_gpu(s, f)


def _nvlink_errors(s: Snapshot, f: Finding, c) -> str | None:
    g = _gpu(s, f)
    if g is None or g.nvlink_errors is None or not g.nvlink_errors.rises:
        return "says NVLink error counters rise, but none rose on that GPU"
    return _named_on_gpu(s, f)


def _on_fabric(s: Snapshot) -> bool:
    return any(g.fabric is not None and g.fabric.state != "not_supported" for g in s.gpus)


CLAIMS: dict[str, Claim] = {
    "nvlink.down": _nvlink_down,
    "nvlink.errors": _nvlink_errors,
    "fabric.not_ready": lambda s, f, c: None if _on_fabric(s) else "speaks of an NVSwitch fabric, but no GPU is on one",
    "nvswitch.sxid": _host(lambda s: bool(s.host.nvml.sxid_events), "SXids in the kernel log"),
    "engine.unreachable": _host(lambda s: not s.host.engine.ok, "the engine is down"),
    "driver.nvml_mismatch": _host(lambda s: s.host.nvml.status == "version_mismatch", "a version mismatch"),
    "driver.not_loaded": _host(lambda s: s.host.nvml.status in ("driver_not_loaded", "library_not_found"),
                               "no driver"),
    "gpu.lost": _host(lambda s: s.host.nvml.status == "gpu_lost", "a lost GPU"),
    "driver.nvml_timeout": _host(lambda s: s.host.nvml.status == "timeout", "an NVML timeout"),
    "gpu.throttled": lambda s, f, c: None if (g := _gpu(s, f)) is not None and g.throttle_reasons else
    "says a GPU is slowed, but it reports no reason",
    "gpu.persistence_off": _host(lambda s: any(g.persistence_mode is False for g in s.gpus), "persistence off"),
    "gpu.dev_char_missing": _host(lambda s: s.host.cgroup_driver == "systemd", "the systemd cgroup driver"),
    "gpu.xid": _xid,
    "gpu.ecc": _ecc,
    "gpu.pcie_degraded": _pcie,
    "gpu.memory_orphaned": _orphaned,
    "gpu.not_visible": _not_visible,
    "gpu.idle_reserved": _idle_reserved,
    "toolkit.missing": _needs(lambda s, c: bool(s.gpu_access(c) or c.config.error), "a GPU request"),
    "toolkit.not_registered": _needs(lambda s, c: bool(s.gpu_access(c) or c.config.error), "a GPU request"),
    "nvml.lost_in_container": _needs(lambda s, c: bool(s.gpu_access(c)), "that it had GPUs"),
    "nccl.memlock": _needs(lambda s, c: s.has_gpus(c) and c.running, "a running container with GPUs"),
    "driver.cuda_too_new": _no_claim_on_the_snapshot,
    "oom.killed": _no_claim_on_the_snapshot,
    "oom.near_limit": _needs(lambda s, c: bool(c.memory_limit_bytes or c.config.memory_limit_bytes),
                             "a memory limit"),
    "oom.cuda": _no_claim_on_the_snapshot,
    "shm.too_small": _needs(lambda s, c: (c.config.ipc_mode or "private") != "host", "a private /dev/shm"),
    "io.slow": _no_claim_on_the_snapshot,
    "io.throttle_set": _needs(lambda s, c: bool(c.config.blkio_throttles) or c.running, "a read throttle"),
    "io.read_test": _no_claim_on_the_snapshot,
    "container.restart_loop": _needs(lambda s, c: c.config.restart_count >= T.restart_loop_count
                                     or c.status == "restarting", "restarts"),
    "container.crashed": _needs(lambda s, c: c.status == "exited", "an exited container"),
    "perf.input_bound": _needs(lambda s, c: c.running and s.uses_gpu(c), "a running container on a GPU"),
    "pids.near_max": _needs(lambda s, c: c.running, "a running container"),
    "cpu.throttled": _needs(lambda s, c: c.running, "a running container"),
}


def contradictions(snapshot: Snapshot, findings) -> list[str]:
    """Every finding that states something `snapshot` shows to be false, in words; empty when none does."""
    by_name = {c.name: c for c in snapshot.containers}
    out = []
    for f in findings:
        c = by_name.get(f.container) if f.container else None
        if f.container and c is None:
            out.append(f"{f.code}: names container {f.container!r}, which the snapshot does not hold")
            continue
        claim = CLAIMS.get(f.code)
        if claim is None:
            out.append(f"{f.code}: no claim declared in tests/consistency.py")
            continue
        problem = claim(snapshot, f, c)
        if problem:
            out.append(f"{f.code} for {f.container or 'the host'}: {problem} ({f.title!r})")
    return out
