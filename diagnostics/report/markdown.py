"""The report as Markdown that pastes cleanly into a GitHub or Jira ticket: tables, and fenced logs and outputs."""

from __future__ import annotations

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
    gpu_row,
    history_heading,
    history_rows,
    host_rows,
    mount_rows,
    no_gpu_line,
    plain,
    process_rows,
    recorded_charts,
    recorded_rows,
    skipped_rows,
    summary_line,
    timeline_rows,
)


_MD_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "*": "\\*", "`": "\\`", "[": "\\[", "]": "\\]",
                             "<": "&lt;", ">": "&gt;", "#": "\\#", "~": "\\~"})


def md_text(value: Any) -> str:
    """Text from containers as inert Markdown: no markup, no HTML, no table breaks, no terminal escapes."""
    text = escaped(plain(value) if not isinstance(value, str) else (value or MISSING))
    return " ".join(text.translate(_MD_ESCAPES).splitlines()) if "\n" in text else text.translate(_MD_ESCAPES)


def _longest_backtick_run(text: str) -> int:
    longest = count = 0
    for ch in text:
        count = count + 1 if ch == "`" else 0
        longest = max(longest, count)
    return longest


def md_code(value: Any) -> str:
    """An inline code span that survives backticks inside and stays inside a table cell."""
    text = " ".join(escaped(value).split()) if value not in (None, "") else ""
    if not text:
        return MISSING
    fence = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    cell = text.replace("|", "\\|")
    return fence + pad + cell + pad + fence


def md_fence(text: str, info: str = "text") -> str:
    """A fenced block longer than any backtick run inside, so log lines cannot end it early."""
    text = escaped(text)
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
        cell = md_code(value) if label in code_labels and value not in (MISSING, None) else md_text(value)
        out.append(f"| **{label}** | {cell} |")
    return "\n".join(out)


_BADGE = {"critical": "🔴 critical", "warning": "🟠 warning", "info": "🔵 info"}


def render_markdown(report: Mapping[str, Any]) -> str:
    """The whole report, section by section."""
    out: list[str] = []
    for section in SECTIONS:
        section(report, out.append)
    return "\n".join(out).rstrip() + "\n"


Add = Callable[[str], None]


def _title(report: Mapping[str, Any], add: Add) -> None:
    gen = report["generator"]
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


def _findings(report: Mapping[str, Any], add: Add) -> None:
    add("")
    add("## Findings")
    add("")
    if report["findings"]:
        add(_findings_table(report["findings"]))
    else:
        add("No findings.")
    add("")
    add("### Checks skipped")
    add("")
    if report["checks_skipped"]:
        add(md_table(SKIPPED_HEADERS, skipped_rows(report), code_columns=(0,)))
    else:
        add("None.")


def _findings_table(findings: Iterable[Mapping[str, Any]]) -> str:
    lines = ["| Severity | Container | Check | Finding | Evidence | Fix |", "|---|---|---|---|---|---|"]
    for f in findings:
        evidence = "<br>".join(md_text(e) for e in f.get("evidence") or []) or MISSING
        sev = _BADGE.get(f.get("severity"), f.get("severity"))
        lines.append(f"| {sev} | {md_text(f.get('container') or 'host')} | {md_code(f.get('code'))} | "
                     f"{md_text(f.get('title'))} | {evidence} | {md_text(f.get('fix'))} |")
    return "\n".join(lines)


def _host(report: Mapping[str, Any], add: Add) -> None:
    add("")
    add("## Host")
    add("")
    add(md_pairs(host_rows(report)))
    if report["host"].get("limitations"):
        add("")
        for note in report["host"]["limitations"]:
            add(f"- {md_text(note)}")


def _gpus(report: Mapping[str, Any], add: Add) -> None:
    add("")
    add("## GPUs")
    add("")
    if not report["gpus"]:
        add(md_text(no_gpu_line(report)))
        return
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


def _pods(report: Mapping[str, Any], add: Add) -> None:
    """Per pod: who it is, its containers' restarts, GPUs allocated beside GPUs used, its findings, then each
    container's full section. Nothing for a report without pods."""
    if not report.get("pods"):
        return
    add("")
    add("## Pods")
    for pod in report["pods"]:
        add("")
        add(f"### Pod {md_text(pod_title(pod))} — {md_text(pod.get('qos') or 'QoS unknown')}")
        add("")
        add(md_pairs(pod_rows(pod), code_labels=("Pod UID",)))
        for heading, mapping in (("Labels", pod.get("labels")), ("Annotations", pod.get("annotations"))):
            rows = map_rows(mapping)
            body = md_table(MAP_HEADERS, rows, code_columns=(0,)) if rows else "None."
            _block(add, f"**{heading}** (redacted)", body)
        _block(add, "**Containers**", md_table(POD_CONTAINER_HEADERS, pod_container_rows(pod), code_columns=(6,)))
        allocations = allocation_rows(pod)
        _block(add, "**GPU allocation vs use**", md_table(ALLOCATION_HEADERS, allocations, code_columns=(2,))
               if allocations else "No GPU allocated to its containers, and none used by them.")
        findings = pod_findings(report, pod)
        _block(add, "**Findings**", _findings_table(findings) if findings else "No findings.")
        for name, tail in previous_log_tails(pod):
            add("")
            _log_tail(add, f"{md_text(name)}: the previous attempt's log", tail)
        for c in pod_container_docs(report, pod):
            _container(c, add, "####")


def _containers(report: Mapping[str, Any], add: Add) -> None:
    add("")
    add("## Containers")
    in_pods = pod_container_ids(report)
    others = [c for c in report["containers"] if c["id"] not in in_pods]
    if in_pods and not others:
        add("")
        add("None outside the pods above.")
    for c in others:
        _container(c, add)


def _container(c: Mapping[str, Any], add: Add, level: str = "###") -> None:
    add("")
    add(f"{level} {md_text(c['name'])} ({md_code(c['id'][:12])}) — {md_text(c['status'])}")
    add("")
    add(md_pairs(config_rows(c), code_labels=("Image", "Entrypoint", "Command")))
    add("")
    add("**Counters**")
    add("")
    add(md_pairs(counter_rows(c)))
    hist = history_rows(c.get("history"))
    if hist:
        _block(add, "**Recent history**", md_table(["Metric", "Last", "Min", "Max", "Trend"], hist, code_columns=(4,)))
    mounts = mount_rows(c)
    if mounts:
        _block(add, "**Mounts**", md_table(MOUNT_HEADERS, mounts, code_columns=(1, 2)))
    env = c["config"].get("env") or []
    if env:
        _block(add, "**Environment** (redacted)", md_fence("\n".join(f"{e['name']}={e['value']}" for e in env), "ini"))
    procs = process_rows(c)
    if procs:
        _block(add, "**Processes**", md_table(PROCESS_HEADERS, procs, code_columns=(6,)))
    add("")
    _log_tail(add, "Log tail", c.get("log_tail") or {})


def _log_tail(add: Add, what: str, tail: Mapping[str, Any]) -> None:
    """A log tail folded under its summary (how many lines, from where), or why there is none."""
    if tail.get("lines"):
        source = f" of {md_text(tail['source'])}" if tail.get("source") else ""
        add(f"<details><summary>{what} (last {len(tail['lines'])} lines{source})</summary>")
        add("")
        add(md_fence("\n".join(tail["lines"])))
        add("")
        add("</details>")
    else:
        add(f"{what}: {md_text(tail.get('error') or 'empty')}")


def _block(add: Add, heading: str, body: str) -> None:
    add("")
    add(heading)
    add("")
    add(body)


def _actions(report: Mapping[str, Any], add: Add) -> None:
    add("")
    add("## Actions run in this session")
    add("")
    if not report["actions"]:
        add("None.")
    for a in report["actions"]:
        add(f"### {md_text(action_title(a))}")
        add("")
        add(f"Command: {md_code(one_line(' '.join(a.get('command') or []))) if a.get('command') else MISSING} · started "
            f"{iso_utc(a.get('started_at'))}")
        if a.get("explanation"):
            add("")
            add(f"> {md_text(a['explanation'])}")
        add("")
        add(md_fence(a.get("output") or "(no output)"))
        add("")


def _history(report: Mapping[str, Any], add: Add) -> None:
    """The recorded timeline and figures (report_history.add_history), when the report carries them."""
    heading = history_heading(report)
    if heading is None:
        return
    add("")
    add(f"## {heading}")
    timeline = timeline_rows(report)
    _block(add, f"### Timeline ({len(timeline)} events)",
           md_table(TIMELINE_HEADERS, timeline) if timeline else "No events recorded in this window.")
    for title, rec, charts in recorded_charts(report):
        _block(add, f"### {md_text(title)}", md_table(*recorded_rows(rec, charts)))


SECTIONS: tuple[Callable[[Mapping[str, Any], Add], None], ...] = (
    _title, _findings, _host, _gpus, _pods, _containers, _actions, _history)
