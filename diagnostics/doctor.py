"""Run every check over one snapshot and collect the findings; a broken check is skipped, never raised."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

from mltop.probes.model import SCHEMA_VERSION, Snapshot

from .checks import CONTAINER_CHECKS, HOST_CHECKS, CheckContext, CheckSkipped, HostProbe, Thresholds
from .findings import Finding, exit_code, sort_findings, worst_by_container
from .read_test import ReadTestResult, timed_direct_read

log = logging.getLogger(__name__)

__all__ = ["DoctorResult", "SkippedCheck", "run_doctor", "worst_by_container"]


@dataclass(frozen=True)
class SkippedCheck:
    check: str
    reason: str


@dataclass(frozen=True)
class DoctorResult:
    findings: tuple[Finding, ...]  # host first, then containers worst first; most severe first in each
    checks_skipped: tuple[SkippedCheck, ...]
    containers_checked: tuple[str, ...] = ()  # names, in snapshot order
    missing: tuple[str, ...] = ()  # requested container names/ids the snapshot does not hold

    @property
    def exit_code(self) -> int:
        return exit_code(self.findings)

    def worst_by_container(self) -> dict[str | None, str]:
        return worst_by_container(self.findings)

    def to_json(self) -> dict[str, Any]:
        """The documented `mltop doctor --json` document."""
        return {
            "schema_version": SCHEMA_VERSION,
            "findings": [f.to_json() for f in self.findings],
            "checks_skipped": [{"check": s.check, "reason": s.reason} for s in self.checks_skipped],
        }


class _Skips:
    """Collects skipped checks, folding the same reason for many containers into one entry."""

    def __init__(self) -> None:
        self._order: list[tuple[str, str]] = []
        self._names: dict[tuple[str, str], list[str]] = {}

    def add(self, check: str, reason: str, container: str | None = None) -> None:
        key = (check, reason)
        if key not in self._names:
            self._order.append(key)
            self._names[key] = []
        if container is not None and container not in self._names[key]:
            self._names[key].append(container)

    def result(self) -> tuple[SkippedCheck, ...]:
        out = []
        for check, reason in self._order:
            names = self._names[(check, reason)]
            if names and not any(n in reason for n in names):
                reason = f"{reason} (containers: {', '.join(names)})"
            out.append(SkippedCheck(check, reason))
        return tuple(out)


def run_doctor(
    snapshot: Snapshot,
    engine,
    containers: Iterable[str] | None = None,
    thresholds: Thresholds = Thresholds(),
    io_test: str | None = None,
    *,
    previous: Snapshot | None = None,
    host: HostProbe | None = None,
    log_tail: int = 200,
    io_test_max_mb: int = 256,
    io_test_timeout_s: float = 30.0,
) -> DoctorResult:
    """Diagnose the host and the containers of `snapshot` (all, or those named/id-prefixed in `containers`).

    `engine` (probes.engine.Engine, or None) supplies recent logs (`log_tail` lines per container) and runs
    the `io_test` read (a path inside the containers) by docker exec. `previous`, an earlier snapshot of the
    same sampler, lets checks see counters rise. Safe to call from a worker thread; never raises for a
    failing check or source: those land in `checks_skipped` with the reason.
    """
    selected, missing = snapshot.select(containers)
    skips = _Skips()
    host = host or HostProbe()
    engine_ok = engine is not None and snapshot.host.engine.ok

    logs: dict[str, tuple[str, ...]] = {}
    for c in selected:
        if not engine_ok:
            skips.add("logs", "the Docker engine is not reachable: log-based checks ran without logs", c.name)
            continue
        try:
            logs[c.id] = tuple(engine.logs(c.id, tail=log_tail))
        except Exception as exc:  # removed meanwhile, engine hiccup: judge without its logs
            skips.add("logs", f"could not read the logs: {type(exc).__name__}: {exc}", c.name)

    read_tests: dict[str, ReadTestResult] = {}
    if io_test:
        for c in selected:
            if not c.running:
                skips.add("io.read_test", "the container is not running", c.name)
            elif not engine_ok:
                skips.add("io.read_test", "the Docker engine is not reachable", c.name)
            else:
                try:
                    read_tests[c.id] = timed_direct_read(engine, c.id, io_test, io_test_max_mb, io_test_timeout_s)
                except Exception as exc:
                    skips.add("io.read_test", f"docker exec failed: {type(exc).__name__}: {exc}", c.name)

    ctx = CheckContext(snapshot=snapshot, containers=selected, logs=logs, host=host, thresholds=thresholds,
                       log_tail=log_tail, previous=previous, read_tests=read_tests)
    findings: list[Finding] = []
    for name, check in HOST_CHECKS:
        try:
            findings += check(ctx)
        except CheckSkipped as skipped:
            skips.add(name, str(skipped))
        except Exception as exc:
            log.exception("check %s failed", name)
            skips.add(name, f"the check failed: {type(exc).__name__}: {exc}")
    for c in selected:
        for name, check in CONTAINER_CHECKS:
            try:
                findings += check(ctx, c)
            except CheckSkipped as skipped:
                skips.add(name, str(skipped), c.name)
            except Exception as exc:
                log.exception("check %s failed for %s", name, c.name)
                skips.add(name, f"the check failed: {type(exc).__name__}: {exc}", c.name)
    return DoctorResult(
        findings=tuple(sort_findings(findings)),
        checks_skipped=skips.result(),
        containers_checked=tuple(c.name for c in selected),
        missing=missing,
    )
