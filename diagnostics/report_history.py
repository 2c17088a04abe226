"""Reports with the past: the recorded timeline and, per container and GPU in the report, the recorded
figures over a window (`mltop report --since 2h`, replay's `r`). Arrays in JSON, compact tables in Markdown,
inline SVG charts in HTML; everything passes the report's redaction again."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any, Mapping, Sequence

REPORT_WINDOW_S = 15 * 60  # replay's `r`: this long either side of the time shown
MD_ROWS = 24  # Markdown tables are downsampled to about this many rows
SVG_POINTS = 400  # charts are downsampled to about this many points

_CONTAINER_CHARTS = (("cpu_percent", "CPU %"), ("memory_bytes", "memory"), ("gpu_percent", "GPU %"),
                     ("gpu_memory_bytes", "GPU memory"))
_GPU_CHARTS = (("utilization_percent", "utilisation %"), ("memory_used_bytes", "memory used"))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def add_history(report: dict[str, Any], store: Any, since: float, until: float,
                selected: Sequence[str] | None = None) -> dict[str, Any]:
    """The report with "history_window", "timeline" and, per container and GPU, "recorded": {"t": [...],
    metric: [...]} (times in unix seconds), read from a RecordingStore. With `selected` (the containers the
    report was limited to), the timeline keeps their events and the host's. Redacted again before returning."""
    from .report.document import redact_document

    times, containers, gpus = store.series(since, until)
    names = {c["name"] for c in report.get("containers", ())}
    ids = {c["id"] for c in report.get("containers", ())}
    every = not selected
    events = [e for e in store.events(since=since, until=until)
              if e.container is None and e.container_id is None or e.container in names or e.container_id in ids
              or every]
    out = dict(report)
    out["history_window"] = {"since": _iso(since), "until": _iso(until), "sweeps": len(times)}
    out["timeline"] = [{**e.to_json(), "time": _iso(e.t)} for e in events]
    out["containers"] = [dict(c, recorded=_series(times, containers.get(c["id"]))) for c in report["containers"]]
    out["gpus"] = [dict(g, recorded=_series(times, gpus.get(g.get("uuid")))) for g in report.get("gpus", ())]
    return redact_document(out)


def _series(times: Sequence[float], series: Mapping[str, Sequence[Any]] | None) -> dict[str, list] | None:
    if not series:
        return None
    keep = [i for i in range(len(times)) if any(v[i] is not None for v in series.values())]
    if not keep:
        return None
    doc: dict[str, list] = {"t": [times[i] for i in keep]}
    for metric, values in series.items():
        if any(values[i] is not None for i in keep):
            doc[metric] = [values[i] for i in keep]
    return doc


def _pick(n: int, most: int) -> list[int]:
    if n <= most:
        return list(range(n))
    step = n / most
    return sorted({int(i * step) for i in range(most)} | {n - 1})


def _fmt(metric: str, value: Any) -> str:
    from .report.rows import human_bytes, human_percent

    if value is None:
        return "—"
    return human_bytes(value) if metric.endswith("bytes") else human_percent(value)


def _event_what(e: Mapping[str, Any]) -> str:
    d = e.get("detail") or {}
    if e["source"] == "finding":
        return f"{e.get('severity') or ''} {e.get('code') or ''}: {e.get('title') or ''}".strip()
    if e["kind"] == "die":
        return f"exit code {d.get('exit_code', '?')}"
    if e["kind"] == "health_status":
        return str(d.get("health") or "")
    return str(e.get("title") or "")


# --------------------------------------------------------------------------- Markdown


def render_markdown_section(report: Mapping[str, Any]) -> str:
    from .report.markdown import md_table, md_text

    window = report.get("history_window")
    if not window:
        return ""
    lines = [f"## History {window['since']} → {window['until']} ({window['sweeps']} recorded sweeps)", ""]
    timeline = report.get("timeline") or []
    lines.append(f"### Timeline ({len(timeline)} events)")
    lines.append("")
    if timeline:
        lines.append(md_table(["time", "source", "event", "container", "what"],
                              [[e["time"], e["source"], e["kind"], md_text(e.get("container") or "host"),
                                md_text(_event_what(e))] for e in timeline]))
    else:
        lines.append("No events recorded in this window.")
    for c in report.get("containers", ()):
        rec = c.get("recorded")
        if not rec:
            continue
        lines += ["", f"### {md_text(c['name'])}: recorded figures", ""]
        metrics = [m for m, _ in _CONTAINER_CHARTS if m in rec]
        rows = [[_iso(rec["t"][i])[11:19]] + [_fmt(m, rec[m][i]) for m in metrics]
                for i in _pick(len(rec["t"]), MD_ROWS)]
        lines.append(md_table(["time (UTC)"] + [dict(_CONTAINER_CHARTS)[m] for m in metrics], rows))
    for g in report.get("gpus", ()):
        rec = g.get("recorded")
        if not rec:
            continue
        lines += ["", f"### GPU {g.get('index')}: recorded figures", ""]
        rows = [[_iso(rec["t"][i])[11:19]] + [_fmt(m, rec[m][i]) for m, _ in _GPU_CHARTS]
                for i in _pick(len(rec["t"]), MD_ROWS)]
        lines.append(md_table(["time (UTC)"] + [label for _, label in _GPU_CHARTS], rows))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML


def svg_chart(times: Sequence[float], values: Sequence[Any], label: str, metric: str, width: int = 640,
              height: int = 120) -> str:
    """One inline SVG line chart (polyline; gaps where values are missing), with min/max and the times."""
    idx = _pick(len(times), SVG_POINTS)
    known = [float(values[i]) for i in idx if values[i] is not None]
    if not known:
        return ""
    t0, t1 = times[0], times[-1] if times[-1] > times[0] else times[0] + 1
    top = max(known) or 1.0
    pad = 4
    segments: list[list[str]] = [[]]
    for i in idx:
        v = values[i]
        if v is None:
            if segments[-1]:
                segments.append([])
            continue
        x = pad + (times[i] - t0) / (t1 - t0) * (width - 2 * pad)
        y = height - pad - float(v) / top * (height - 2 * pad)
        segments[-1].append(f"{x:.1f},{y:.1f}")
    lines = "".join(f'<polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="{" ".join(s)}"/>'
                    for s in segments if s)
    caption = (f"{escape(label)} — max {escape(_fmt(metric, max(known)))}, last {escape(_fmt(metric, known[-1]))}"
               f" · {escape(_iso(t0)[11:19])} → {escape(_iso(times[-1])[11:19])} UTC")
    return (f'<figure class="chart"><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label, quote=True)}">'
            f'<rect width="{width}" height="{height}" fill="#f8fafc" stroke="#cbd5e1"/>{lines}</svg>'
            f"<figcaption>{caption}</figcaption></figure>")


def render_html_section(report: Mapping[str, Any]) -> str:
    window = report.get("history_window")
    if not window:
        return ""
    out = [f'<h2 id="history">History {escape(window["since"])} → {escape(window["until"])} '
           f'({int(window["sweeps"])} recorded sweeps)</h2>']
    timeline = report.get("timeline") or []
    out.append(f"<h3>Timeline ({len(timeline)} events)</h3>")
    if timeline:
        rows = "".join(
            f"<tr><td>{escape(e['time'])}</td><td>{escape(e['source'])}</td><td>{escape(e['kind'])}</td>"
            f"<td>{escape(str(e.get('container') or 'host'))}</td><td>{escape(_event_what(e))}</td></tr>"
            for e in timeline)
        out.append("<table><thead><tr><th>time</th><th>source</th><th>event</th><th>container</th>"
                   f"<th>what</th></tr></thead><tbody>{rows}</tbody></table>")
    else:
        out.append("<p>No events recorded in this window.</p>")
    for c in report.get("containers", ()):
        rec = c.get("recorded")
        if rec:
            out.append(f"<h3>{escape(c['name'])}: recorded figures</h3>")
            out.extend(svg_chart(rec["t"], rec[m], label, m) for m, label in _CONTAINER_CHARTS if m in rec)
    for g in report.get("gpus", ()):
        rec = g.get("recorded")
        if rec:
            out.append(f"<h3>GPU {escape(str(g.get('index')))}: recorded figures</h3>")
            out.extend(svg_chart(rec["t"], rec[m], label, m) for m, label in _GPU_CHARTS if m in rec)
    return "\n".join(out) + "\n"


def append_to_rendered(text: str, report: Mapping[str, Any], fmt: str) -> str:
    """The report.render() hook: the history section at the end of the Markdown, before </body> in HTML."""
    if fmt == "md":
        section = render_markdown_section(report)
        return text + ("\n" + section if section else "")
    if fmt == "html":
        section = render_html_section(report)
        marker = "</body></html>"
        if section and marker in text:
            head, _, tail = text.rpartition(marker)
            return head + section + marker + tail
    return text
