"""Exported diagnostic reports: one redacted document (`build_report`) rendered as JSON, Markdown or HTML.

The document follows nvidia-bug-report.sh and `nvidia-container-cli info` for host facts and adds what a
container-aware report needs: per-container HostConfig excerpts, counters and history, GPU processes
attributed to containers, log tails, `doctor` findings with evidence and fixes, the checks skipped and why,
and the outputs of actions run in the session. Data is redacted where it enters mltop; `build_report`
redacts every string once more (token shapes, and the containers' own secret values wherever they are
echoed), so a report can be attached to a ticket.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mltop.probes.model import ContainerSample, GpuSample, Snapshot, to_jsonable
from mltop.probes.redaction import REDACTED, redact_argv, redact_text, redact_value, scrub_values

REPORT_SCHEMA_VERSION = 1
FORMATS = ("json", "md", "html")
_EXTENSIONS = {".json": "json", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html"}
DEFAULT_LOG_LINES = 100

from mltop.probes.history import CONTAINER_METRICS as CONTAINER_HISTORY_METRICS  # noqa: E402  one set of names
from mltop.probes.history import GPU_METRICS as GPU_HISTORY_METRICS  # noqa: E402


# --------------------------------------------------------------------------- building the document


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _mltop_version() -> str:
    try:
        from importlib import metadata

        return metadata.version("mltop")
    except Exception:
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


def _history_for(history: Any, container: ContainerSample) -> dict[str, list] | None:
    """Recent values per metric from whatever the caller keeps: the TUI's History (`.container(id,
    metric)`), a {container id or name: {metric: values}} mapping, or a sequence of snapshots."""
    if history is None:
        return None
    if hasattr(history, "container") and callable(history.container):
        series = {m: list(history.container(container.id, m)) for m in CONTAINER_HISTORY_METRICS}
    elif isinstance(history, Mapping):
        raw = history.get(container.id) or history.get(container.name)
        series = {str(k): list(v) for k, v in (raw or {}).items()}
    else:  # a sequence of snapshots: the same series, by the same names, as the dashboard's History
        from mltop.probes.history import History

        recorded = History.from_snapshots(s for s in history if isinstance(s, Snapshot))
        series = {m: recorded.container(container.id, m) for m in CONTAINER_HISTORY_METRICS}
    return {m: v for m, v in series.items() if any(x is not None for x in v)} or None


def _gpu_history(history: Any, gpu: GpuSample) -> dict[str, list] | None:
    if history is None or not (hasattr(history, "gpu") and callable(history.gpu)):
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
        message = getattr(exc, "message", None) or str(exc)
        return {"lines": [], "error": f"logs unavailable: {message}"}


def _finding(item: Any) -> dict[str, Any]:
    if hasattr(item, "to_json"):
        return dict(item.to_json())
    if isinstance(item, Mapping):
        return dict(item)
    if dataclasses.is_dataclass(item):
        return to_jsonable(item)
    return {"code": "unknown", "severity": "info", "container": None, "title": str(item), "evidence": [], "fix": ""}


def _skipped(item: Any) -> dict[str, Any]:
    """A skipped check as {"check", "container", "reason"}, whatever shape the doctor hands over."""
    if isinstance(item, str):
        name, _, reason = item.partition(":")
        return {"check": name.strip(), "container": None, "reason": reason.strip() or None}
    if isinstance(item, (tuple, list)):
        if len(item) == 3:
            return {"check": str(item[0]), "container": item[1], "reason": str(item[2])}
        if len(item) == 2:
            return {"check": str(item[0]), "container": None, "reason": str(item[1])}
    if hasattr(item, "to_json"):
        item = item.to_json()
    elif dataclasses.is_dataclass(item):
        item = to_jsonable(item)
    if isinstance(item, Mapping):
        check = item.get("check") or item.get("name") or item.get("code") or "?"
        return {"check": str(check), "container": item.get("container"), "reason": item.get("reason")}
    return {"check": str(item), "container": None, "reason": None}


_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def build_report(
    snapshot: Snapshot,
    engine: Any = None,
    findings: Iterable[Any] = (),
    checks_skipped: Iterable[Any] = (),
    action_log: Any = None,
    containers: Sequence[str] | None = None,
    history: Any = None,
    *,
    doctor_result: Any = None,
    log_lines: int = DEFAULT_LOG_LINES,
    secrets: Iterable[str] = (),
    generated_at: float | None = None,
) -> dict[str, Any]:
    """The report document (JSON-ready, every string redacted).

    `containers` limits it to those names / ids / id prefixes (all containers when None; an unknown one is
    listed under "missing_containers"). `doctor_result` (anything with `.findings` and `.checks_skipped`)
    stands in for the two lists. `action_log` is an ActionLog or a sequence of ActionResults. `secrets`
    adds raw values to scrub; the containers' own secret environment values are read from the engine.
    """
    if doctor_result is not None:
        findings = getattr(doctor_result, "findings", findings)
        checks_skipped = getattr(doctor_result, "checks_skipped", checks_skipped)

    selected, missing = snapshot.select(containers)
    selected_ids = {c.id for c in selected}
    selected_names = {c.name for c in selected}

    finding_docs = [_finding(f) for f in findings]
    if containers:
        finding_docs = [f for f in finding_docs if f.get("container") in (None, *selected_names)]
    finding_docs.sort(key=lambda f: (f.get("container") is not None, _SEVERITY_ORDER.get(f.get("severity"), 3),
                                     f.get("container") or "", f.get("code") or ""))
    skipped_docs = [_skipped(s) for s in checks_skipped]
    if containers:
        skipped_docs = [s for s in skipped_docs if s.get("container") in (None, *selected_names)]

    results = list(action_log.results() if hasattr(action_log, "results") else (action_log or ()))
    if containers:
        results = [r for r in results if r.container_id in selected_ids or r.container in selected_names]

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
            "log_tail": _log_tail(engine, c, log_lines),
        })

    counts = {s: sum(1 for f in finding_docs if f.get("severity") == s) for s in ("critical", "warning", "info")}
    worst = next((s for s in ("critical", "warning", "info") if counts[s]), None)
    doc = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "generator": {"name": "mltop", "version": _mltop_version(),
                      "generated_at": _iso(generated_at if generated_at is not None else time.time())},
        "snapshot": {"taken_at": _iso(snapshot.taken_at), "interval_s": snapshot.interval_s,
                     "schema_version": snapshot.schema_version},
        "summary": {"containers": len(container_docs), "gpus": len(snapshot.gpus), "findings": counts,
                    "worst": worst, "checks_skipped": len(skipped_docs), "actions": len(results)},
        "host": _host(snapshot),
        "gpus": [{**_gpu(g), "history": _gpu_history(history, g)} for g in snapshot.gpus],
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
    if engine is not None:
        from .actions import container_secret_values

        for c in selected:
            known |= container_secret_values(engine, c.id)
    return redact_document(doc, known)


def redact_document(value: Any, secrets: Iterable[str] = ()) -> Any:
    """Defence in depth: redact token shapes in every string (keys too) and scrub known secret values."""
    secrets = frozenset(secrets)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return scrub_values(redact_text(v), secrets)
        if isinstance(v, Mapping):
            return {walk(str(k)): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    return walk(value)


# --------------------------------------------------------------------------- rendering


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n"


def render_html(report: Mapping[str, Any]) -> str:
    from .report_html import render_html as _render

    return _render(report)




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
    text = renderers[fmt](report)
    if report.get("history_window"):  # recorded history (report_history.add_history)
        from .report_history import append_to_rendered

        text = append_to_rendered(text, report, fmt)
    return text


def write_report(path: str | os.PathLike, format: str | None = None, report: Mapping[str, Any] | None = None,
                 **build_kwargs: Any) -> Path:
    """Render `report` (or build one from `build_kwargs`, see build_report) and write it atomically.

    Returns the absolute path written. Raises ValueError for an unknown format and OSError when the file
    cannot be written.
    """
    fmt = format_for_path(path, format)
    if report is None:
        report = build_report(**build_kwargs)
    text = render(report, fmt)
    target = Path(path).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def default_report_path(directory: str | os.PathLike = ".", format: str = "html",
                        hostname: str | None = None, now: float | None = None) -> Path:
    """mltop-report-<host>-<UTC time>.<ext> in `directory`: what the dashboard's `r` writes."""
    import socket

    host = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in (hostname or socket.gethostname()))
    stamp = datetime.fromtimestamp(now if now is not None else time.time(), timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(directory) / f"mltop-report-{host}-{stamp}.{format_for_path('', format)}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- shared by the renderers


def human_bytes(value: Any) -> str:
    if value is None:
        return "—"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_rate(value: Any) -> str:
    return "—" if value is None else f"{human_bytes(value)}/s"


def human_percent(value: Any) -> str:
    return "—" if value is None else f"{float(value):.1f}%"


def plain(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value)
    return str(value)


_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[Any]) -> str:
    known = [float(v) for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    return "".join(" " if v is None else _SPARKS[int((float(v) - low) / span * (len(_SPARKS) - 1))] for v in values)


def history_rows(history: Mapping[str, Sequence[Any]] | None) -> list[tuple[str, str, str, str, str]]:
    """(metric, last, min, max, sparkline) per metric, values in human units."""
    rows = []
    for metric, values in (history or {}).items():
        known = [v for v in values if v is not None]
        if not known:
            continue
        fmt = human_bytes if metric.endswith("bytes") else human_percent
        rows.append((metric, fmt(known[-1]), fmt(min(known)), fmt(max(known)), sparkline(values[-60:])))
    return rows


def config_rows(c: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ML-relevant configuration as (label, value) pairs, in reading order."""
    cfg = c["config"]
    requests = []
    for r in cfg.get("device_requests") or []:
        caps = " | ".join(",".join(group) for group in r.get("capabilities") or [])
        count = "all" if r.get("count") == -1 else r.get("count")
        ids = ",".join(r.get("device_ids") or [])
        requests.append(f"driver={r.get('driver') or 'default'} count={count}"
                        + (f" ids={ids}" if ids else "") + (f" caps={caps}" if caps else ""))
    cpus = None
    if cfg.get("nano_cpus"):
        cpus = f"{cfg['nano_cpus'] / 1e9:g} CPUs"
    elif cfg.get("cpu_quota") and cfg.get("cpu_period"):
        cpus = f"{cfg['cpu_quota'] / cfg['cpu_period']:g} CPUs (quota)"
    restart = f"{cfg.get('restart_count', 0)}" + (f" (policy {cfg['restart_policy']})" if cfg.get("restart_policy") else "")
    state = c["status"]
    if cfg.get("exit_code") is not None:
        state += f", exit code {cfg['exit_code']}"
    if cfg.get("oom_killed"):
        state += ", OOM-killed"
    rows = [
        ("Image", c["image"]),
        ("State", state),
        ("Started / finished", f"{plain(cfg.get('started_at'))} / {plain(cfg.get('finished_at'))}"),
        ("Error", plain(cfg.get("error"))),
        ("Entrypoint", plain(" ".join(cfg.get("entrypoint") or []))),
        ("Command", plain(" ".join(cfg.get("command") or []))),
        ("Restarts", restart),
        ("Runtime", plain(cfg.get("runtime"))),
        ("GPU device requests", "; ".join(requests) or "none"),
        ("Requests GPUs", plain(cfg.get("requests_gpus"))),
        ("GPUs in use", plain(c.get("gpu_indices"))),
        ("Memory limit", human_bytes(cfg.get("memory_limit_bytes")) if cfg.get("memory_limit_bytes") else "unlimited"),
        ("CPU limit", cpus or "unlimited"),
        ("cpuset", plain(cfg.get("cpuset_cpus"))),
        ("shm size", human_bytes(cfg.get("shm_size_bytes")) if cfg.get("shm_size_bytes") else "default (64 MiB)"),
        ("IPC mode", plain(cfg.get("ipc_mode"))),
        ("PID mode", plain(cfg.get("pid_mode"))),
        ("Network mode", plain(cfg.get("network_mode"))),
        ("Privileged", plain(cfg.get("privileged"))),
        ("Added capabilities", plain(cfg.get("cap_add"))),
        ("ulimits", plain([f"{u.get('Name')}={u.get('Soft')}:{u.get('Hard')}" for u in cfg.get("ulimits") or []])),
        ("Block I/O throttles", plain([f"{k} {t.get('Path')}={t.get('Rate')}" for k, ts in
                                       (cfg.get("blkio_throttles") or {}).items() for t in ts])),
    ]
    return rows


def counter_rows(c: Mapping[str, Any]) -> list[tuple[str, str]]:
    k = c["counters"]
    limit = human_bytes(k.get("memory_limit_bytes")) if k.get("memory_limit_bytes") else "no limit"
    pressure = k.get("pressure_some_avg10") or {}
    return [
        ("CPU", human_percent(k.get("cpu_percent")) + (f" of {k['cpu_limit_cores']:g} cores allowed"
                                                        if k.get("cpu_limit_cores") else "")),
        ("Memory (working set)", f"{human_bytes(k.get('memory_bytes'))} / {limit}"),
        ("Page cache", human_bytes(k.get("memory_cache_bytes"))),
        ("shm in use", human_bytes(k.get("shm_bytes"))),
        ("PIDs", plain(k.get("pids"))),
        ("Disk read / write", f"{human_rate(k.get('io_read_bytes_per_s'))} / {human_rate(k.get('io_write_bytes_per_s'))}"),
        ("Network rx / tx", f"{human_rate(k.get('net_rx_bytes_per_s'))} / {human_rate(k.get('net_tx_bytes_per_s'))}"),
        ("OOM kills (cgroup)", plain(k.get("oom_kills"))),
        ("CPU throttled periods", plain(k.get("cpu_throttled_periods"))),
        ("Pressure some avg10 cpu/mem/io", " / ".join(human_percent(pressure.get(r)) for r in ("cpu", "memory", "io"))
         if pressure else "—"),
        ("GPU memory / SM", f"{human_bytes(k.get('gpu_memory_bytes'))} / {human_percent(k.get('gpu_sm_percent'))}"),
    ]


def host_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    h = report["host"]
    engine = h["engine"]
    nvml = h["nvml"] or {}
    nvml_text = nvml.get("status", "?") + (f": {nvml['error']}" if nvml.get("error") else "")
    if nvml.get("library_path"):
        nvml_text += f" ({nvml['library_path']})"
    cgroup = (f"v{h['cgroup_version']}" if h.get("cgroup_version") else "?") + f", driver {plain(h.get('cgroup_driver'))}"
    return [
        ("Hostname", h["hostname"]),
        ("OS", plain(h.get("os"))),
        ("Kernel", h["kernel"]),
        ("CPUs / memory", f"{h['cpu_count']} / {human_bytes(h['memory_total_bytes'])}"),
        ("Docker engine", f"{plain(engine.get('version'))} at {h['docker_host']} — {engine['status']}"
         + (f": {engine['error']}" if engine.get("error") else "")),
        ("Runtimes", plain(h.get("runtimes")) + (f" (default {h['default_runtime']})" if h.get("default_runtime") else "")),
        ("cgroup", cgroup),
        ("CDI spec dirs", plain(h.get("cdi_spec_dirs"))),
        ("NVML", nvml_text),
        ("NVIDIA driver", plain(h.get("driver_version"))),
        ("CUDA (driver)", plain(h.get("cuda_driver_version"))),
        ("Host pressure some avg10", plain([f"{k} {v:.1f}%" for k, v in (h.get("pressure_some_avg10") or {}).items()])),
        ("iowait", human_percent(h.get("iowait_percent"))),
    ]


def gpu_row(g: Mapping[str, Any]) -> list[str]:
    power = "—"
    if g.get("power_w") is not None or g.get("power_limit_w") is not None:
        pw = "?" if g.get("power_w") is None else f"{g['power_w']:.0f}"
        lim = "?" if g.get("power_limit_w") is None else f"{g['power_limit_w']:.0f}"
        power = f"{pw} / {lim} W"
    return [
        str(g["index"]), g["name"], g.get("pci_bus_id") or "—", human_percent(g.get("utilization_percent")),
        f"{human_bytes(g.get('memory_used_bytes'))} / {human_bytes(g.get('memory_total_bytes'))}",
        "—" if g.get("temperature_c") is None else f"{g['temperature_c']:.0f} °C", power,
        plain(g.get("throttle_reasons")), g["uuid"],
    ]


GPU_HEADERS = ["GPU", "Name", "Bus", "Util", "Memory", "Temp", "Power", "Throttle", "UUID"]
GPU_PROCESS_HEADERS = ["GPU", "Host PID", "Container", "Type", "GPU memory", "SM", "Process"]


def gpu_process_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for g in report["gpus"]:
        for p in g.get("processes") or []:
            owner = p.get("container_name") or ("host" if not p.get("container_id") else p["container_id"][:12])
            rows.append([str(g["index"]), str(p["host_pid"]), owner, p.get("type") or "?",
                         human_bytes(p.get("gpu_memory_bytes")), human_percent(p.get("sm_percent")),
                         plain(p.get("name"))])
    return rows


PROCESS_HEADERS = ["Host PID", "Ctr PID", "User", "CPU", "RSS", "GPU mem", "Command"]


def process_rows(c: Mapping[str, Any], limit: int = 30) -> list[list[str]]:
    procs = sorted(c.get("processes") or [], key=lambda p: -(p.get("cpu_percent") or 0))
    return [[str(p["host_pid"]), plain(p.get("container_pid")), plain(p.get("user")),
             human_percent(p.get("cpu_percent")), human_bytes(p.get("rss_bytes")),
             human_bytes(p.get("gpu_memory_bytes")) if p.get("gpu_memory_bytes") else "—",
             " ".join(str(p.get("cmdline") or "").split())[:200]] for p in procs[:limit]]


MOUNT_HEADERS = ["Type", "Source", "Destination", "Mode"]


def mount_rows(c: Mapping[str, Any]) -> list[list[str]]:
    return [[m.get("type") or "?", m.get("source") or "—", m.get("destination") or "?",
             "ro" if m.get("read_only") else "rw"] for m in c["config"].get("mounts") or []]


def action_title(a: Mapping[str, Any]) -> str:
    code = "" if a.get("exit_code") is None else f", exit {a['exit_code']}"
    return f"{a['action']} in {a['container']} — {a['status']}{code}, {a.get('duration_s', 0):.1f} s"


def summary_line(report: Mapping[str, Any]) -> str:
    s = report["summary"]
    f = s["findings"]
    return (f"{f['critical']} critical, {f['warning']} warning, {f['info']} info finding(s) across "
            f"{s['containers']} container(s) and {s['gpus']} GPU(s); {s['checks_skipped']} check(s) skipped; "
            f"{s['actions']} action(s) run.")


# --------------------------------------------------------------------------- Markdown


_MD_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "*": "\\*", "`": "\\`", "[": "\\[", "]": "\\]",
                             "<": "&lt;", ">": "&gt;", "#": "\\#", "~": "\\~"})


def md_text(value: Any) -> str:
    """Text from containers as inert Markdown: no markup, no HTML, no table breaks."""
    text = plain(value) if not isinstance(value, str) else (value or "—")
    return " ".join(text.translate(_MD_ESCAPES).splitlines()) if "\n" in text else text.translate(_MD_ESCAPES)


def _longest_backtick_run(text: str) -> int:
    longest = count = 0
    for ch in text:
        count = count + 1 if ch == "`" else 0
        longest = max(longest, count)
    return longest


def md_code(value: Any) -> str:
    """An inline code span that survives backticks inside and stays inside a table cell."""
    text = " ".join(str(value).split()) if value not in (None, "") else ""
    if not text:
        return "—"
    fence = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    escaped = text.replace("|", "\\|")
    return fence + pad + escaped + pad + fence


def md_fence(text: str, info: str = "text") -> str:
    """A fenced block longer than any backtick run inside, so log lines cannot end it early."""
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], code_columns: Sequence[int] = ()) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        cells = [md_code(v) if i in code_columns else md_text(v) for i, v in enumerate(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def md_pairs(rows: Iterable[tuple[str, Any]], code_labels: Sequence[str] = ()) -> str:
    out = ["| | |", "|---|---|"]
    for label, value in rows:
        cell = md_code(value) if label in code_labels and value not in ("—", None) else md_text(value)
        out.append(f"| **{label}** | {cell} |")
    return "\n".join(out)


_BADGE = {"critical": "🔴 critical", "warning": "🟠 warning", "info": "🔵 info"}


def render_markdown(report: Mapping[str, Any]) -> str:
    """Markdown that pastes cleanly into a GitHub or Jira ticket: tables, and fenced logs and outputs."""
    gen = report["generator"]
    out: list[str] = []
    add = out.append
    add(f"# mltop diagnostic report — {md_text(report['host']['hostname'])}")
    add("")
    add(f"Generated {gen['generated_at']} by mltop {md_text(gen['version'])} · snapshot taken "
        f"{report['snapshot']['taken_at']} · report schema {report['schema_version']}  ")
    add(f"Secrets are replaced by `{REDACTED}`.")
    add("")
    add(f"**Summary:** {summary_line(report)}")
    if report.get("missing_containers"):
        add("")
        add("**Not found:** " + ", ".join(md_code(m) for m in report["missing_containers"]))

    add("")
    add("## Findings")
    add("")
    if report["findings"]:
        rows = []
        for f in report["findings"]:
            evidence = "<br>".join(md_text(e) for e in f.get("evidence") or []) or "—"
            rows.append((_BADGE.get(f.get("severity"), f.get("severity")), f.get("container") or "host",
                         f.get("code"), f.get("title"), evidence, f.get("fix")))
        lines = ["| Severity | Container | Check | Finding | Evidence | Fix |", "|---|---|---|---|---|---|"]
        for sev, ctr, code, title, ev, fix in rows:
            lines.append(f"| {sev} | {md_text(ctr)} | {md_code(code)} | {md_text(title)} | {ev} | {md_text(fix)} |")
        add("\n".join(lines))
    else:
        add("No findings.")
    add("")
    add("### Checks skipped")
    add("")
    if report["checks_skipped"]:
        add(md_table(["Check", "Container", "Reason"],
                     [(s["check"], s.get("container") or "host", s.get("reason")) for s in report["checks_skipped"]],
                     code_columns=(0,)))
    else:
        add("None.")

    add("")
    add("## Host")
    add("")
    add(md_pairs(host_rows(report)))
    if report["host"].get("limitations"):
        add("")
        for note in report["host"]["limitations"]:
            add(f"- {md_text(note)}")

    add("")
    add("## GPUs")
    add("")
    if report["gpus"]:
        add(md_table(GPU_HEADERS, [gpu_row(g) for g in report["gpus"]], code_columns=(8,)))
        procs = gpu_process_rows(report)
        add("")
        add("**GPU processes** (host PIDs, attributed to containers)")
        add("")
        add(md_table(GPU_PROCESS_HEADERS, procs) if procs else "None.")
        for g in report["gpus"]:
            if g.get("unavailable"):
                add("")
                add(f"GPU {g['index']} fields not available: "
                    + "; ".join(f"{md_text(k)}: {md_text(v)}" for k, v in g["unavailable"].items()))
    else:
        nvml = report["host"]["nvml"] or {}
        add(f"No GPU figures: NVML {md_text(nvml.get('status'))}"
            + (f" — {md_text(nvml.get('error'))}" if nvml.get("error") else "") + ".")

    add("")
    add("## Containers")
    for c in report["containers"]:
        add("")
        add(f"### {md_text(c['name'])} ({md_code(c['id'][:12])}) — {md_text(c['status'])}")
        add("")
        add(md_pairs(config_rows(c), code_labels=("Image", "Entrypoint", "Command")))
        add("")
        add("**Counters**")
        add("")
        add(md_pairs(counter_rows(c)))
        hist = history_rows(c.get("history"))
        if hist:
            add("")
            add("**Recent history**")
            add("")
            add(md_table(["Metric", "Last", "Min", "Max", "Trend"], hist, code_columns=(4,)))
        mounts = mount_rows(c)
        if mounts:
            add("")
            add("**Mounts**")
            add("")
            add(md_table(MOUNT_HEADERS, mounts, code_columns=(1, 2)))
        env = c["config"].get("env") or []
        if env:
            add("")
            add("**Environment** (redacted)")
            add("")
            add(md_fence("\n".join(f"{e['name']}={e['value']}" for e in env), "ini"))
        procs = process_rows(c)
        if procs:
            add("")
            add("**Processes**")
            add("")
            add(md_table(PROCESS_HEADERS, procs, code_columns=(6,)))
        tail = c.get("log_tail") or {}
        add("")
        if tail.get("lines"):
            add(f"<details><summary>Log tail (last {len(tail['lines'])} lines)</summary>")
            add("")
            add(md_fence("\n".join(tail["lines"])))
            add("")
            add("</details>")
        else:
            add(f"Log tail: {md_text(tail.get('error') or 'empty')}")

    add("")
    add("## Actions run in this session")
    add("")
    if not report["actions"]:
        add("None.")
    for a in report["actions"]:
        add(f"### {md_text(action_title(a))}")
        add("")
        add(f"Command: {md_code(' '.join(a.get('command') or [])) if a.get('command') else '—'} · started "
            f"{_iso(a.get('started_at'))}")
        if a.get("explanation"):
            add("")
            add(f"> {md_text(a['explanation'])}")
        add("")
        add(md_fence(a.get("output") or "(no output)"))
        add("")
    return "\n".join(out).rstrip() + "\n"
