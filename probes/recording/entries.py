"""What the recorder is handed (Event) and what it says about itself (RecorderStatus)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One event to store; `detail` is JSON-ready."""

    t: float
    source: str
    kind: str
    container_id: str | None = None
    container: str | None = None
    severity: str | None = None
    code: str | None = None
    title: str | None = None
    detail: dict | None = None


@dataclass(frozen=True)
class RecorderStatus:
    """The recorder as the header, /healthz and the mltop_recorder_* series show it. The counts run from the
    recorder's start: sweeps and events written, work dropped unwritten (a full queue, a close past its
    deadline) and writes that failed (a full disk, a value the codec cannot encode), each logged."""

    state: str  # "recording" | "error" (the last write failed on the database: full disk, read-only) | "stopped"
    path: str
    message: str | None = None  # the last problem, in words
    sweeps: int = 0
    last_write_t: float | None = None
    events: int = 0
    dropped: int = 0
    failed: int = 0

    @property
    def ok(self) -> bool:
        return self.state == "recording"

    @property
    def clean(self) -> bool:
        """Recording, and nothing was ever lost."""
        return self.ok and not self.dropped and not self.failed

    def summary(self) -> str:
        """One short line: "rec ✓", "rec ⚠ 3 failed, 12 dropped", "rec ✗ error"."""
        losses = ", ".join(f"{n} {what}" for n, what in ((self.failed, "failed"), (self.dropped, "dropped")) if n)
        if self.state == "error":
            return "rec ✗ " + (losses or "error")
        if self.state == "stopped":
            return "rec stopped" + (f" ({losses})" if losses else "")
        return f"rec ⚠ {losses}" if losses else "rec ✓"

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "path": self.path, "message": self.message, "sweeps": self.sweeps,
                "events": self.events, "dropped": self.dropped, "failed": self.failed,
                "last_write_t": self.last_write_t}
