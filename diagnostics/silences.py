"""Silences applied to a doctor run: a GPU set healthy has its older Xid events and ECC counts left out before the
checks judge it, and a finding a silence holds is marked (shown dimmed, no exit code, silenced="true")."""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

from mltop.probes.gpu_records import GpuSample
from mltop.probes.model import Snapshot
from mltop.probes.recording.silences import HEALTHY, Silence

from .findings import Finding

# ECC counts a set-healthy mark takes as its baseline (detail["ecc"]); only errors past them raise gpu.ecc again
ECC_FIELDS = ("ecc_volatile_uncorrected", "ecc_aggregate_uncorrected", "remapped_rows_uncorrectable")


def gpu_of(ref: str, gpus: Sequence[GpuSample]) -> GpuSample | None:
    """The GPU a `gpu:N` / `gpu:UUID` target names in this snapshot."""
    ref = ref[4:] if ref.startswith("gpu:") else ref
    for g in gpus:
        if (ref.isdigit() and g.index == int(ref)) or g.uuid == ref:
            return g
    return None


def _mark_uuid(s: Silence, gpus: Sequence[GpuSample]) -> str | None:
    uuid = (s.detail or {}).get("uuid")
    if isinstance(uuid, str):
        return uuid  # resolved when it was set: a renumbering after a reboot does not move it to another board
    g = gpu_of(s.target, gpus)
    return g.uuid if g is not None else None


def healthy_gpus(snapshot: Snapshot, silences: Iterable[Silence]) -> Snapshot:
    """The snapshot with each GPU set healthy judged from its mark on: Xid events up to the mark dropped, ECC counts
    taken relative to those the mark recorded (a reset that zeroed them leaves nothing to subtract)."""
    marks: dict[str, Silence] = {}
    for s in silences:
        if s.code == HEALTHY:
            uuid = _mark_uuid(s, snapshot.gpus)
            if uuid is not None and (uuid not in marks or marks[uuid].since < s.since):
                marks[uuid] = s
    if not marks:
        return snapshot
    gpus = []
    for g in snapshot.gpus:
        mark = marks.get(g.uuid)
        if mark is None:
            gpus.append(g)
            continue
        changes: dict = {"xid_events": tuple(e for e in g.xid_events if e.time > mark.since)}
        baseline = (mark.detail or {}).get("ecc") or {}
        for field in ECC_FIELDS:
            now, then = getattr(g, field, None), baseline.get(field)
            if isinstance(now, int) and isinstance(then, int) and now >= then:
                changes[field] = now - then
        if isinstance(baseline.get("remapped_rows_failed"), bool) and baseline["remapped_rows_failed"]:
            changes["remapped_rows_failed"] = False  # failed before the repair; a new failure cannot be told apart
        gpus.append(dataclasses.replace(g, **changes))
    return dataclasses.replace(snapshot, gpus=tuple(gpus))


def matches(s: Silence, f: Finding, snapshot: Snapshot | None) -> bool:
    """Whether silence `s` holds finding `f`: the same code, and the target host-wide, the finding's container, its
    pod (namespace/pod: every container of it), or its GPU (gpu:N or gpu:UUID)."""
    if s.code != f.code:
        return False
    if not s.target:
        return True
    if s.target.startswith("gpu:"):
        if f.gpu is None:
            return False
        ref = s.target[4:]
        if ref == f.gpu:
            return True
        g = gpu_of(s.target, snapshot.gpus) if snapshot is not None else None
        return g is not None and g.uuid == f.gpu
    if f.container is None:
        return False
    return f.container == s.target or f.container.startswith(s.target + "/")


def mark_silenced(findings: Iterable[Finding], silences: Iterable[Silence], snapshot: Snapshot | None,
                  now: float) -> list[Finding]:
    """The findings, each one an active silence holds carrying it (`Finding.silenced`)."""
    holding = [s for s in silences if s.code != HEALTHY and s.active(now)]
    out = []
    for f in findings:
        s = next((s for s in holding if matches(s, f, snapshot)), None)
        out.append(f if s is None else dataclasses.replace(f, silenced=s))
    return out


def remark(result, silences: Iterable[Silence], snapshot: Snapshot | None, now: float):
    """A DoctorResult with its findings marked afresh: a silence added since the run holds, one that ended no
    longer does (the agent re-marks its last run every sweep, between doctor runs)."""
    plain = [dataclasses.replace(f, silenced=None) if f.silenced is not None else f for f in result.findings]
    marked = tuple(mark_silenced(plain, silences, snapshot, now))
    if all(a.silenced == b.silenced for a, b in zip(marked, result.findings)):
        return result  # unchanged: the published state stays the same object (the exposition's cache holds)
    return dataclasses.replace(result, findings=marked)


class SilenceCache:
    """The silences of one recording, read again at most every `every_s` seconds (the agent asks every sweep); a
    file that cannot be read gives none, logged once per problem."""

    def __init__(self, book, every_s: float = 2.0, clock=None):
        import time

        self.book = book
        self.every_s = every_s
        self._clock = clock or time.monotonic
        self._read_at: float | None = None
        self._silences: list[Silence] = []
        self._problem: str | None = None

    def current(self) -> list[Silence]:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self.every_s:
            self._read_at = now
            try:
                self._silences, self._problem = self.book.all(), None
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
                if problem != self._problem:
                    import logging

                    logging.getLogger(__name__).warning("cannot read the silences in %s: %s", self.book.path, problem)
                self._silences, self._problem = [], problem
        return self._silences


def silence_words(s: Silence, now: float | None = None) -> str:
    """"until 14:05 (in 1h59m): ticket OPS-12", a silence as the doctor and the dashboard show it."""
    import time

    from mltop.probes.recording.source import format_duration
    from mltop.probes.units import local_time

    if getattr(s, "words", None):  # a fleet host's (probes.fleet_host.RemoteSilence): only that it is silenced
        return s.words
    if s.until is None:
        return f"until removed: {s.reason}"
    now = time.time() if now is None else now
    return f"until {local_time(s.until)} (in {format_duration(s.until - now)}): {s.reason}"
