"""What a recorded event says, in words: the one summary the timeline screen, `mltop events` and reports show."""

from __future__ import annotations

from typing import Any, Mapping


def event_summary(e: Any) -> str:
    """What happened, in words: the exit code of a die, the health of a health_status, a finding's title.

    `e` is a recorded event (probes.recording.RecordedEvent) or its `to_json()` document, as a report holds it.
    """
    get = e.get if isinstance(e, Mapping) else (lambda key: getattr(e, key, None))
    source, kind, title = get("source"), get("kind"), get("title")
    d = get("detail") or {}
    if source == "finding":
        return f"{get('severity') or ''} {get('code') or ''}: {title or ''}".strip()
    if kind == "die":
        text = f"exit code {d.get('exit_code', '?')}"
        return text + (" (137: killed, often the OOM killer)" if d.get("exit_code") == 137 else "")
    if kind == "oom" and d.get("via") == "cgroup":  # a pod container's cgroup counted it (probes/pod_events.py)
        return f"OOM kill {d.get('oom_kills', '')} in its cgroup".replace("  ", " ")
    if kind == "restart" and d.get("restart_count") is not None:
        return f"restart {d['restart_count']} (a new container)"
    if kind == "kill" and d.get("signal") is not None:
        return f"signal {d['signal']}"
    if kind == "health_status":
        return str(d.get("health") or "")
    if source == "engine" and get("container") is None:
        return title or ""
    if source in ("nvml", "mltop"):
        return title or ""
    return f"image {title}" if title else ""
