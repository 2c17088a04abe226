"""Silences: findings the team already knows about, and GPUs set healthy after a repair, kept in the host's recording
(table `silences`, schema version 4) so the dashboard, `mltop doctor` and `mltop serve` share them.

    book = SilenceBook(path)                      # the recording's file (created if missing)
    book.add("gpu.xid", "gpu:0", until=time.time() + 7200, reason="ticket OPS-12")
    book.active(now)                              # what holds now: list[Silence]
    book.remove("gpu.xid", "gpu:0")
    book.set_healthy("gpu:0", reason="board swapped", detail={"uuid": ..., "ecc": {...}})

A write is one short BEGIN IMMEDIATE transaction on a connection of its own: the recorder's writer holds the file's
lock but never this table, and WAL lets a second writer in between its sweeps (each side waits up to the busy
timeout for the other). Each add and remove is also an event of the timeline (source "mltop", kind "silenced",
"unsilenced", "set_healthy") with its target, reason and end. Expired silences are listed as expired and dropped
from the table at the next add.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from ..safe_files import private_directory
from .schema import connect_reader, connect_writer, write_transaction

HEALTHY = "gpu.healthy_since"  # the code of a GPU's "set healthy" mark: its older Xid and ECC errors stop raising
HOST_WIDE = ""  # the target of a silence that holds for the code on the whole host
MAX_REASON = 500  # characters kept of a reason (the rest cut, shown with …)


@dataclass(frozen=True)
class Silence:
    sid: int
    code: str
    target: str  # HOST_WIDE, a container name, namespace/pod, gpu:N or gpu:UUID
    since: float
    until: float | None  # None: until removed
    reason: str
    detail: dict | None = None

    def active(self, now: float) -> bool:
        """Not ended at `now` (a sweep taken a moment before the silence was added is held by it too)."""
        return self.until is None or now < self.until

    @property
    def target_words(self) -> str:
        return self.target or "host-wide"

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        return {"code": self.code, "target": self.target, "since": self.since, "until": self.until,
                "reason": self.reason, "active": self.active(now), "detail": self.detail}


def check_target(target: str | None) -> str:
    """The stored form of a TARGET as the CLI and the dashboard take it; ValueError for one mltop cannot match."""
    target = (target or "").strip()
    if target.lower() in ("", "host", "-"):
        return HOST_WIDE
    if len(target) > 300 or any(ch.isspace() or not ch.isprintable() for ch in target):
        raise ValueError(f"not a target: {target[:40]!r} (a container name, namespace/pod, gpu:N or gpu:UUID)")
    if target.lower().startswith("gpu:"):
        ref = target[4:]
        if not ref or not (ref.isdigit() or ref.startswith(("GPU-", "MIG-"))):
            raise ValueError(f"not a GPU: {target!r} (gpu:0, or gpu:GPU-… with the UUID nvidia-smi -L shows)")
        return "gpu:" + ref
    return target


MAX_SECONDS = 366 * 86400


def silence_seconds(text: str) -> float:
    """How long a silence lasts, from what `--for` and the dashboard's box take (the durations --retention takes:
    90s, 2h, 1d); ValueError outside a second to a year."""
    from .source import parse_duration

    seconds = parse_duration(text)
    if not seconds or seconds != seconds or not 1 <= seconds <= MAX_SECONDS:
        raise ValueError(f"{text.strip()}: a silence lasts between a second and a year (90s, 2h, 1d)")
    return seconds


def check_reason(reason: str | None) -> str:
    text = " ".join((reason or "").split())  # one line: it is shown in a row, an event title and a label-free list
    if not text:
        raise ValueError("a silence needs a reason (--reason TEXT): who knows about it, which ticket")
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"


class SilenceBook:
    """The silences of one recording file; every call opens, does its work and closes (it is rare and short)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    # -- reading --------------------------------------------------------------------------------------

    def all(self) -> list[Silence]:
        """Every silence the file holds, expired ones included, oldest first; none for a file without them."""
        if not os.path.exists(self.path):
            return []
        try:
            db = connect_reader(self.path)
        except sqlite3.OperationalError:
            return []
        try:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'silences'").fetchone() is None:
                return []  # a version-3 recording: no silences yet
            rows = db.execute("SELECT sid, code, target, since, until, reason, detail FROM silences ORDER BY sid")
            return [_silence(row) for row in rows]
        finally:
            db.close()

    def active(self, now: float | None = None) -> list[Silence]:
        now = time.time() if now is None else now
        return [s for s in self.all() if s.active(now)]

    # -- writing --------------------------------------------------------------------------------------

    def _writer(self) -> sqlite3.Connection:
        private_directory(os.path.dirname(self.path))
        return connect_writer(self.path)  # creates and migrates; busy timeout 5 s against the recorder

    def add(self, code: str, target: str | None, until: float | None, reason: str, now: float | None = None,
            detail: dict | None = None) -> Silence:
        """Silence `code` for `target` until `until` (replacing one on the same code and target)."""
        now = time.time() if now is None else now
        code = code.strip()
        if not code or len(code) > 100 or any(ch.isspace() for ch in code):
            raise ValueError(f"not a finding code: {code[:40]!r} (e.g. gpu.xid, as `mltop doctor` shows it)")
        target, reason = check_target(target), check_reason(reason)
        if until is not None and until <= now:
            raise ValueError("a silence must end in the future")
        db = self._writer()
        try:
            with write_transaction(db):
                db.execute("DELETE FROM silences WHERE until IS NOT NULL AND until <= ?", (int(now * 1000),))
                db.execute("DELETE FROM silences WHERE code = ? AND target = ?", (code, target))
                sid = db.execute("INSERT INTO silences(code, target, since, until, reason, detail) VALUES "
                                 "(?,?,?,?,?,?)", (code, target, int(now * 1000),
                                                   None if until is None else int(until * 1000), reason,
                                                   json.dumps(detail) if detail else None)).lastrowid
                kind = "set_healthy" if code == HEALTHY else "silenced"
                ends = "until removed" if until is None else f"until {_clock(until)}"
                words = (f"{target} set healthy: older Xid and ECC errors no longer raise ({reason})"
                         if code == HEALTHY else f"{code} silenced for {target or 'the host'} {ends}: {reason}")
                _event(db, now, kind, code, target, words, {"target": target, "until": until, "reason": reason})
        finally:
            db.close()
        return Silence(sid, code, target, int(now * 1000) / 1000.0,
                       None if until is None else int(until * 1000) / 1000.0, reason, detail)

    def remove(self, code: str, target: str | None, now: float | None = None) -> int:
        """Lift the silences on `code` for `target`; returns how many there were (expired ones included)."""
        now = time.time() if now is None else now
        target = check_target(target)
        if not os.path.exists(self.path):
            return 0
        db = self._writer()
        try:
            with write_transaction(db):
                removed = db.execute("DELETE FROM silences WHERE code = ? AND target = ?", (code, target)).rowcount
                if removed:
                    what = "health mark" if code == HEALTHY else "silence"
                    _event(db, now, "unsilenced", code, target, f"{code} {what} removed for {target or 'the host'}",
                           {"target": target})
        finally:
            db.close()
        return removed

    def set_healthy(self, target: str, reason: str, now: float | None = None, detail: dict | None = None) -> Silence:
        """From now on, the GPU's Xid events up to now and its ECC counts as they are now (in `detail`) no longer
        raise gpu.xid / gpu.ecc; newer ones do."""
        target = check_target(target)
        if not target.startswith("gpu:"):
            raise ValueError(f"set-healthy takes a GPU (gpu:N or gpu:UUID), not {target or 'the host'!r}")
        return self.add(HEALTHY, target, None, reason or "set healthy after a repair", now=now, detail=detail)


def _silence(row) -> Silence:
    sid, code, target, since, until, reason, detail = row
    try:
        doc = json.loads(detail) if detail else None
    except ValueError:
        doc = None
    return Silence(sid, code, target, since / 1000.0, None if until is None else until / 1000.0, reason,
                   doc if isinstance(doc, dict) else None)


def _event(db: sqlite3.Connection, now: float, kind: str, code: str, target: str, title: str, detail: dict) -> None:
    container = None if target.startswith("gpu:") or not target else target
    db.execute("INSERT INTO events(t, source, kind, container_id, container, severity, code, title, detail) "
               "VALUES (?,?,?,?,?,?,?,?,?)", (int(now * 1000), "mltop", kind, None, container, None, code, title,
                                              json.dumps(detail)))


def _clock(t: float) -> str:
    from ..units import local_time

    return local_time(t)
