"""Reading a recording: RecordingStore answers queries (sweeps, events, series); RecordingSource is a
SnapshotSource over it with a cursor, so the dashboard replays with every screen unchanged."""

from __future__ import annotations

import bisect
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Iterator

from ..finding_record import INFO, SEVERITY_RANK, Finding
from ..model import Snapshot
from . import codec
from .schema import connect_reader


DECODED_CACHE = 1000  # decoded sweeps kept for graphs: a 5-minute window at 1 s, three times over


@dataclass(frozen=True)
class RecordedEvent:
    t: float
    source: str
    kind: str
    container_id: str | None
    container: str | None
    severity: str | None
    code: str | None
    title: str | None
    detail: dict | None

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "source": self.source, "kind": self.kind, "container_id": self.container_id,
                "container": self.container, "severity": self.severity, "code": self.code, "title": self.title,
                "detail": self.detail}


RecordedFinding = Finding  # a finding as the recorder stored it is the doctor's own record (no fix re-run)


class RecordingStore:
    """Read-only access to a history database; safe to use while a recorder writes it."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.db = connect_reader(path)
        except sqlite3.OperationalError:
            # A read-only open cannot recover a WAL left by a killed writer without its -shm: open normally.
            self.db = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
        self._hosts: dict[int, Any] = {}
        self._gpu_docs: dict[int, dict] = {}
        self._interned: dict[int, codec.Interned] = {}
        self._pod_facts: dict[int, tuple] = {}  # pfid -> (qos, allocations); none in a version-1 recording
        self._has_pod_facts = False  # (refresh looks)
        self.times: list[int] = []
        self._decoded_cache: dict[int, tuple[list, codec.ContainerColumns]] = {}
        self.refresh()

    def close(self) -> None:
        self.db.close()

    def refresh(self) -> None:
        """Pick up sweeps and names written since the last call."""
        last = self.times[-1] if self.times else -1
        self.times.extend(t for (t,) in self.db.execute(
            "SELECT t FROM sweeps INDEXED BY sweeps_by_t WHERE t > ? ORDER BY t", (last,)))
        if self.times and self.times[0] < (self.db.execute("SELECT MIN(t) FROM sweeps").fetchone()[0] or 0):
            self.times = [t for (t,) in self.db.execute("SELECT t FROM sweeps INDEXED BY sweeps_by_t ORDER BY t")]
        known = max(self._interned, default=0)
        for cid, cid_text, name, image, config in self.db.execute(
                "SELECT cid, id, name, image, config FROM containers WHERE cid > ?", (known,)):
            self._interned[cid] = codec.Interned(cid_text, name, image, codec.config_from_doc(config))
        known = max(self._gpu_docs, default=0)
        for gid, doc in self.db.execute("SELECT gid, doc FROM gpu_info WHERE gid > ?", (known,)):
            self._gpu_docs[gid] = json.loads(doc)
        if not self._has_pod_facts:  # a version-1 file still being written by a newer recorder migrates
            self._has_pod_facts = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pod_facts'").fetchone() is not None
        if self._has_pod_facts:
            known = max(self._pod_facts, default=0)
            for pfid, doc in self.db.execute("SELECT pfid, doc FROM pod_facts WHERE pfid > ?", (known,)):
                self._pod_facts[pfid] = codec.pod_facts_from_doc(doc)

    # -- sweeps -----------------------------------------------------------------------------------

    def index_at(self, t: float) -> int | None:
        """The position of the last sweep at or before `t` (the first one when `t` is earlier)."""
        if not self.times:
            return None
        i = bisect.bisect_right(self.times, int(t * 1000)) - 1
        return max(i, 0)

    def snapshot(self, t_ms: int) -> Snapshot | None:
        row = self.db.execute("SELECT t, interval_ms, hid, host_load, gpus, containers FROM sweeps WHERE t = ?",
                              (t_ms,)).fetchone()
        return None if row is None else self._build(row)

    def snapshots(self, t0: float, t1: float) -> Iterator[Snapshot]:
        for row in self.db.execute("SELECT t, interval_ms, hid, host_load, gpus, containers FROM sweeps "
                                   "WHERE t >= ? AND t <= ? ORDER BY t", (int(t0 * 1000), int(t1 * 1000))):
            yield self._build(row)

    def _host(self, hid: int, load: str | None):
        doc = self._hosts.get(hid)
        if doc is None:
            doc = self._hosts[hid] = self.db.execute("SELECT doc FROM hosts WHERE hid = ?", (hid,)).fetchone()[0]
        return codec.host_from_doc(doc, load)

    def _build(self, row) -> Snapshot:
        t, interval_ms, hid, load, gpus_blob, containers_blob = row
        cols = codec.unpack_containers(containers_blob)
        if any(cid not in self._interned for cid in cols.cids) or any(
                p != codec.NONE and p not in self._pod_facts for p in cols.pod_ids or ()):
            self.refresh()
        gpu_rows = codec.unpack_gpus(gpus_blob)
        runtimes = codec.container_runtimes(cols, self._interned, self._pod_facts)
        gpus = codec.build_gpus(gpu_rows, self._gpu_docs, self._interned, runtimes)
        containers = codec.build_containers(cols, self._interned, {g.index: g.uuid for g in gpus}, self._pod_facts,
                                            runtimes)
        return codec.build_snapshot(t, interval_ms, self._host(hid, load), gpus, containers)

    def series(self, t0: float, t1: float
               ) -> tuple[list[float], dict[str, dict[str, list]], dict[str, dict[str, list]]]:
        """Graph series straight from the blobs, without building snapshots: (times, per container id
        {metric: values}, per GPU uuid {metric: values}); metrics as probes.history names them."""
        from ..history import GPU_METRICS, container_gpu_percent

        times: list[float] = []
        containers: dict[str, dict[str, list]] = {}
        gpus: dict[str, dict[str, list]] = {}
        for n, (t, gpu_rows, cols) in enumerate(self._decoded(t0, t1)):
            times.append(t / 1000.0)
            gpu_util: dict[int, float | None] = {}
            for row in gpu_rows:
                gid, util, _mu, used_mib = row[:4]
                static = self._gpu_docs.get(gid)
                if static is None:
                    continue
                gpu_util[static["index"]] = util
                s = gpus.setdefault(static["uuid"], {m: [None] * n for m in GPU_METRICS})
                s["utilization_percent"].append(util)
                s["memory_used_bytes"].append(None if used_mib is None else used_mib * codec.MIB)
                gpm = codec.gpm_from_list(codec.row_gpm(row))  # None on GPUs without GPM: a gap, as live
                s["sm_active_percent"].append(gpm.sm_active_percent if gpm is not None else None)
                s["tensor_active_percent"].append(gpm.tensor_active_percent if gpm is not None else None)
            uses: dict[int, list] = {}
            for position, index, memory, sm in cols.gpu_uses:
                uses.setdefault(position, []).append((index, memory, sm))
            for i, cid in enumerate(cols.cids):
                who = self._interned.get(cid)
                if who is None:
                    continue
                s = containers.get(who.id)
                if s is None:
                    s = containers[who.id] = {m: [None] * n for m in
                                              ("cpu_percent", "memory_bytes", "gpu_percent", "gpu_memory_bytes")}
                mine = uses.get(i, ())
                memories = [m for _, m, _ in mine if m is not None]
                sms = [x for _, _, x in mine if x is not None]
                s["cpu_percent"].append(cols.values["cpu_percent"][i])
                s["memory_bytes"].append(cols.values["memory_bytes"][i])
                s["gpu_percent"].append(container_gpu_percent(
                    sum(sms) if sms else None, [gpu_util.get(index) for index, _, _ in mine]))
                s["gpu_memory_bytes"].append(
                    (sum(memories) if memories else None) if cols.statuses[i] == "running" else None)
            # Pad what did not appear in this sweep, so every series lines up with `times`.
            for group in (containers, gpus):
                for s in group.values():
                    for values in s.values():
                        if len(values) < n + 1:
                            values.append(None)
        return times, containers, gpus

    def _decoded(self, t0: float, t1: float) -> list[tuple[int, list, codec.ContainerColumns]]:
        """(t, GPU rows, container columns) of the sweeps in [t0, t1]; decoded sweeps are kept, so moving a
        minute through a replay decodes one minute, not the whole graph window again."""
        lo, hi = int(t0 * 1000), int(t1 * 1000)
        i, j = bisect.bisect_left(self.times, lo), bisect.bisect_right(self.times, hi)
        wanted = self.times[i:j]
        missing = [t for t in wanted if t not in self._decoded_cache]
        if missing:
            for t, gpus_blob, blob in self.db.execute(
                    "SELECT t, gpus, containers FROM sweeps WHERE t >= ? AND t <= ?", (missing[0], missing[-1])):
                if t in self._decoded_cache:
                    continue
                self._decoded_cache[t] = (codec.unpack_gpus(gpus_blob), codec.unpack_containers(blob))
            while len(self._decoded_cache) > DECODED_CACHE:
                self._decoded_cache.pop(next(iter(self._decoded_cache)))  # the oldest decoded first
        return [(t, *self._decoded_cache[t]) for t in wanted if t in self._decoded_cache]

    # -- events -----------------------------------------------------------------------------------

    def events(self, since: float | None = None, until: float | None = None, container: str | None = None,
               limit: int | None = None, newest_first: bool = False,
               container_name: str | None = None) -> list[RecordedEvent]:
        """Events in [since, until]; `container` matches a name, an id or an id prefix; `container_name`
        adds the events recorded by name only (findings) of the container `container` names by id."""
        sql = "SELECT t, source, kind, container_id, container, severity, code, title, detail FROM events WHERE 1"
        args: list[Any] = []
        if since is not None:
            sql += " AND t >= ?"
            args.append(int(since * 1000))
        if until is not None:
            sql += " AND t <= ?"
            args.append(int(until * 1000))
        if container:
            sql += " AND (container = ? OR container_id = ? OR container_id LIKE ? OR container = ?)"
            args += [container, container, container + "%", container_name or container]
        sql += " ORDER BY t DESC, eid DESC" if newest_first else " ORDER BY t, eid"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [RecordedEvent(t / 1000.0, source, kind, cid, name, severity, code, title,
                              json.loads(detail) if detail else None)
                for t, source, kind, cid, name, severity, code, title, detail in self.db.execute(sql, args)]

    def findings_at(self, t: float) -> list[RecordedFinding]:
        """The findings standing at `t` (see standing_findings)."""
        return standing_findings(self.db, t)


def standing_findings(db: sqlite3.Connection, t: float | None = None) -> list[RecordedFinding]:
    """The findings standing at `t` (default: the end of the recording): appeared and not cleared since. A
    recorder start that carries the open findings over (detail `carries_findings`) keeps them; an older one,
    which re-announced every finding, starts afresh."""
    active: dict[tuple, RecordedFinding] = {}
    sql = "SELECT source, kind, container, severity, code, title, detail FROM events WHERE source IN ('finding', 'mltop')"
    args: tuple = ()
    if t is not None:
        sql += " AND t <= ?"
        args = (int(t * 1000),)
    for source, kind, container, severity, code, title, detail in db.execute(sql + " ORDER BY t, eid", args):
        d = json.loads(detail) if detail else {}
        if source == "mltop":
            if kind == "recorder_started" and "carries_findings" not in d:
                active.clear()
            continue
        key = (code, container)
        if kind == "appeared":
            active[key] = Finding(code, severity if severity in SEVERITY_RANK else INFO, container, title or "",
                                  tuple(d.get("evidence") or ()), d.get("fix") or "")
        else:
            active.pop(key, None)
    return list(active.values())


class RecordingSource:
    """A recording as a SnapshotSource: `latest()` is the sweep at the cursor; helpers move the cursor.

    live is False, so the app shows REPLAY and runs no doctor of its own; cannot_act makes the action registry
    refuse every in-container action: the containers it shows are the past."""

    live = False
    cannot_act = "Replay shows recorded data"

    def __init__(self, path: str | RecordingStore, at: float | None = None):
        self.store = path if isinstance(path, RecordingStore) else RecordingStore(path)
        if not self.store.times:
            raise ValueError(f"{self.store.path} holds no sweeps yet")
        self.cursor = len(self.store.times) - 1 if at is None else self.store.index_at(at) or 0
        self._cache: tuple[int, Snapshot] | None = None

    # -- SnapshotSource -----------------------------------------------------------------------------

    def latest(self) -> Snapshot:
        t = self.store.times[self.cursor]
        if self._cache is None or self._cache[0] != t:
            snapshot = self.store.snapshot(t)
            if snapshot is None:  # thinned away under us by a recorder still writing
                self.store.times = []
                self.store.refresh()
                self.cursor = min(self.cursor, len(self.store.times) - 1)
                return self.latest()
            self._cache = (t, snapshot)
        return self._cache[1]

    def close(self) -> None:
        self.store.close()

    # -- time -------------------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """The recorded time of the sweep at the cursor."""
        return self.store.times[self.cursor] / 1000.0

    @property
    def horizon(self) -> float | None:
        """The end of the time the cursor's sweep stands for: just before the next sweep (None: the last)."""
        if self.cursor + 1 >= len(self.store.times):
            return None
        return (self.store.times[self.cursor + 1] - 1) / 1000.0

    @property
    def first_time(self) -> float:
        return self.store.times[0] / 1000.0

    @property
    def last_time(self) -> float:
        return self.store.times[-1] / 1000.0

    def at(self, t: float) -> Snapshot:
        self.seek(t)
        return self.latest()

    def range(self, t0: float, t1: float) -> Iterator[Snapshot]:
        return self.store.snapshots(t0, t1)

    def seek(self, t: float) -> None:
        self.cursor = self.store.index_at(t) or 0

    def step(self, sweeps: int) -> bool:
        """Move by whole sweeps; False when already at that end."""
        if sweeps > 0 and self.cursor == len(self.store.times) - 1:
            self.store.refresh()  # a recording still being written grows
        target = max(0, min(len(self.store.times) - 1, self.cursor + sweeps))
        moved = target != self.cursor
        self.cursor = target
        return moved

    def jump(self, seconds: float) -> bool:
        """Move by recorded time: to the last sweep at or before now+seconds (forward: the first after)."""
        before = self.cursor
        target = self.time + seconds
        if seconds >= 0:
            if self.cursor == len(self.store.times) - 1:
                self.store.refresh()
            i = bisect.bisect_left(self.store.times, int(target * 1000))
            self.cursor = min(i, len(self.store.times) - 1)
        else:
            self.seek(target)
        return self.cursor != before

    def findings(self) -> list[RecordedFinding]:
        return self.store.findings_at(self.time)

    def events(self, **kwargs) -> list[RecordedEvent]:
        return self.store.events(**kwargs)


def parse_when(text: str, now: float | None = None) -> float:
    """A time as the CLI and the `t` key take it: "2h" / "90s" / "15m" / "1d" ago, "-2h", an ISO time
    ("2026-11-29T03:12", local when no zone), "03:12" (today, local), or unix seconds."""
    from datetime import datetime

    now = time.time() if now is None else now
    s = text.strip()
    if not s:
        raise ValueError("empty time")
    ago = parse_duration(s.lstrip("-"), strict=False)
    if ago is not None:
        return now - ago
    try:
        value = float(s)
        if value > 1e8:
            return value
    except ValueError:
        pass
    if len(s) in (4, 5, 7, 8) and ":" in s:
        parts = [int(p) for p in s.split(":")]
        today = datetime.fromtimestamp(now)
        moment = today.replace(hour=parts[0], minute=parts[1], second=parts[2] if len(parts) > 2 else 0,
                               microsecond=0)
        return moment.timestamp()
    try:
        moment = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (try 2h, 03:12 or 2026-11-29T03:12)") from None
    return moment.timestamp()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, strict: bool = True) -> float | None:
    """"90s", "15m", "2h", "7d", "1w" in seconds; None (or ValueError when strict) for anything else."""
    s = text.strip().lower()
    if len(s) >= 2 and s[-1] in _UNITS:
        try:
            return float(s[:-1]) * _UNITS[s[-1]]
        except ValueError:
            pass
    if strict:
        raise ValueError(f"not a duration: {text!r} (try 90s, 15m, 2h, 7d)")
    return None


def format_duration(seconds: float) -> str:
    """A duration as people read it: 45s, 7m25s, 3h05m, 2d04h."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def parse_size(text: str) -> int:
    """"500MB", "2GB", "100M", "1GiB", or bytes."""
    s = text.strip().upper().replace(" ", "")
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40, "KB": 10 ** 3, "MB": 10 ** 6,
             "GB": 10 ** 9, "TB": 10 ** 12, "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "B": 1}
    for unit in sorted(units, key=len, reverse=True):
        if s.endswith(unit):
            try:
                return int(float(s[: -len(unit)]) * units[unit])
            except ValueError:
                break
    try:
        return int(s)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (try 500MB or 2GB)") from None
