"""The report as one self-contained HTML file: inline CSS, no scripts, every value html-escaped."""

from __future__ import annotations

from html import escape
from typing import Any, Callable, Iterable, Mapping, Sequence

from mltop.probes.redaction import REDACTED
from mltop.probes.units import MISSING, iso_utc

from ..inert import escaped
from ..one_line import one_line
from .pods import (
    ALLOCATION_HEADERS,
    MAP_HEADERS,
    POD_CONTAINER_HEADERS,
    allocation_rows,
    map_rows,
    pod_container_docs,
    pod_container_ids,
    pod_container_rows,
    pod_findings,
    pod_rows,
    pod_title,
    previous_log_tails,
)
from .rows import (
    GPU_HEADERS,
    GPU_PROCESS_HEADERS,
    MOUNT_HEADERS,
    PROCESS_HEADERS,
    SKIPPED_HEADERS,
    TIMELINE_HEADERS,
    action_title,
    config_rows,
    counter_rows,
    gpu_process_rows,
    figure,
    gpu_row,
    history_heading,
    history_rows,
    host_rows,
    mount_rows,
    no_gpu_line,
    plain,
    process_rows,
    recorded_charts,
    skipped_rows,
    spread,
    summary_line,
    timeline_rows,
)

CSS = """
:root { color-scheme: light dark; --fg:#1f2328; --muted:#59636e; --bg:#fff; --panel:#f6f8fa; --line:#d1d9e0;
  --crit:#cf222e; --warn:#9a6700; --info:#0969da; --ok:#1a7f37; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6edf3; --muted:#9198a1; --bg:#0d1117; --panel:#151b23;
  --line:#3d444d; --crit:#ff7b72; --warn:#d29922; --info:#58a6ff; --ok:#3fb950; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1200px; padding: 24px; font: 14px/1.5 system-ui, -apple-system, "Segoe UI",
  Helvetica, Arial, sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid var(--line);
  padding-bottom: 4px; } h3 { font-size: 16px; margin: 24px 0 8px; } h4 { font-size: 14px; margin: 16px 0 6px; }
.meta, .muted { color: var(--muted); } nav { margin: 12px 0; } nav a { margin-right: 14px; }
a { color: var(--info); }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top;
  overflow-wrap: break-word; }
th { background: var(--panel); font-weight: 600; white-space: nowrap; }
/* names, check codes, ids and figures never break inside a word (`acc-noto|olkit`, `toolk|it.mi|ssing`) */
td.name, td.code, td.num { white-space: nowrap; word-break: keep-all; overflow-wrap: normal; }
/* free text and long paths wrap, at a word if they can, anywhere if they must, so the page keeps its width */
td.text { overflow-wrap: anywhere; min-width: 12em; }
table.kv th { width: 220px; white-space: normal; } table.kv td { overflow-wrap: anywhere; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px; overflow-x: auto;
  font: 12px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre; max-height: 600px; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  color: #fff; white-space: nowrap; }
.critical { background: var(--crit); } .warning { background: var(--warn); } .info { background: var(--info); }
.ok { background: var(--ok); } .failed, .timeout { background: var(--crit); }
.unavailable, .cancelled { background: var(--warn); }
.summary { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; }
.container { border: 1px solid var(--line); border-radius: 8px; padding: 4px 16px 12px; margin: 16px 0; }
.explain { border-left: 4px solid var(--warn); padding: 4px 12px; background: var(--panel); }
details summary { cursor: pointer; color: var(--info); margin: 6px 0; }
ul.evidence { margin: 0; padding-left: 18px; }
.spark { font-family: ui-monospace, monospace; letter-spacing: -1px; }
@media print {
  :root { color-scheme: light; --fg:#000; --muted:#444; --bg:#fff; --panel:#f3f3f3; --line:#bbb; }
  body { max-width: none; padding: 0; font-size: 11px; }
  table { font-size: 10px; } code, pre { font-size: 9.5px; }
  pre { white-space: pre-wrap; overflow-wrap: anywhere; max-height: none; overflow: visible; }
  nav { display: none; }
  h2, h3, h4, summary { break-after: avoid; } .badge { break-inside: avoid; }
  td.text { min-width: 7em; }
  .container { break-inside: auto; }
  .badge { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; text-decoration: none; }
}
@page { margin: 12mm; }
"""


def _e(value: Any) -> str:
    return escape(escaped(plain(value) if not isinstance(value, str) else (value or MISSING)), quote=True)


def _pre(text: str) -> str:
    """A block of container text (logs, outputs): html-escaped, terminal escapes written out."""
    return escape(escaped(text))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], code_columns: Sequence[int] = (),
           css: str = "", kinds: Mapping[int, str] | None = None) -> str:
    """`kinds`: a cell class per column: `name`, `code` and `num` never break, `text` wraps anywhere."""
    kinds = kinds or {}
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            cls = f' class="{kinds[i]}"' if i in kinds else ""
            cells.append(f"<td{cls}><code>{_e(v)}</code></td>" if i in code_columns else f"<td{cls}>{_e(v)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pairs(rows: Iterable[tuple[str, Any]], code_labels: Sequence[str] = ()) -> str:
    body = []
    for label, value in rows:
        cell = f"<code>{_e(value)}</code>" if label in code_labels and value not in (MISSING, None) else _e(value)
        body.append(f"<tr><th>{escape(label)}</th><td>{cell}</td></tr>")
    return f"<table class=\"kv\"><tbody>{''.join(body)}</tbody></table>"


def _badge(kind: Any) -> str:
    kind = str(kind or "")
    css = kind if kind in ("critical", "warning", "info", "ok", "failed", "timeout", "unavailable", "cancelled") else ""
    return f'<span class="badge {css}">{escape(kind)}</span>'


def _anchor(prefix: str, value: str) -> str:
    return prefix + "-" + "".join(ch if ch.isalnum() else "-" for ch in value)[:60]


Add = Callable[[str], None]


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report, section by section, as one page."""
    parts: list[str] = []
    for section in SECTIONS:
        section(report, parts.append)
    return "\n".join(parts) + "\n"


def _head(report: Mapping[str, Any], add: Add) -> None:
    gen = report["generator"]
    host = report["host"]
    add("<!DOCTYPE html>")
    add('<html lang="en"><head><meta charset="utf-8">')
    add('<meta name="viewport" content="width=device-width, initial-scale=1">')
    add(f"<title>mltop report — {_e(host['hostname'])}</title>")
    add(f"<style>{CSS}</style></head><body>")
    add(f"<h1>mltop diagnostic report — {_e(host['hostname'])}</h1>")
    add(f'<div class="meta">Generated {_e(gen["generated_at"])} by mltop {_e(gen["version"])} · snapshot taken '
        f'{_e(report["snapshot"]["taken_at"])} · report schema {_e(report["schema_version"])} · secrets are '
        f"replaced by <code>{escape(REDACTED)}</code></div>")
    add('<nav><a href="#findings">Findings</a><a href="#host">Host</a><a href="#gpus">GPUs</a>'
        + ('<a href="#pods">Pods</a>' if report.get("pods") else "")
        + '<a href="#containers">Containers</a><a href="#actions">Actions</a></nav>')
    add(f'<p class="summary">{_e(summary_line(report))}</p>')
    if report.get("missing_containers"):
        add(f"<p><strong>Not found:</strong> {_e(', '.join(report['missing_containers']))}</p>")


def _findings(report: Mapping[str, Any], add: Add) -> None:
    add('<h2 id="findings">Findings</h2>')
    if report["findings"]:
        add(_findings_table(report["findings"]))
    else:
        add("<p>No findings.</p>")
    add("<h3>Checks skipped</h3>")
    if report["checks_skipped"]:
        add(_table(SKIPPED_HEADERS, skipped_rows(report), code_columns=(0,), kinds={0: "code", 1: "name", 2: "text"}))
    else:
        add("<p>None.</p>")


def _findings_table(findings: Iterable[Mapping[str, Any]]) -> str:
    rows = []
    for f in findings:
        evidence = "".join(f"<li>{_e(e)}</li>" for e in f.get("evidence") or [])
        rows.append(
            f"<tr><td>{_badge(f.get('severity'))}</td><td class=\"name\">{_e(f.get('container') or 'host')}</td>"
            f"<td class=\"code\"><code>{_e(f.get('code'))}</code></td><td class=\"text\">{_e(f.get('title'))}</td>"
            f"<td class=\"text\"><ul class=\"evidence\">{evidence}</ul></td><td class=\"text\">{_e(f.get('fix'))}</td></tr>"
        )
    return ("<table><thead><tr><th>Severity</th><th>Container</th><th>Check</th><th>Finding</th><th>Evidence</th>"
            f"<th>Fix</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _host(report: Mapping[str, Any], add: Add) -> None:
    host = report["host"]
    add('<h2 id="host">Host</h2>')
    add(_pairs(host_rows(report)))
    if host.get("limitations"):
        add("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in host["limitations"]) + "</ul>")


def _gpus(report: Mapping[str, Any], add: Add) -> None:
    add('<h2 id="gpus">GPUs</h2>')
    if not report["gpus"]:
        add(f"<p>{_e(no_gpu_line(report))}</p>")
        return
    add(_table(GPU_HEADERS, [gpu_row(g) for g in report["gpus"]], code_columns=(8,),
               kinds={0: "num", 2: "code", 3: "num", 4: "num", 5: "num", 6: "num", 8: "code"}))
    procs = gpu_process_rows(report)
    add("<h4>GPU processes (host PIDs, attributed to containers)</h4>")
    add(_table(GPU_PROCESS_HEADERS, procs, kinds={0: "num", 1: "num", 2: "name", 4: "num", 5: "num", 6: "text"})
        if procs else "<p>None.</p>")
    for g in report["gpus"]:
        if g.get("unavailable"):
            items = "".join(f"<li>{_e(k)}: {_e(v)}</li>" for k, v in g["unavailable"].items())
            add(f"<p>GPU {_e(g['index'])} fields not available:</p><ul>{items}</ul>")


def _pods(report: Mapping[str, Any], add: Add) -> None:
    """Per pod: who it is, its containers' restarts, GPUs allocated beside GPUs used, its findings, then each
    container's full section. Nothing for a report without pods."""
    if not report.get("pods"):
        return
    add('<h2 id="pods">Pods</h2>')
    add("<p>" + " · ".join(f'<a href="#{_anchor("pod", p["pod_uid"] or pod_title(p))}">{_e(pod_title(p))}</a>'
                           for p in report["pods"]) + "</p>")
    for pod in report["pods"]:
        add(f'<section class="container" id="{_anchor("pod", pod["pod_uid"] or pod_title(pod))}">')
        add(f"<h3>Pod {_e(pod_title(pod))} <span class=\"muted\">{_e(pod.get('qos') or 'QoS unknown')}</span></h3>")
        add(_pairs(pod_rows(pod), code_labels=("Pod UID",)))
        for heading, mapping in (("Labels", pod.get("labels")), ("Annotations", pod.get("annotations"))):
            rows = map_rows(mapping)
            add(f"<h4>{heading} (redacted)</h4>")
            add(_table(MAP_HEADERS, rows, code_columns=(0,), kinds={0: "code", 1: "text"}) if rows else "<p>None.</p>")
        add("<h4>Containers</h4>")
        add(_table(POD_CONTAINER_HEADERS, pod_container_rows(pod),
                   kinds={0: "name", 1: "text", 2: "num", 3: "text", 4: "text", 5: "text", 6: "text"}))
        allocations = allocation_rows(pod)
        add("<h4>GPU allocation vs use</h4>")
        add(_table(ALLOCATION_HEADERS, allocations, code_columns=(2,),
                   kinds={0: "name", 1: "num", 2: "text", 3: "text", 4: "text"}) if allocations
            else "<p>No GPU allocated to its containers, and none used by them.</p>")
        findings = pod_findings(report, pod)
        add("<h4>Findings</h4>")
        add(_findings_table(findings) if findings else "<p>No findings.</p>")
        for name, tail in previous_log_tails(pod):
            what = f"{_e(name)}: the previous attempt's log"
            if tail.get("lines"):
                add(f"<details><summary>{what} (last {len(tail['lines'])} lines of {_e(tail['source'])})</summary>"
                    f"<pre>{_pre(chr(10).join(tail['lines']))}</pre></details>")
            else:
                add(f"<p class=\"muted\">{what}: {_e(tail.get('error') or 'empty')}</p>")
        for c in pod_container_docs(report, pod):
            _container(c, add, "h4")
        add("</section>")


def _containers(report: Mapping[str, Any], add: Add) -> None:
    add('<h2 id="containers">Containers</h2>')
    in_pods = pod_container_ids(report)
    others = [c for c in report["containers"] if c["id"] not in in_pods]
    if others:
        add("<p>" + " · ".join(f'<a href="#{_anchor("c", c["id"])}">{_e(c["name"])}</a>'
                               for c in others) + "</p>")
    elif in_pods:
        add("<p>None outside the pods above.</p>")
    for c in others:
        _container(c, add)


def _container(c: Mapping[str, Any], add: Add, heading: str = "h3") -> None:
    add(f'<section class="container" id="{_anchor("c", c["id"])}">')
    add(f"<{heading}>{_e(c['name'])} <code class=\"muted\">{_e(c['id'][:12])}</code> {_badge(c['status'])}</{heading}>")
    add(_pairs(config_rows(c), code_labels=("Image", "Entrypoint", "Command")))
    add("<h4>Counters</h4>")
    add(_pairs(counter_rows(c)))
    hist = history_rows(c.get("history"))
    if hist:
        add("<h4>Recent history</h4>")
        rows = "".join(
            f"<tr><td>{_e(m)}</td><td>{_e(last)}</td><td>{_e(lo)}</td><td>{_e(hi)}</td>"
            f'<td class="spark">{_e(spark)}</td></tr>' for m, last, lo, hi, spark in hist)
        add("<table><thead><tr><th>Metric</th><th>Last</th><th>Min</th><th>Max</th><th>Trend</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")
    mounts = mount_rows(c)
    if mounts:
        add("<h4>Mounts</h4>")
        add(_table(MOUNT_HEADERS, mounts, code_columns=(1, 2), kinds={1: "text", 2: "text"}))
    env = c["config"].get("env") or []
    if env:
        add("<h4>Environment (redacted)</h4>")
        add("<pre>" + _pre("\n".join(f"{e['name']}={e['value']}" for e in env)) + "</pre>")
    procs = process_rows(c)
    if procs:
        add("<h4>Processes</h4>")
        add(_table(PROCESS_HEADERS, procs, code_columns=(6,),
                   kinds={0: "num", 1: "num", 2: "name", 3: "num", 4: "num", 5: "num", 6: "text"}))
    tail = c.get("log_tail") or {}
    if tail.get("lines"):
        source = f" of {_e(tail['source'])}" if tail.get("source") else ""
        add(f"<details><summary>Log tail (last {len(tail['lines'])} lines{source})</summary>"
            f"<pre>{_pre(chr(10).join(tail['lines']))}</pre></details>")
    else:
        add(f"<p class=\"muted\">Log tail: {_e(tail.get('error') or 'empty')}</p>")
    add("</section>")


def _actions(report: Mapping[str, Any], add: Add) -> None:
    add('<h2 id="actions">Actions run in this session</h2>')
    if not report["actions"]:
        add("<p>None.</p>")
    for a in report["actions"]:
        command = one_line(" ".join(a.get("command") or []))
        add(f"<h3>{_badge(a.get('status'))} {_e(action_title(a))}</h3>")
        add(f"<p class=\"muted\">Command: <code>{_e(command)}</code> · started {_e(iso_utc(a.get('started_at')))}</p>")
        if a.get("explanation"):
            add(f'<p class="explain">{_e(a["explanation"])}</p>')
        add(f"<details open><summary>Output</summary><pre>{_pre(a.get('output') or '(no output)')}</pre></details>")


SVG_POINTS = 400  # charts are downsampled to about this many points


def _history(report: Mapping[str, Any], add: Add) -> None:
    """The recorded timeline and figures as inline SVG charts (report_history.add_history), when carried."""
    heading = history_heading(report)
    if heading is None:
        return
    add(f'<h2 id="history">{_e(heading)}</h2>')
    timeline = timeline_rows(report)
    add(f"<h3>Timeline ({len(timeline)} events)</h3>")
    add(_table(TIMELINE_HEADERS, timeline, kinds={0: "num", 1: "code", 2: "code", 3: "name", 4: "text"})
        if timeline else "<p>No events recorded in this window.</p>")
    for title, rec, charts in recorded_charts(report):
        add(f"<h3>{_e(title)}</h3>")
        for metric, label in charts:
            chart = svg_chart(rec["t"], rec[metric], label, metric)
            if chart:
                add(chart)


def svg_chart(times: Sequence[float], values: Sequence[Any], label: str, metric: str, width: int = 640,
              height: int = 120) -> str:
    """One inline SVG line chart (polyline; gaps where values are missing), with min/max and the times."""
    idx = spread(len(times), SVG_POINTS)
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
    caption = (f"{escape(label)} — max {escape(figure(metric, max(known)))}, last {escape(figure(metric, known[-1]))}"
               f" · {escape((iso_utc(t0) or '')[11:19])} → {escape((iso_utc(times[-1]) or '')[11:19])} UTC")
    return (f'<figure class="chart"><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label, quote=True)}">'
            f'<rect width="{width}" height="{height}" fill="#f8fafc" stroke="#cbd5e1"/>{lines}</svg>'
            f"<figcaption>{caption}</figcaption></figure>")


def _foot(report: Mapping[str, Any], add: Add) -> None:
    add("</body></html>")


SECTIONS: tuple[Callable[[Mapping[str, Any], Add], None], ...] = (
    _head, _findings, _host, _gpus, _pods, _containers, _actions, _history, _foot)
