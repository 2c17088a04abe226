"""Which findings appeared and which cleared, remembered across restarts: a recorder that starts on an existing
recording carries over the findings still open at its end, so a restart does not announce them again."""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable

from ..units import local_time
from .entries import Event
from .source import format_duration, standing_findings


class FindingChanges:
    """The open findings by (code, container); `changes()` turns a doctor run into appeared/cleared events."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str | None], Any] = {}
        # (time of the recording's last sweep, the keys carried from it): until the first doctor run after a
        # start, whose cleared findings went away while nothing recorded
        self._carried: tuple[float | None, set] | None = None

    def carry_over(self, db: sqlite3.Connection, started: float) -> int:
        """Read the findings open at the end of the recording in `db`; returns how many."""
        self.open = {(f.code, f.container): f for f in standing_findings(db)}
        row = db.execute("SELECT MAX(t) FROM sweeps").fetchone()
        last = row[0] / 1000.0 if row and row[0] is not None else None
        self._carried = (last, set(self.open), started) if self.open else None
        return len(self.open)

    def changes(self, t: float, findings: Iterable[Any]) -> list[Event]:
        now = {(f.code, f.container): f for f in findings}
        carried, self._carried = self._carried, None
        out = []
        for key, f in now.items():
            if key not in self.open:
                out.append(Event(t, "finding", "appeared", container=f.container, severity=f.severity,
                                 code=f.code, title=f.title, detail={"evidence": list(f.evidence), "fix": f.fix}))
        for key, f in self.open.items():
            if key in now:
                continue
            title, detail = f.title, None
            if carried is not None and key in carried[1]:
                title, detail = _cleared_while_down(f.title, carried[0], carried[2])
            out.append(Event(t, "finding", "cleared", container=f.container, severity=f.severity, code=f.code,
                             title=title, detail=detail))
        self.open = now
        return out


def _cleared_while_down(title: str, last: float | None, started: float) -> tuple[str, dict]:
    """A finding open when the recording last stopped and gone at the first doctor run after the restart: it
    cleared in the gap, when nothing recorded (the event's time is when it was noticed)."""
    if last is None:
        return f"{title} (cleared before mltop started recording again)", {"while_down": True}
    gap = format_duration(started - last)
    when = local_time(last, with_date=False)
    return (f"{title} (cleared while mltop was not recording: last recorded {when}, back {gap} later)",
            {"while_down": True, "last_recorded_t": last, "restarted_t": started, "gap_s": round(started - last, 3)})
