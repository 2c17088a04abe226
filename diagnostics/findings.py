"""Findings together: severity labels, the order they are shown in, evidence lines, and the exit code they make.
The Finding record every check produces and the severity order are probes.finding_record's."""

from __future__ import annotations

from typing import Iterable

# The record and the order live with the recorder's, which stores and replays findings (probes cannot import
# diagnostics); the doctor's vocabulary is re-exported from here.
from mltop.probes.finding_record import CRITICAL, INFO, SEVERITIES, SEVERITY_RANK, WARNING, Finding

__all__ = ["CRITICAL", "EXIT_CRITICAL", "EXIT_OK", "EXIT_WARNING", "INFO", "SEVERITIES", "SEVERITY_LABEL",
           "SEVERITY_RANK", "WARNING", "Finding", "count_by_severity", "evidence", "exit_code", "severity_order",
           "sort_findings", "worst_by_container", "worst_severity"]

SEVERITY_LABEL = {CRITICAL: "CRITICAL", WARNING: "WARNING", INFO: "info"}  # shouted when it needs acting on


def severity_order(severity: str | None) -> int:
    """Sort key, most severe first; an unknown severity sorts last."""
    return -SEVERITY_RANK.get(severity, -1) if severity is not None else 1


def count_by_severity(severities: Iterable[str | None]) -> dict[str, int]:
    """{critical: n, warning: n, info: n}, most severe first."""
    listed = list(severities)
    return {s: listed.count(s) for s in SEVERITIES}

# `mltop doctor` exit codes: nothing worse than info, worst is a warning, anything critical.
EXIT_OK = 0
EXIT_WARNING = 1
EXIT_CRITICAL = 2


def evidence(fact: str, source: str) -> str:
    """One evidence line: the exact value read, then where it was read from."""
    return f"{fact} — {source}"


def worst_severity(findings: Iterable[Finding]) -> str | None:
    """The most severe severity among `findings`, or None when there are none."""
    worst: str | None = None
    for f in findings:
        if worst is None or f.rank > SEVERITY_RANK[worst]:
            worst = f.severity
    return worst


def worst_by_container(findings: Iterable[Finding]) -> dict[str | None, str]:
    """{container name: its worst severity} for row markers; host findings sit under the key None."""
    out: dict[str | None, str] = {}
    for f in findings:
        current = out.get(f.container)
        if current is None or f.rank > SEVERITY_RANK[current]:
            out[f.container] = f.severity
    return out


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Host first, then containers with the worst findings first; within a group, most severe first."""
    findings = list(findings)
    worst = worst_by_container(findings)

    def key(f: Finding) -> tuple:
        group_is_container = f.container is not None
        return (group_is_container, -SEVERITY_RANK[worst[f.container]], f.container or "", -f.rank, f.code)

    return sorted(findings, key=key)


def exit_code(findings: Iterable[Finding]) -> int:
    """0 when nothing is a warning or worse, 1 when the worst is a warning, 2 when anything is critical; a silenced
    finding counts for nothing."""
    worst = worst_severity(f for f in findings if f.silenced is None)
    if worst == CRITICAL:
        return EXIT_CRITICAL
    if worst == WARNING:
        return EXIT_WARNING
    return EXIT_OK
