"""The report's pods: one entry per pod (namespace, name, UID, QoS class, labels, annotations) with, per
container, its state, restarts and last exit, the GPUs the kubelet allocated to it beside the GPUs its processes
use, the codes of its findings, and its log tail read from the kubelet's log file and scrubbed of its secrets
(its environment from the CRI's verbose ContainerStatus). Then the rows both renderers show of them.

Grouped by pod because that is what an on-call engineer is paged about and acts on (`kubectl -n NS describe pod
POD`): the pod's labels say whose it is, and its containers' restarts, allocations and findings read side by
side. Each container's full section (configuration, counters, environment, processes, log tail) follows in the
pod's part of the report instead of among the Docker containers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Iterable, Mapping, Sequence

from mltop.probes.cri.access import cri_secrets  # noqa: F401  (re-exported: document.py reads it here)
from mltop.probes.model import ContainerSample, Snapshot
from mltop.probes.redaction import SECRETS_UNREADABLE, ContainerSecrets
from mltop.probes.units import MISSING, iso_utc

from ..findings import severity_order
from .rows import human_bytes, human_percent, plain

log = logging.getLogger(__name__)

# The kubelet's own labels on a pod: the namespace, name and UID, shown as fields of their own
_POD_IDENTITY_LABELS = ("io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.pod.uid")


# --------------------------------------------------------------------------- building


NO_CRI_SECRETS = ContainerSecrets(error="no CRI runtime named this container")


def reads_kubelet_log(c: ContainerSample) -> bool:
    """A pod container whose log is the kubelet's file (the doctor's log source for it too)."""
    return c.kubernetes is not None and bool(c.config.log_path)


def pod_log_tail(c: ContainerSample, lines: int, secrets: ContainerSecrets) -> dict[str, Any]:
    """The last `lines` lines of the kubelet's log file of `c`, scrubbed of token shapes and of the container's
    own secret values; withheld (fail closed) when those values could not be read."""
    from mltop.probes.cri.logs import read_log

    path = c.config.log_path
    if lines <= 0:
        return {"lines": [], "error": "log tail not requested", "source": path}
    if not secrets.known:
        return {"lines": [], "error": f"logs {SECRETS_UNREADABLE} ({secrets.error})", "source": path}
    if not path or not os.path.exists(path):
        return {"lines": [], "error": f"no log file at {path} (is /var/log/pods readable here?)", "source": path}
    return {"lines": [secrets.scrub(line.text) for line in read_log(path, tail=lines)], "error": None,
            "source": path}


def _allocation(a) -> dict[str, Any]:
    return {"resource_name": a.resource_name, "device_id": a.device_id, "uuid": a.uuid, "replica": a.replica,
            "mig": a.mig, "index": a.index, "in_use": a.in_use, "unused_since": iso_utc(a.unused_since)}


def _gpu_use(snapshot: Snapshot, c: ContainerSample) -> list[dict[str, Any]]:
    """The container's processes on GPUs as NVML lists them (host PIDs, attributed by cgroup)."""
    return [{"index": g.index, "uuid": g.uuid, "host_pid": p.host_pid, "gpu_memory_bytes": p.gpu_memory_bytes,
             "sm_percent": p.sm_percent, "name": p.name}
            for g in snapshot.gpus for p in g.processes if p.container_id == c.id]


def _last_exit(c: ContainerSample) -> dict[str, Any]:
    """How the container last ended: itself when it has exited, else its newest earlier attempt (a restarted
    container, as `kubectl describe pod` shows under Last State); exit_code None when it never ended."""
    cfg = c.config
    if cfg.exit_code is not None or c.kubernetes is None or not c.kubernetes.previous_attempts:
        reason = "OOMKilled" if cfg.oom_killed else None
        return {"attempt": None, "exit_code": cfg.exit_code, "reason": reason, "message": cfg.error,
                "finished_at": cfg.finished_at}
    a = c.kubernetes.previous_attempts[0]
    return {"attempt": a.attempt, "exit_code": a.exit_code, "reason": a.reason or None, "message": None,
            "finished_at": a.finished_at}


def _previous_log_tail(c: ContainerSample, lines: int, secrets: ContainerSecrets) -> dict[str, Any] | None:
    """The log of the attempt before a restarted container that runs again (`kubectl logs --previous`)."""
    from mltop.probes.cri.attempts import previous_log_path

    path = previous_log_path(c)
    if path is None or lines <= 0:
        return None
    return pod_log_tail(dataclasses.replace(c, config=dataclasses.replace(c.config, log_path=path)), lines, secrets)


def pod_docs(snapshot: Snapshot, containers: Iterable[ContainerSample], findings: Sequence[Mapping[str, Any]],
             secrets: Mapping[str, ContainerSecrets], log_lines: int) -> list[dict[str, Any]]:
    """The pods of `containers`, each with those containers: the pod with the worst finding first, then by
    namespace and name (the order an on-call engineer reads them in)."""
    pods: dict[tuple[str, str, str], dict[str, Any]] = {}
    for c in containers:
        k = c.kubernetes
        if k is None:
            continue
        cfg = c.config
        pod = pods.setdefault((k.namespace, k.pod, k.pod_uid), {
            "namespace": k.namespace, "pod": k.pod, "pod_uid": k.pod_uid, "qos": k.qos,
            "labels": {key: v for key, v in sorted(cfg.pod_labels.items()) if key not in _POD_IDENTITY_LABELS},
            "annotations": dict(sorted(cfg.pod_annotations.items())),
            "containers": [],
        })
        pod["qos"] = pod["qos"] or k.qos
        pod["containers"].append({
            "id": c.id,
            "name": c.name,
            "container": k.container,
            "state": c.status,
            "started_at": cfg.started_at,
            "restart_count": cfg.restart_count,
            "last_exit": _last_exit(c),
            "previous_attempts": [{"attempt": a.attempt, "container_id": a.container_id, "status": a.status,
                                   "exit_code": a.exit_code, "reason": a.reason or None, "started_at": a.started_at,
                                   "finished_at": a.finished_at} for a in k.previous_attempts],
            "oom_kills": c.oom_kills,
            "gpus_allocated": [_allocation(a) for a in k.gpus_allocated],
            "gpu_use": _gpu_use(snapshot, c),
            "findings": [f.get("code") for f in findings if f.get("container") == c.name],
            "log_source": cfg.log_path,
            "previous_log_tail": _previous_log_tail(c, log_lines, secrets.get(c.id) or NO_CRI_SECRETS),
        })
    worst = {}
    for f in findings:
        rank = severity_order(f.get("severity"))
        worst[f.get("container")] = min(rank, worst.get(f.get("container"), rank))

    def order(pod: Mapping[str, Any]) -> tuple:
        ranks = [worst[c["name"]] for c in pod["containers"] if c["name"] in worst]
        return (min(ranks) if ranks else 2, pod["namespace"], pod["pod"])

    return sorted(pods.values(), key=order)


# --------------------------------------------------------------------------- rows (both renderers)


def pod_container_ids(report: Mapping[str, Any]) -> set[str]:
    """The ids of the containers shown in the pods' part of the report (not again among the others)."""
    return {c["id"] for pod in report.get("pods") or () for c in pod["containers"]}


def pod_title(pod: Mapping[str, Any]) -> str:
    return f"{pod['namespace']}/{pod['pod']}"


def pod_rows(pod: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [("Namespace", pod["namespace"]), ("Pod", pod["pod"]), ("Pod UID", plain(pod.get("pod_uid"))),
            ("QoS class", plain(pod.get("qos"))), ("Containers", str(len(pod["containers"])))]


MAP_HEADERS = ["Key", "Value"]


def map_rows(mapping: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    return [(k, plain(v)) for k, v in (mapping or {}).items()]


POD_CONTAINER_HEADERS = ["Container", "State", "Restarts", "Last exit", "GPUs allocated", "GPUs used", "Findings"]


def last_exit_text(c: Mapping[str, Any]) -> str:
    e = c.get("last_exit") or {}
    if e.get("exit_code") is None:
        return MISSING
    text = (f"attempt {e['attempt']}: " if e.get("attempt") is not None else "") + f"exit code {e['exit_code']}"
    if e.get("reason"):
        text += f" ({e['reason']})"
    if e.get("message"):
        text += f": {e['message']}"
    return text + (f" at {e['finished_at']}" if e.get("finished_at") else "")


def _gpu_label(index: Any) -> str:
    return "?" if index is None else str(index)


def pod_container_rows(pod: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for c in pod["containers"]:
        allocated = ", ".join(f"GPU {_gpu_label(a.get('index'))}" for a in c.get("gpus_allocated") or ()) or "none"
        used = ", ".join(sorted({f"GPU {u['index']}" for u in c.get("gpu_use") or ()})) or "none"
        state = c["state"] + (f", {c['oom_kills']} OOM kill(s) in its cgroup" if c.get("oom_kills") else "")
        rows.append([c["container"], state, str(c.get("restart_count") or 0), last_exit_text(c), allocated, used,
                     ", ".join(c.get("findings") or ()) or "none"])
    return rows


ALLOCATION_HEADERS = ["Container", "GPU", "Allocated (kubelet)", "Used (NVML: PID, memory, SM)", "Verdict"]


def allocation_rows(pod: Mapping[str, Any]) -> list[list[str]]:
    """One row per (container, GPU): what the kubelet allocated there beside what its processes use there."""
    rows = []
    for c in pod["containers"]:
        by_gpu: dict[Any, tuple[list, list]] = {}
        for a in c.get("gpus_allocated") or ():
            by_gpu.setdefault(a.get("index"), ([], []))[0].append(a)
        for u in c.get("gpu_use") or ():
            by_gpu.setdefault(u.get("index"), ([], []))[1].append(u)
        for index, (allocs, uses) in sorted(by_gpu.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
            allocated = "; ".join(f"{a['resource_name']} {a['device_id']}" for a in allocs) or "none"
            used = "; ".join(f"PID {u['host_pid']}, {human_bytes(u.get('gpu_memory_bytes'))}, "
                             f"{human_percent(u.get('sm_percent'))}" for u in uses) or "none"
            if allocs and uses:
                verdict = "allocated and in use"
            elif allocs:
                since = [a["unused_since"] for a in allocs if a.get("unused_since")]
                verdict = "allocated, unused" + (f" since {min(since)}" if since else "")
                if index is None:
                    verdict += " (a device NVML does not list)"
            else:
                verdict = "used, not allocated"
            rows.append([c["container"], _gpu_label(index), allocated, used, verdict])
    return rows


def pod_findings(report: Mapping[str, Any], pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The report's findings about the pod's containers, in the report's order."""
    names = {c["name"] for c in pod["containers"]}
    return [f for f in report.get("findings") or () if f.get("container") in names]


def pod_container_docs(report: Mapping[str, Any], pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The full container sections of the pod's containers."""
    ids = [c["id"] for c in pod["containers"]]
    by_id = {c["id"]: c for c in report["containers"]}
    return [by_id[i] for i in ids if i in by_id]


def previous_log_tails(pod: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(container, its previous attempt's log tail) for the restarted containers of the pod that run again."""
    return [(c["container"], c["previous_log_tail"]) for c in pod["containers"] if c.get("previous_log_tail")]
