"""The finding record and its severities: what the doctor's checks conclude (diagnostics/), and what the flight
recorder stores and replay reads back (recording/), so both hold one shape and one order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CRITICAL = "critical"
WARNING = "warning"
INFO = "info"
SEVERITIES = (CRITICAL, WARNING, INFO)  # most severe first
SEVERITY_RANK = {INFO: 0, WARNING: 1, CRITICAL: 2}


@dataclass(frozen=True)
class Finding:
    """One diagnosis: a stable `code`, how bad it is, whom it concerns, why we think so and what to do.

    `container` is the container name, or None for the host. `evidence` lines read "value — source"
    (see diagnostics.findings.evidence()); text that came from a container (log lines, State.Error) is quoted
    verbatim inside them as plain data.
    """

    code: str
    severity: str
    container: str | None
    title: str
    evidence: tuple[str, ...]
    fix: str
    gpu: str | None = None  # the UUID of the GPU a host finding is about (a silence on gpu:N matches it)
    silenced: Any = None  # the recording's Silence that holds it (it is shown dimmed and makes no exit code)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {self.severity!r} (expected one of {SEVERITIES})")

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "container": self.container,
            "title": self.title,
            "evidence": list(self.evidence),
            "fix": self.fix,
            **({"silenced": {"target": self.silenced.target, "until": self.silenced.until,
                             "reason": self.silenced.reason}} if self.silenced is not None else {}),
        }
