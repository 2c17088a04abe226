"""What both renderers show, as plain rows of text: the Markdown and HTML reports depend on this and nothing else."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..events import event_summary
from ..one_line import one_line
from mltop.probes.units import MISSING, binary_size, iso_utc


def human_bytes(value: Any) -> str:
    return MISSING if value is None else binary_size(value)


def human_rate(value: Any) -> str:
    return MISSING if value is None else f"{human_bytes(value)}/s"


def human_percent(value: Any) -> str:
    return MISSING if value is None else f"{float(value):.1f}%"


def plain(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return MISSING
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
        ("Entrypoint", one_line(plain(" ".join(cfg.get("entrypoint") or [])))),
        ("Command", one_line(plain(" ".join(cfg.get("command") or [])))),
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
         if pressure else MISSING),
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
    power = MISSING
    if g.get("power_w") is not None or g.get("power_limit_w") is not None:
        pw = "?" if g.get("power_w") is None else f"{g['power_w']:.0f}"
        lim = "?" if g.get("power_limit_w") is None else f"{g['power_limit_w']:.0f}"
        power = f"{pw} / {lim} W"
    return [
        str(g["index"]), g["name"], g.get("pci_bus_id") or MISSING, human_percent(g.get("utilization_percent")),
        f"{human_bytes(g.get('memory_used_bytes'))} / {human_bytes(g.get('memory_total_bytes'))}",
        MISSING if g.get("temperature_c") is None else f"{g['temperature_c']:.0f} °C", power,
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
                         one_line(plain(p.get("name")), 200)])
    return rows


PROCESS_HEADERS = ["Host PID", "Ctr PID", "User", "CPU", "RSS", "GPU mem", "Command"]


def process_rows(c: Mapping[str, Any], limit: int = 30) -> list[list[str]]:
    procs = sorted(c.get("processes") or [], key=lambda p: -(p.get("cpu_percent") or 0))
    return [[str(p["host_pid"]), plain(p.get("container_pid")), plain(p.get("user")),
             human_percent(p.get("cpu_percent")), human_bytes(p.get("rss_bytes")),
             human_bytes(p.get("gpu_memory_bytes")) if p.get("gpu_memory_bytes") else MISSING,
             one_line(p.get("cmdline") or "", 200)] for p in procs[:limit]]


SKIPPED_HEADERS = ["Check", "Container", "Reason"]


def skipped_rows(report: Mapping[str, Any]) -> list[tuple[Any, Any, Any]]:
    return [(s["check"], s.get("container") or "host", s.get("reason")) for s in report["checks_skipped"]]


def no_gpu_line(report: Mapping[str, Any]) -> str:
    """Why a report has no GPU figures, in NVML's words."""
    nvml = report["host"].get("nvml") or {}
    return f"No GPU figures: NVML {plain(nvml.get('status'))}" + (f" — {nvml['error']}" if nvml.get("error") else "") + "."


MOUNT_HEADERS = ["Type", "Source", "Destination", "Mode"]


def mount_rows(c: Mapping[str, Any]) -> list[list[str]]:
    return [[m.get("type") or "?", m.get("source") or MISSING, m.get("destination") or "?",
             "ro" if m.get("read_only") else "rw"] for m in c["config"].get("mounts") or []]


def action_title(a: Mapping[str, Any]) -> str:
    code = "" if a.get("exit_code") is None else f", exit {a['exit_code']}"
    return f"{a['action']} in {a['container']} — {a['status']}{code}, {a.get('duration_s', 0):.1f} s"


def summary_line(report: Mapping[str, Any]) -> str:
    s = report["summary"]
    f = s["findings"]
    pods = f", {s['pods']} pod(s)" if s.get("pods") else ""
    return (f"{f['critical']} critical, {f['warning']} warning, {f['info']} info finding(s) across "
            f"{s['containers']} container(s){pods} and {s['gpus']} GPU(s); {s['checks_skipped']} check(s) skipped; "
            f"{s['actions']} action(s) run.")


# --------------------------------------------------------------------------- recorded history (report_history)

# (metric, label) of the figures a recording keeps, in the order the history section shows them.
CONTAINER_CHARTS = (("cpu_percent", "CPU %"), ("memory_bytes", "memory"), ("gpu_percent", "GPU %"),
                    ("gpu_memory_bytes", "GPU memory"))
GPU_CHARTS = (("utilization_percent", "utilisation %"), ("memory_used_bytes", "memory used"))
HISTORY_MD_ROWS = 24  # Markdown tables are downsampled to about this many rows
TIMELINE_HEADERS = ["time", "source", "event", "container", "what"]


def spread(n: int, most: int) -> list[int]:
    """About `most` indices spread evenly over range(n), the last always included."""
    if n <= most:
        return list(range(n))
    step = n / most
    return sorted({int(i * step) for i in range(most)} | {n - 1})


def figure(metric: str, value: Any) -> str:
    """A recorded value in human units: bytes for *_bytes metrics, a percentage otherwise."""
    return human_bytes(value) if metric.endswith("bytes") else human_percent(value)


def history_heading(report: Mapping[str, Any]) -> str | None:
    """"History <since> → <until> (N recorded sweeps)", or None for a report without recorded history."""
    window = report.get("history_window")
    if not window:
        return None
    return f"History {window['since']} → {window['until']} ({int(window['sweeps'])} recorded sweeps)"


def timeline_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """One row per recorded event: time, source, kind, container (or host), what happened."""
    return [[e["time"], e["source"], e["kind"], str(e.get("container") or "host"), event_summary(e)]
            for e in report.get("timeline") or []]


def recorded_charts(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, list], tuple[tuple[str, str], ...]]]:
    """(heading, recorded series, (metric, label) present) per container, then per GPU, that has any."""
    out = []
    for c in report.get("containers", ()):
        rec = c.get("recorded")
        if rec:
            out.append((f"{c['name']}: recorded figures", rec, tuple(m for m in CONTAINER_CHARTS if m[0] in rec)))
    for g in report.get("gpus", ()):
        rec = g.get("recorded")
        if rec:
            out.append((f"GPU {g.get('index')}: recorded figures", rec, tuple(m for m in GPU_CHARTS if m[0] in rec)))
    return out


def recorded_rows(rec: Mapping[str, list], charts: Sequence[tuple[str, str]],
                  most: int = HISTORY_MD_ROWS) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of a recorded series downsampled to about `most` rows: the UTC time, then each figure."""
    rows = [[(iso_utc(rec["t"][i]) or "")[11:19]] + [figure(m, rec[m][i]) for m, _ in charts]
            for i in spread(len(rec["t"]), most)]
    return ["time (UTC)"] + [label for _, label in charts], rows
