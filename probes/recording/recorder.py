"""The flight recorder: one writer thread puts each sweep, engine event and finding change into the database.

    recorder = Recorder(path, retention_s=7 * 86400, max_bytes=500 << 20)
    recorder.start()                      # raises RecorderLocked when another mltop records into `path`
    recorder.record(snapshot, doctor_result)   # from any thread; never blocks, never raises
    recorder.status                       # RecorderStatus: what the header and /healthz show
    recorder.close()

`recorder.attach(loop)` registers it on a serve loop (`loop.add_listener(callable(snapshot, doctor_result))`).
A full disk or a read-only path is reported in `status` and the sweep dropped; sampling never waits on it.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from ..model import Snapshot
from . import codec, retention
from .schema import connect_writer, write_transaction

DEFAULT_RETENTION_S = 7 * 86400
DEFAULT_MAX_BYTES = 500 * 1000 * 1000
RETENTION_EVERY_S = 60.0  # thinning and trimming run at most this often
_QUEUE_LIMIT = 256  # sweeps waiting for the writer; beyond, the oldest work is dropped (a stuck disk)


def default_history_path() -> str:
    """/var/lib/mltop/history.db as root, else $XDG_STATE_HOME/mltop/history.db (~/.local/state)."""
    if os.geteuid() == 0:
        return "/var/lib/mltop/history.db"
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "mltop", "history.db")


class RecorderLocked(Exception):
    """Another recorder holds the file."""


@dataclass(frozen=True)
class RecorderStatus:
    state: str  # "recording" | "error" | "stopped"
    path: str
    message: str | None = None
    sweeps: int = 0
    last_write_t: float | None = None

    @property
    def ok(self) -> bool:
        return self.state == "recording"

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "path": self.path, "message": self.message, "sweeps": self.sweeps,
                "last_write_t": self.last_write_t}


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


def _describe_db_error(exc: BaseException, path: str) -> str:
    text = str(exc)
    if "full" in text:
        return f"disk full: cannot write {path}; recording paused until there is room"
    if isinstance(exc, OSError) or any(words in text for words in (
            "readonly", "read-only", "Read-only", "Permission denied", "unable to open", "No such file")):
        return f"cannot write {path} ({text}); not recording"
    return f"recording into {path} failed: {text}"


class Recorder:
    def __init__(self, path: str | None = None, retention_s: float = DEFAULT_RETENTION_S,
                 max_bytes: int = DEFAULT_MAX_BYTES, docker_host: str | None = None, watch_engine: bool = True,
                 retention_every_s: float = RETENTION_EVERY_S):
        self.path = os.path.abspath(path or default_history_path())
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self.docker_host = docker_host
        self.watch_engine = watch_engine
        self.retention_every_s = retention_every_s
        from ..pod_events import PodEventTracker

        self._pods = PodEventTracker()  # pod containers' lifecycle, from successive sweeps (no CRI event stream)
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._status = RecorderStatus("stopped", self.path)
        self._watcher = None
        # writer-thread state
        self._hosts: dict[str, int] = {}
        self._gpu_ids: dict[str, int] = {}
        self._containers: dict[tuple, int] = {}
        self._last_seen: dict[int, int] = {}
        self._config_docs: dict[int, tuple[Any, str]] = {}
        self._last_retention = 0.0
        self._findings: dict[tuple[str, str | None], Any] = {}
        self._engine_ok: bool | None = None
        self._nvml_state: str | None = None
        self._xids_seen: set[tuple] | None = None  # (uuid, xid, t_ms, via) already stored; None: not loaded yet
        self._sweeps = 0
        self.cpu_s = 0.0  # writer thread CPU time, for the benchmark

    # -- life -------------------------------------------------------------------------------------

    @property
    def status(self) -> RecorderStatus:
        return self._status

    def start(self) -> "Recorder":
        """Take the file's lock and start the writer. RecorderLocked when another recorder has it; any other
        problem (read-only path, bad file) becomes an error status, and record() then does nothing."""
        self._take_lock()
        try:
            self._db = connect_writer(self.path)
            self._load_interned()
        except (sqlite3.Error, OSError, ValueError) as exc:
            self._status = RecorderStatus("error", self.path, _describe_db_error(exc, self.path))
            self._release_lock()
            return self
        self._status = RecorderStatus("recording", self.path)
        self._thread = threading.Thread(target=self._write_loop, name="mltop-recorder", daemon=True)
        self._thread.start()
        self.add_event(Event(time.time(), "mltop", "recorder_started", title=f"recording into {self.path}"))
        if self.watch_engine:
            self._start_watcher()
        return self

    def _take_lock(self) -> None:
        lock_path = self.path + ".lock"
        try:
            os.makedirs(os.path.dirname(lock_path), exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            # A path we cannot even create a lock in: the database open reports it as a status.
            self._lock_error = exc
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise RecorderLocked(f"another mltop is already recording into {self.path}{who}; "
                                 "use --record PATH for another file, or --no-record") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)  # closing drops the flock
            except OSError:
                pass
            self._lock_fd = None

    def close(self, timeout: float = 5.0) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
        self._release_lock()
        if self._status.state == "recording":
            self._status = RecorderStatus("stopped", self.path, sweeps=self._sweeps,
                                          last_write_t=self._status.last_write_t)

    # -- what callers hand over (any thread) ---------------------------------------------------------

    def __call__(self, snapshot: Snapshot, doctor_result: Any = None) -> None:
        """The serve loop's listener signature."""
        self.record(snapshot, doctor_result)

    def attach(self, loop: Any) -> "Recorder":
        loop.add_listener(self)
        return self

    def record(self, snapshot: Snapshot | None, doctor_result: Any = None) -> None:
        if self._thread is None:
            return
        self._put(("sweep", snapshot, doctor_result))

    def record_findings(self, findings: Iterable[Any], t: float | None = None) -> None:
        """A doctor run's findings; only appearing and clearing ones are stored."""
        if self._thread is None:
            return
        self._put(("findings", time.time() if t is None else t, tuple(findings)))

    def add_event(self, event: Event) -> None:
        if self._thread is None:
            return
        self._put(("event", event))

    def _put(self, item: tuple) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            try:
                self._queue.get_nowait()  # a stuck disk: keep the newest work
            except queue.Empty:
                pass
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                pass

    def enforce_retention(self, now_ms: int | None = None, timeout: float = 60.0) -> None:
        """Run retention now (as if the time were `now_ms`), in the writer thread, and wait for it."""
        self._put(("retention", now_ms or 0))
        self.flush(timeout)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything handed over so far is written (tests, shutdown)."""
        done = threading.Event()
        self._put(("flush", done))
        done.wait(timeout)

    # -- engine events ------------------------------------------------------------------------------

    def _start_watcher(self) -> None:
        from ..engine import Engine
        from ..engine_events import EngineEventWatcher

        def on_event(ev) -> None:
            detail = {k: v for k, v in (("exit_code", ev.exit_code), ("signal", ev.signal),
                                        ("health", ev.health)) if v is not None}
            self.add_event(Event(ev.time, "engine", ev.action, container_id=ev.container_id,
                                 container=ev.name, title=ev.image, detail=detail or None))

        self._watcher = EngineEventWatcher(Engine(self.docker_host), on_event)
        self._watcher.start()

    # -- the writer thread --------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            started = time.thread_time()
            pending = [item]
            # Events that arrived with the sweep go into its transaction.
            while item[0] != "sweep":
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._write(pending)
                    return
                pending.append(item)
            self._write(pending)
            self.cpu_s += time.thread_time() - started

    def _write(self, items: list[tuple]) -> None:
        db = self._db
        assert db is not None
        events: list[Event] = []
        sweep = None
        waiters = []
        forced_retention = None
        for item in items:
            kind = item[0]
            if kind == "sweep":
                sweep = item
            elif kind == "event":
                events.append(item[1])
            elif kind == "findings":
                events.extend(self._finding_changes(item[1], item[2]))
            elif kind == "flush":
                waiters.append(item[1])
            elif kind == "retention":
                forced_retention = item[1]
        try:
            with write_transaction(db):
                if sweep is not None and sweep[1] is not None:
                    snapshot, doctor_result = sweep[1], sweep[2]
                    events.extend(self._state_changes(snapshot))
                    events.extend(self._xid_changes(db, snapshot))
                    if doctor_result is not None:
                        events.extend(self._finding_changes(snapshot.taken_at,
                                                            getattr(doctor_result, "findings", ())))
                    self._write_sweep(db, snapshot)
                if events:
                    db.executemany(
                        "INSERT INTO events(t, source, kind, container_id, container, severity, code, title, "
                        "detail) VALUES (?,?,?,?,?,?,?,?,?)",
                        [(int(e.t * 1000), e.source, e.kind, e.container_id, e.container, e.severity, e.code,
                          e.title, json.dumps(e.detail) if e.detail else None) for e in events])
            if sweep is not None:
                self._sweeps += 1
            if sweep is not None or events:  # a write went through: any earlier error is over
                self._status = RecorderStatus("recording", self.path, sweeps=self._sweeps,
                                              last_write_t=time.time())
            now = time.monotonic()
            if forced_retention is not None or now - self._last_retention >= self.retention_every_s:
                self._last_retention = now
                if retention.enforce(db, self.retention_s, self.max_bytes, self._last_seen,
                                     now_ms=forced_retention or None, keep=set(self._containers.values())):
                    self._load_interned()
        except sqlite3.Error as exc:
            # Interned rows written in the failed transaction are gone: forget them so they are rewritten.
            self._load_interned()
            self._status = RecorderStatus("error", self.path, _describe_db_error(exc, self.path),
                                          sweeps=self._sweeps, last_write_t=self._status.last_write_t)
        finally:
            for waiter in waiters:
                waiter.set()

    def _write_sweep(self, db: sqlite3.Connection, snapshot: Snapshot) -> None:
        t = int(snapshot.taken_at * 1000)
        host = codec.host_doc(snapshot.host)
        hid = self._hosts.get(host)
        if hid is None:
            hid = self._hosts[host] = db.execute("INSERT INTO hosts(doc) VALUES (?)", (host,)).lastrowid
        cids = []
        cid_of: dict[str, int] = {}
        for c in snapshot.containers:
            config = self._config_doc(c.config)
            key = (c.id, c.name, c.image, config)
            cid = self._containers.get(key)
            if cid is None:  # new, or changed (renamed, re-inspected): rare, so one insert each for its id
                cid = self._containers[key] = db.execute(
                    "INSERT INTO containers(id, name, image, config, first_t, last_t) VALUES (?,?,?,?,?,?)",
                    (c.id, c.name, c.image, config, t, t)).lastrowid
            cids.append(cid)
            cid_of[c.id] = cid
            self._last_seen[cid] = t
        gpu_rows = []
        for g in snapshot.gpus:
            doc = codec.gpu_static_doc(g)
            gid = self._gpu_ids.get(doc)
            if gid is None:
                gid = self._gpu_ids[doc] = db.execute("INSERT INTO gpu_info(doc) VALUES (?)", (doc,)).lastrowid
            gpu_rows.append(codec.gpu_row(g, gid, cid_of))
        interval = None if snapshot.interval_s is None else int(snapshot.interval_s * 1000)
        db.execute("INSERT OR REPLACE INTO sweeps(t, interval_ms, hid, step_s, host_load, gpus, containers) "
                   "VALUES (?,?,?,0,?,?,?)",
                   (t, interval, hid, codec.host_load(snapshot.host), codec.pack_gpus(gpu_rows),
                    codec.pack_containers(snapshot.containers, cids)))

    def _config_doc(self, config: Any) -> str:
        # The sampler keeps one ContainerConfig per inspect, so most sweeps find it here by identity and
        # skip the JSON encoding.
        cached = self._config_docs.get(id(config))
        if cached is not None and cached[0] is config:
            return cached[1]
        if len(self._config_docs) > 4096:
            self._config_docs.clear()
        doc = codec.config_doc(config)
        self._config_docs[id(config)] = (config, doc)
        return doc

    def _load_interned(self) -> None:
        """Read back what the file already interns, so a restarted recorder reuses the rows."""
        db = self._db
        self._hosts, self._gpu_ids, self._containers = {}, {}, {}
        if db is None:
            return
        try:
            self._hosts = {doc: hid for hid, doc in db.execute("SELECT hid, doc FROM hosts")}
            self._gpu_ids = {doc: gid for gid, doc in db.execute("SELECT gid, doc FROM gpu_info")}
            for cid, cid_text, name, image, config in db.execute(
                    "SELECT cid, id, name, image, config FROM containers"):
                self._containers[(cid_text, name, image, config)] = cid
        except sqlite3.Error:
            pass

    # -- changes worth an event ---------------------------------------------------------------------

    def _state_changes(self, snapshot: Snapshot) -> list[Event]:
        out = []
        host, t = snapshot.host, snapshot.taken_at
        if self._engine_ok is not None and host.engine.ok != self._engine_ok:
            out.append(Event(t, "engine", "engine_up" if host.engine.ok else "engine_down",
                             title=None if host.engine.ok else host.engine.error))
        self._engine_ok = host.engine.ok
        state = host.nvml.status
        if self._nvml_state is not None and state != self._nvml_state and "disabled" not in (state,):
            out.append(Event(t, "nvml", "up" if state == "ok" else "down",
                             title=None if state == "ok" else (host.nvml.error or state)))
        self._nvml_state = state
        out += [Event(e.t, "cri", e.kind, container_id=e.container_id, container=e.container, title=e.title,
                      detail=e.detail) for e in self._pods.observe(snapshot)]
        return out

    def _xid_changes(self, db: sqlite3.Connection, snapshot: Snapshot) -> list[Event]:
        """One event per Xid not stored before, at the time the driver reported it. A GPU sample carries the
        probe's recent Xids (kernel-log ones from before mltop started included), so the Xids already in the
        file are read back once: a restarted recorder does not store them twice."""
        window = {(g.uuid, e.xid, int(e.time * 1000), e.source): (g, e) for g in snapshot.gpus for e in g.xid_events}
        if self._xids_seen is None:
            self._xids_seen = set()
            if window:
                since = min(key[2] for key in window)
                for t_ms, detail in db.execute("SELECT t, detail FROM events WHERE source = 'nvml' AND kind = 'xid' "
                                               "AND t >= ?", (since,)):
                    try:
                        d = json.loads(detail or "{}")
                        self._xids_seen.add((d.get("uuid"), d.get("xid"), t_ms, d.get("via")))
                    except ValueError:
                        continue
        out = []
        for key, (g, e) in sorted(window.items(), key=lambda kv: kv[0][2]):
            if key not in self._xids_seen:
                out.append(Event(e.time, "nvml", "xid", code=f"xid.{e.xid}", title=f"GPU {g.index}: Xid {e.xid}",
                                 detail={"gpu": g.index, "uuid": g.uuid, "xid": e.xid, "via": e.source,
                                         "pci_bus_id": e.pci_bus_id or g.pci_bus_id, "text": e.text}))
        # What the probe's window still holds (bounded like it); a GPU missing from this sweep (NVML down, GPU
        # lost) keeps its seen Xids, so they are not stored again when it is back.
        present = {g.uuid for g in snapshot.gpus}
        self._xids_seen = set(window) | {key for key in self._xids_seen if key[0] not in present}
        return out

    def _finding_changes(self, t: float, findings: Iterable[Any]) -> list[Event]:
        now = {(f.code, f.container): f for f in findings}
        out = []
        for key, f in now.items():
            if key not in self._findings:
                out.append(Event(t, "finding", "appeared", container=f.container, severity=f.severity,
                                 code=f.code, title=f.title,
                                 detail={"evidence": list(f.evidence), "fix": f.fix}))
        for key, f in self._findings.items():
            if key not in now:
                out.append(Event(t, "finding", "cleared", container=f.container, severity=f.severity,
                                 code=f.code, title=f.title))
        self._findings = now
        return out
