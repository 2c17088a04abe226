"""Exported diagnostic reports: one redacted document (`build_report`) rendered as JSON, Markdown or HTML.

The document follows nvidia-bug-report.sh and `nvidia-container-cli info` for host facts and adds what a
container-aware report needs: per-container HostConfig excerpts, counters and history, GPU processes
attributed to containers, log tails, `doctor` findings with evidence and fixes, the checks skipped and why,
and the outputs of actions run in the session. Data is redacted where it enters mltop; `build_report`
redacts every string once more (token shapes, and the containers' own secret values wherever they are
echoed), so a report can be attached to a ticket.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence

from mltop.probes.model import ContainerSample, GpuSample, Snapshot, to_jsonable
from mltop.probes.redaction import (
    REDACTED,
    SECRETS_UNREADABLE,
    redact_argv,
    redact_text,
    redact_tree,
    redact_value,
    scrub_values,
)
from mltop.probes.safe_files import PRIVATE_FILE_MODE, replace_file
from mltop.probes.units import iso_utc

from ..findings import SEVERITIES, count_by_severity, severity_order
from .html import render_html
from .markdown import render_markdown
from .pods import NO_CRI_SECRETS, cri_secrets, pod_docs, pod_log_tail, reads_kubelet_log

if TYPE_CHECKING:
    from mltop.probes.engine import Engine

    from ..actions import ActionLog
    from ..doctor import DoctorResult

log = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1
FORMATS = ("json", "md", "html")
_EXTENSIONS = {".json": "json", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html"}
DEFAULT_LOG_LINES = 100

from mltop.probes.history import CONTAINER_METRICS as CONTAINER_HISTORY_METRICS  # noqa: E402  one set of names
from mltop.probes.history import GPU_METRICS as GPU_HISTORY_METRICS  # noqa: E402


# --------------------------------------------------------------------------- building the document


def _mltop_version() -> str:
    try:
        from importlib import metadata

        return metadata.version("mltop")
    except Exception:
        log.debug("mltop's version is unknown", exc_info=True)
        return "0+unknown"


def _host(snapshot: Snapshot) -> dict[str, Any]:
    h = snapshot.host
    return {
        "hostname": h.hostname,
        "kernel": h.kernel,
        "os": h.os_release,
        "cpu_count": h.cpu_count,
        "memory_total_bytes": h.memory_total_bytes,
        "docker_host": h.docker_host,
        "engine": {"status": h.engine.status, "error": h.engine.error, "version": h.docker_version},
        "runtimes": list(h.runtimes),
        "default_runtime": h.default_runtime,
        "cgroup_version": h.cgroup_version,
        "cgroup_driver": h.cgroup_driver,
        "cdi_spec_dirs": list(h.cdi_spec_dirs),
        "nvml": to_jsonable(h.nvml),
        "driver_version": h.nvml.driver_version,
        "cuda_driver_version": h.nvml.cuda_driver_version,
        "pressure_some_avg10": dict(h.pressure),
        "iowait_percent": h.iowait_percent,
        "limitations": list(h.limitations),
    }


def _gpu(gpu: GpuSample) -> dict[str, Any]:
    doc = to_jsonable(gpu)
    doc["unavailable"] = dict(gpu.unavailable)
    return doc


def _config(c: ContainerSample) -> dict[str, Any]:
    cfg = c.config
    doc = to_jsonable(cfg)
    # Once more by name (idempotent): a value that slipped through at the source is caught here.
    doc["env"] = [{"name": name, "value": redact_value(name, value)} for name, value in cfg.env]
    doc["labels"] = {k: redact_value(k, v) for k, v in cfg.labels.items()}
    doc["command"] = list(redact_argv(cfg.command))
    doc["entrypoint"] = list(redact_argv(cfg.entrypoint))
    doc["requests_gpus"] = cfg.requests_gpus
    return doc


def _counters(c: ContainerSample) -> dict[str, Any]:
    return {
        "cpu_percent": c.cpu_percent,
        "cpu_limit_cores": c.cpu_limit_cores,
        "cpu_limit_percent": c.cpu_limit_percent,
        "memory_bytes": c.memory_bytes,
        "memory_limit_bytes": c.memory_limit_bytes,
        "memory_cache_bytes": c.memory_cache_bytes,
        "shm_bytes": c.shm_bytes,
        "pids": c.pids,
        "io_read_bytes": c.io_read_bytes,
        "io_write_bytes": c.io_write_bytes,
        "io_read_bytes_per_s": c.io_read_bytes_per_s,
        "io_write_bytes_per_s": c.io_write_bytes_per_s,
        "net_rx_bytes_per_s": c.net_rx_bytes_per_s,
        "net_tx_bytes_per_s": c.net_tx_bytes_per_s,
        "oom_kills": c.oom_kills,
        "cpu_throttled_periods": c.cpu_throttled_periods,
        "pressure_some_avg10": to_jsonable(c.pressure),
        "gpu_memory_bytes": c.gpu_memory_bytes,
        "gpu_sm_percent": c.gpu_sm_percent,
    }


class HistoryView(Protocol):
    """Recent values per container and per GPU, oldest first (the dashboard's History)."""

    def container(self, container_id: str, metric: str) -> list[float | None]: ...

    def gpu(self, uuid: str, metric: str) -> list[float | None]: ...


def _history_for(history: HistoryView | None, container: ContainerSample) -> dict[str, list] | None:
    if history is None:
        return None
    series = {m: list(history.container(container.id, m)) for m in CONTAINER_HISTORY_METRICS}
    return {m: v for m, v in series.items() if any(x is not None for x in v)} or None


def _gpu_history(history: HistoryView | None, gpu: GpuSample) -> dict[str, list] | None:
    if history is None:
        return None
    series = {m: list(history.gpu(gpu.uuid, m)) for m in GPU_HISTORY_METRICS}
    return {m: v for m, v in series.items() if any(x is not None for x in v)} or None


def _log_tail(engine: Any, container: ContainerSample, lines: int) -> dict[str, Any]:
    if engine is None:
        return {"lines": [], "error": "no engine connection was given to read logs"}
    if lines <= 0:
        return {"lines": [], "error": "log tail not requested"}
    try:
        return {"lines": list(engine.logs(container.id, tail=lines)), "error": None}
    except Exception as exc:  # engine down, container removed, logging driver without read support
        log.info("report: logs of %s unavailable", container.name, exc_info=True)
        message = getattr(exc, "message", None) or str(exc)
        return {"lines": [], "error": f"logs unavailable: {message}"}


def build_report(
    snapshot: Snapshot,
    engine: Engine | None = None,
    doctor: DoctorResult | None = None,
    actions: ActionLog | None = None,
    history: HistoryView | None = None,
    *,
    containers: Sequence[str] | None = None,
    log_lines: int = DEFAULT_LOG_LINES,
    secrets: Iterable[str] = (),
    generated_at: float | None = None,
) -> dict[str, Any]:
    """The report document (JSON-ready, every string redacted).

    `doctor` supplies the findings and the checks skipped (none when None), `actions` the session's action
    results, `history` recent values per container and GPU. `containers` limits it to those names / ids /
    id prefixes (all containers when None; an unknown one is listed under "missing_containers"). `secrets`
    adds raw values to scrub; the containers' own secret environment values are read from the engine.
    """
    selected, missing = snapshot.select(containers)
    selected_ids = {c.id for c in selected}
    selected_names = {c.name for c in selected}

    finding_docs = [dict(f.to_json()) for f in (doctor.findings if doctor is not None else ())]
    if containers:
        finding_docs = [f for f in finding_docs if f.get("container") in (None, *selected_names)]
    finding_docs.sort(key=lambda f: (f.get("container") is not None, severity_order(f.get("severity")),
                                     f.get("container") or "", f.get("code") or ""))
    skipped = list(doctor.checks_skipped if doctor is not None else ())
    if containers:  # the host's, and those of the containers reported on
        skipped = [s for s in skipped if not s.containers or selected_names.intersection(s.containers)]
    skipped_docs = [{"check": s.check, "container": ", ".join(s.containers) or None, "reason": s.reason}
                    for s in skipped]

    results = list(actions.results()) if actions is not None else []
    if containers:
        results = [r for r in results if r.container_id in selected_ids or r.container in selected_names]

    # A pod container's secrets come from its CRI runtime, its log from the kubelet's file; Docker's from the engine.
    pod_secrets = cri_secrets(snapshot, selected)
    attributed = {}
    for gpu in snapshot.gpus:
        for p in gpu.processes:
            if p.container_id:
                attributed.setdefault(p.container_id, []).append(gpu.index)

    container_docs = []
    for c in selected:
        container_docs.append({
            "id": c.id,
            "name": c.name,
            "image": c.image,
            "status": c.status,
            "pid": c.pid,
            "config": _config(c),
            "counters": _counters(c),
            "gpus": to_jsonable(c.gpus),
            "gpu_indices": sorted(set(attributed.get(c.id, ()))),
            "processes": to_jsonable(c.processes),
            "history": _history_for(history, c),
            "log_tail": (pod_log_tail(c, log_lines, pod_secrets.get(c.id) or NO_CRI_SECRETS)
                         if reads_kubelet_log(c) else _log_tail(engine, c, log_lines)),
        })
    pods = pod_docs(snapshot, selected, finding_docs, pod_secrets, log_lines)

    counts = count_by_severity(f.get("severity") for f in finding_docs)
    worst = next((s for s in SEVERITIES if counts[s]), None)
    doc = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "generator": {"name": "mltop", "version": _mltop_version(),
                      "generated_at": iso_utc(generated_at if generated_at is not None else time.time())},
        "snapshot": {"taken_at": iso_utc(snapshot.taken_at), "interval_s": snapshot.interval_s,
                     "schema_version": snapshot.schema_version},
        "summary": {"containers": len(container_docs), "pods": len(pods), "gpus": len(snapshot.gpus),
                    "findings": counts,
                    "worst": worst, "checks_skipped": len(skipped_docs), "actions": len(results)},
        "host": _host(snapshot),
        "gpus": [{**_gpu(g), "history": _gpu_history(history, g)} for g in snapshot.gpus],
        "pods": pods,
        "containers": container_docs,
        "missing_containers": missing,
        "findings": finding_docs,
        "checks_skipped": skipped_docs,
        "actions": [r.to_json() for r in results],
        "redaction": {
            "marker": REDACTED,
            "note": "Environment values with secret-looking names, well-known token shapes, URL passwords and "
                    "the containers' secret values wherever they were echoed are replaced by the marker.",
        },
    }
    known = set(secrets)
    unreadable = []
    for c in selected:
        found = pod_secrets.get(c.id)
        if found is None and engine is not None:
            found = engine.container_secrets(c.id)
        if found is None:
            continue
        known |= found.values
        if not found.known:
            unreadable.append(c.name)
    if unreadable:
        # Fail closed: their logs are already withheld (engine.logs refuses); whatever else they printed is
        # scrubbed with every pattern mltop has, and the reader is told their bare values could not be.
        doc["redaction"]["secrets_unreadable"] = unreadable
        doc["redaction"]["note"] += (f" The environment of {', '.join(unreadable)} could not be read: its logs "
                                     f"are {SECRETS_UNREADABLE}, and a secret it printed bare, in no known "
                                     "shape, may not be recognised.")
    return redact_document(doc, known)


def redact_document(value: Any, secrets: Iterable[str] = ()) -> Any:
    """Defence in depth: redact token shapes in every string (keys too) and scrub known secret values."""
    secrets = frozenset(secrets)
    return redact_tree(value, lambda text: scrub_values(redact_text(text), secrets), keys=True)


# --------------------------------------------------------------------------- rendering


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n"


def format_for_path(path: str | os.PathLike, format: str | None = None) -> str:
    """The format to write: the one asked for, else the one the file extension names."""
    if format:
        fmt = {"markdown": "md", "htm": "html"}.get(format.lower(), format.lower())
        if fmt not in FORMATS:
            raise ValueError(f"unknown report format {format!r}; use one of {', '.join(FORMATS)}")
        return fmt
    ext = Path(path).suffix.lower()
    if ext not in _EXTENSIONS:
        raise ValueError(f"cannot tell the format from {Path(path).name!r}: name it .json, .md or .html, "
                         "or pass --format")
    return _EXTENSIONS[ext]


def render(report: Mapping[str, Any], format: str) -> str:
    """The report as text in `format` ("json", "md" or "html")."""
    renderers = {"json": render_json, "md": render_markdown, "html": render_html}
    fmt = format_for_path("", format)
    return renderers[fmt](report)


def write_report(path: str | os.PathLike, format: str | None = None, report: Mapping[str, Any] | None = None,
                 mode: int = PRIVATE_FILE_MODE, **build_kwargs: Any) -> Path:
    """Render `report` (or build one from `build_kwargs`, see build_report) and write it atomically, `mode`
    (0600 unless asked: a report holds the host's containers, commands and logs) by probes.safe_files: a name
    that is a symbolic link is replaced by the report, never followed.

    Returns the absolute path written. Raises ValueError for an unknown format and OSError when the file
    cannot be written.
    """
    fmt = format_for_path(path, format)
    if report is None:
        report = build_report(**build_kwargs)
    return replace_file(path, render(report, fmt), mode)


def default_report_path(directory: str | os.PathLike = ".", format: str = "html",
                        hostname: str | None = None, now: float | None = None) -> Path:
    """mltop-report-<host>-<UTC time>.<ext> in `directory`: what the dashboard's `r` writes."""
    import socket

    host = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in (hostname or socket.gethostname()))
    stamp = datetime.fromtimestamp(now if now is not None else time.time(), timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(directory) / f"mltop-report-{host}-{stamp}.{format_for_path('', format)}"
