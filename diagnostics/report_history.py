"""Reports with the past: the recorded timeline and, per container and GPU in the report, the recorded
figures over a window (`mltop report --since 2h`, replay's `r`), added to a report document; everything passes
the report's redaction again. The renderers in report/ show them (compact tables in Markdown, inline SVG
charts in HTML)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mltop.probes.units import iso_utc

from .report.document import redact_document

REPORT_WINDOW_S = 15 * 60  # replay's `r`: this long either side of the time shown


def add_history(report: dict[str, Any], store: Any, since: float, until: float,
                selected: Sequence[str] | None = None) -> dict[str, Any]:
    """The report with "history_window", "timeline" and, per container and GPU, "recorded": {"t": [...],
    metric: [...]} (times in unix seconds), read from a RecordingStore. With `selected` (the containers the
    report was limited to), the timeline keeps their events and the host's. Redacted again before returning."""
    times, containers, gpus = store.series(since, until)
    names = {c["name"] for c in report.get("containers", ())}
    ids = {c["id"] for c in report.get("containers", ())}
    every = not selected
    events = [e for e in store.events(since=since, until=until)
              if e.container is None and e.container_id is None or e.container in names or e.container_id in ids
              or every]
    out = dict(report)
    out["history_window"] = {"since": iso_utc(since), "until": iso_utc(until), "sweeps": len(times)}
    out["timeline"] = [{**e.to_json(), "time": iso_utc(e.t)} for e in events]
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
