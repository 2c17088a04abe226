"""The flight recorder: sweeps, engine events and findings kept in SQLite, and read back as snapshots."""

from .entries import Event, RecorderStatus
from .recorder import (DEFAULT_MAX_BYTES, DEFAULT_RETENTION_S, Recorder, RecorderLocked,
                       default_history_path)
from .source import (RecordedEvent, RecordedFinding, RecordingSource, RecordingStore, parse_duration,
                     parse_size, parse_when)

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_RETENTION_S", "Event", "Recorder", "RecorderLocked", "RecorderStatus",
           "RecordedEvent", "RecordedFinding", "RecordingSource", "RecordingStore", "default_history_path",
           "parse_duration", "parse_size", "parse_when"]
