"""What the fleet view shows, without Textual: the worst-first order of hosts, their findings grouped by
code, and the `mltop fleet --json` document. The table and `--json` both read these, so they agree."""

from __future__ import annotations

from typing import Any

from mltop.diagnostics.findings import SEVERITIES, SEVERITY_RANK
from mltop.probes.fleet import FleetFinding, FleetHost, FleetSnapshot, GpuConsumer
from mltop.probes.units import iso_utc


def worst_finding(host: FleetHost) -> FleetFinding | None:
    """The host's most severe finding (a host finding before a container's, then by code)."""
    if not host.findings:
        return None
    return max(host.findings, key=lambda f: (SEVERITY_RANK.get(f.severity, -1), f.container == "", f.code))


def worst_first(host: FleetHost) -> tuple:
    """Sort key: hosts whose agent is down first, then by how many critical findings, then warnings, then
    info, then by name."""
    counts = severity_counts(host)
    return (host.up, *(-counts[s] for s in SEVERITIES), host.hostname, host.instance)


def sorted_hosts(snapshot: FleetSnapshot) -> list[FleetHost]:
    return sorted(snapshot.hosts, key=worst_first)


def findings_by_code(snapshot: FleetSnapshot) -> list[tuple[str, str, list[FleetFinding]]]:
    """[(code, worst severity, findings)], most severe code first, then the codes on most hosts."""
    groups: dict[str, list[FleetFinding]] = {}
    for f in snapshot.findings:
        groups.setdefault(f.code, []).append(f)
    out = []
    for code, items in groups.items():
        worst = max(items, key=lambda f: SEVERITY_RANK.get(f.severity, -1)).severity
        items.sort(key=lambda f: (-SEVERITY_RANK.get(f.severity, -1), f.hostname, f.container))
        out.append((code, worst, items))
    out.sort(key=lambda g: (-SEVERITY_RANK.get(g[1], -1), -len({(f.job, f.instance) for f in g[2]}), g[0]))
    return out


def severity_counts(host: FleetHost) -> dict[str, int]:
    """{critical, warning, info} counts: from mltop_findings when the agent exposes it, else its findings."""
    if host.findings_by_severity:
        return {s: int(host.findings_by_severity.get(s, 0)) for s in SEVERITIES}
    return {s: sum(1 for f in host.findings if f.severity == s) for s in SEVERITIES}


def _consumer(c: GpuConsumer) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "host": c.hostname, "instance": c.instance, "container": c.container, "container_id": c.container_id,
        "gpu_memory_bytes": c.gpu_memory_bytes, "sm_percent": c.sm_percent, "gpus": c.gpus,
    }
    if c.namespace or c.pod:
        doc["kubernetes"] = {"namespace": c.namespace, "pod": c.pod}
    return doc


def fleet_to_json(snapshot: FleetSnapshot) -> dict[str, Any]:
    """The `--json` document: every host (worst first) with its GPUs, GPU-using containers and findings."""
    by_host: dict[tuple[str, str], list[GpuConsumer]] = {}
    for c in snapshot.consumers:
        by_host.setdefault((c.job, c.instance), []).append(c)
    hosts = []
    for h in sorted_hosts(snapshot):
        worst = worst_finding(h)
        hosts.append({
            "host": h.hostname, "instance": h.instance, "job": h.job,
            "agent": "up" if h.up else "down",
            "last_sweep": iso_utc(h.last_sweep),
            "last_sweep_age_s": round(snapshot.taken_at - h.last_sweep, 1) if h.last_sweep is not None else None,
            "gpu_count": len(h.gpus),
            "gpu_utilization_mean_percent": h.gpu_utilization_mean,
            "sm_active_mean": h.sm_active_mean,
            "gpu_memory_used_bytes": h.gpu_memory_used_bytes,
            "gpu_memory_total_bytes": h.gpu_memory_total_bytes,
            "gpus": [{"index": g.index, "uuid": g.uuid, "model": g.model,
                      "utilization_percent": g.utilization_percent, "sm_active": g.sm_active,
                      "memory_used_bytes": g.memory_used_bytes, "memory_total_bytes": g.memory_total_bytes}
                     for g in h.gpus],
            "containers_running": h.containers_running,
            "gpu_containers": [_consumer(c) for c in by_host.get(h.key, [])],
            "findings_by_severity": severity_counts(h),
            "worst_finding": worst.code if worst else None,
            "findings": [{"code": f.code, "severity": f.severity, "container": f.container or None}
                         for f in sorted(h.findings, key=lambda f: (-SEVERITY_RANK.get(f.severity, -1), f.code))],
        })
    return {
        "prometheus": snapshot.prometheus,
        "taken_at": iso_utc(snapshot.taken_at),
        "hosts_up": snapshot.hosts_up,
        "hosts_down": snapshot.hosts_down,
        "errors": list(snapshot.errors),
        "hosts": hosts,
        "top_gpu_consumers": [_consumer(c) for c in snapshot.consumers],
        "findings_by_code": {code: [{"host": f.hostname, "instance": f.instance, "severity": f.severity,
                                     "container": f.container or None} for f in items]
                             for code, _, items in findings_by_code(snapshot)},
    }
