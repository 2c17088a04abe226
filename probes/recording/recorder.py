"""The flight recorder: one writer thread puts each sweep, engine event and finding change into the database.

    recorder = Recorder(path, retention_s=7 * 86400, max_bytes=500 << 20)
    recorder.start()                      # raises RecorderLocked when another mltop records into `path`
    recorder.record(snapshot, doctor_result)   # from any thread; never blocks, never raises
    recorder.status                       # RecorderStatus: what the header and /healthz show
    recorder.close()

`recorder.attach(loop)` registers it on a serve loop (`loop.add_listener(callable(snapshot, doctor_result))`).
A full disk or a read-only path is reported in `status` and the sweep dropped; sampling never waits on it.
Nothing ends the writer: every failed write is logged with its exception and counted (`status.failed`), work
dropped on a full queue or at close is counted (`status.dropped`), and close() returns within its timeout.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import sqlite3
import struct
import threading
import time
import zlib
from typing import Any, Iterable

from ..model import Snapshot
from ..safe_files import UnsafeFile, open_private, private_directory
from ..units import local_time
from . import codec, retention
from .entries import Event, RecorderStatus
from .finding_changes import FindingChanges
from .schema import connect_writer, write_transaction

log = logging.getLogger(__name__)

DEFAULT_RETENTION_S = 7 * 86400
DEFAULT_MAX_BYTES = 500 * 1000 * 1000
RETENTION_EVERY_S = 60.0  # thinning and trimming run at most this often
HOSTS_REMEMBERED = 16  # host docs the writer keeps the ids of (the most recent): they differ by container counts
_QUEUE_LIMIT = 256  # sweeps waiting for the writer; beyond, the oldest work is dropped (a stuck disk)
REPEAT_LOG_S = 60.0  # the same write failure again, or more drops: one log line a minute, with the count


def default_history_path() -> str:
    """/var/lib/mltop/history.db as root, else $XDG_STATE_HOME/mltop/history.db (~/.local/state)."""
    if os.geteuid() == 0:
        return "/var/lib/mltop/history.db"
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "mltop", "history.db")


class RecorderLocked(Exception):
    """Another recorder holds the file."""


def _describe_db_error(exc: BaseException, path: str) -> str:
    if isinstance(exc, UnsafeFile):
        return f"{exc.strerror}; not recording"
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
        self._lock_error: OSError | None = None
        self._db: sqlite3.Connection | None = None
        self._state, self._message = "stopped", None
        self._last_write_t: float | None = None
        self._events_written = 0
        self._dropped = 0
        self._failed = 0
        self._count_lock = threading.Lock()  # `dropped` is counted by whichever thread hands work over
        self._said: dict[str, tuple[str, float, int]] = {}  # what -> (last text logged, when, repeats since)
        self._close_deadline: float | None = None  # monotonic; past it the writer drops what is left
        self._subscription = None  # to the engine's events feed
        # writer-thread state. What is interned is remembered for what the last sweep held only (hosts: the
        # last few): a node that runs thousands of short jobs a day would otherwise keep every container it
        # ever ran (a returning one is found again in the file's tables... or written once more, harmlessly).
        self._hosts: dict[str, int] = {}
        self._gpu_ids: dict[str, int] = {}
        self._containers: dict[tuple, int] = {}  # (id, name, image, config doc) -> cid, of the last sweep
        self._last_seen: dict[int, int] = {}
        self._config_docs: dict[int, tuple[Any, str]] = {}  # id(config) -> (config, doc), of the last sweep
        self._pod_facts = codec.PodFactIds()
        self._last_retention = 0.0
        self._used_after_retention: int | None = None  # the data's size after the last pass: growth is since then
        self._findings = FindingChanges()
        self._engine_ok: bool | None = None
        self._nvml_state: str | None = None
        self._xids_seen: set[tuple] | None = None  # (uuid, xid, t_ms, via) already stored; None: not loaded yet
        self._sweeps = 0
        self.cpu_s = 0.0  # writer thread CPU time, for the benchmark

    # -- life -------------------------------------------------------------------------------------

    @property
    def status(self) -> RecorderStatus:
        state, message = self._state, self._message
        thread = self._thread
        if state != "stopped" and thread is not None and not thread.is_alive() and self._close_deadline is None:
            state, message = "error", "the recorder's writer thread ended; not recording"  # never expected
        return RecorderStatus(state, self.path, message, sweeps=self._sweeps, last_write_t=self._last_write_t,
                              events=self._events_written, dropped=self._dropped, failed=self._failed)

    def start(self) -> "Recorder":
        """Take the file's lock and start the writer. RecorderLocked when another recorder has it; any other
        problem (read-only path, bad file) becomes an error status, and record() then does nothing."""
        try:
            loose = private_directory(os.path.dirname(self.path))
        except OSError as exc:
            loose = None  # cannot create it: the lock and the database open report it
            log.debug("cannot create the directory of %s: %s", self.path, exc)
        if loose:
            log.warning("recording into %s: %s", self.path, loose)
        self._take_lock()
        if isinstance(self._lock_error, UnsafeFile):  # a planted lock: refused, and the database left alone
            self._state, self._message = "error", _describe_db_error(self._lock_error, self.path)
            log.warning("cannot record into %s: %s", self.path, self._message)
            return self
        started = time.time()
        try:
            self._db = connect_writer(self.path)
            retention.bound_wal(self._db, self.max_bytes)
            self._load_interned()
            carried = self._findings.carry_over(self._db, started)
        except (sqlite3.Error, OSError, ValueError) as exc:
            self._state, self._message = "error", _describe_db_error(exc, self.path)
            log.warning("cannot record into %s", self.path, exc_info=True)
            if self._db is not None:
                self._db.close()
                self._db = None
            self._release_lock()
            return self
        self._state, self._message = "recording", None
        self._thread = threading.Thread(target=self._write_loop, name="mltop-recorder", daemon=True)
        self._thread.start()
        # carries_findings: the findings open at the recording's end stay open (none is announced again)
        self.add_event(Event(started, "mltop", "recorder_started", title=f"recording into {self.path}",
                             detail={"carries_findings": carried}))
        if self.watch_engine:
            self._subscribe_to_engine()
        return self

    def _take_lock(self) -> None:
        lock_path = self.path + ".lock"
        self._lock_error = None
        try:
            fd = open_private(lock_path)  # 0600, never through a link: it is truncated and written below
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
        """Write what is queued, for at most `timeout` seconds: what is left then is dropped, counted and
        logged, so quitting never hangs on a stuck disk. The writer closes the file when it ends."""
        deadline = time.monotonic() + timeout
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        thread, self._thread = self._thread, None
        if thread is None:
            self._release_lock()
        else:
            self._close_deadline = deadline
            try:
                self._queue.put(None, timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Full:
                pass  # the writer is busy: it sees the deadline after its current write
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                left = self._drain("the recorder's close passed its deadline")
                log.warning("the recorder did not finish within %.1f s: %d queued items dropped unwritten; its "
                            "current write ends in the background", timeout, left)
        if self._state == "recording":
            self._state = "stopped"

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
            return
        except queue.Full:
            pass
        # A stuck disk: keep the newest work, count what goes.
        try:
            oldest = self._queue.get_nowait()
        except queue.Empty:
            oldest = None
        self._discard(oldest, "the recorder's queue is full (the disk is slower than the sampling)")
        try:
            self._queue.put_nowait(item)
        except queue.Full:  # others filled it meanwhile: this one goes instead
            self._discard(item, "the recorder's queue is full (the disk is slower than the sampling)")

    def _discard(self, item: tuple | None, why: str) -> None:
        """Count an item that will never be written; wake a waiter that will never be served."""
        if item is None:
            return
        if item[0] == "flush":
            item[1].set()
            return
        if item[0] == "retention":
            return
        with self._count_lock:
            self._dropped += 1
            dropped = self._dropped
        self._say("dropped", f"{why}: work dropped unwritten ({dropped} so far)", None, same_as=why)

    def _drain(self, why: str) -> int:
        """Drop everything queued (counted); returns how many items of work went."""
        before = self._dropped
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return self._dropped - before
            self._discard(item, why)

    def _say(self, what: str, text: str, exc: BaseException | None, same_as: str | None = None) -> None:
        """Log a problem with its exception; the same problem again at most once a minute, with the count."""
        now = time.monotonic()
        last = self._said.get(what)
        key = same_as or (text if exc is None else f"{type(exc).__name__}: {exc}")
        if last is not None and last[0] == key and now - last[1] < REPEAT_LOG_S:
            self._said[what] = (last[0], last[1], last[2] + 1)
            return
        repeats = f" (and {last[2]} more like the last one)" if last and last[2] else ""
        self._said[what] = (key, now, 0)
        log.warning("%s%s", text, repeats, exc_info=(type(exc), exc, exc.__traceback__) if exc else None)

    def enforce_retention(self, now_ms: int | None = None, timeout: float = 60.0) -> None:
        """Run retention now (as if the time were `now_ms`), in the writer thread, and wait for it."""
        if self._thread is None:
            return
        self._queue.put(("retention", now_ms or 0), timeout=timeout)
        self.flush(timeout)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything handed over so far is written (tests, shutdown)."""
        if self._thread is None:
            return
        done = threading.Event()
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(("flush", done), timeout=timeout)  # waits for room: never drops work
        except queue.Full:
            return
        done.wait(max(deadline - time.monotonic(), 0.0))

    # -- engine events ------------------------------------------------------------------------------

    def _subscribe_to_engine(self) -> None:
        from ..engine import Engine
        from ..engine_events import parse_engine_event, subscribe_engine_events

        def on_event(raw: dict) -> None:
            ev = parse_engine_event(raw)
            if ev is None:
                return
            detail = {k: v for k, v in (("exit_code", ev.exit_code), ("signal", ev.signal),
                                        ("health", ev.health)) if v is not None}
            self.add_event(Event(ev.time, "engine", ev.action, container_id=ev.container_id,
                                 container=ev.name, title=ev.image, detail=detail or None))

        # the one events stream of this process for the engine (the catalog reads the same one)
        def on_gap(since: float, until: float) -> None:
            self.add_event(Event(until, "mltop", "events_gap", title="the engine no longer had its events from "
                                 f"{local_time(since, with_date=False)} on (it keeps its last 256): "
                                 "some may be missing here", detail={"since": since, "until": until}))

        engine = Engine(self.docker_host)
        if engine.disabled:  # --docker-host none: no engine, no events to record from it
            return
        self._subscription = subscribe_engine_events(engine, on_event, since=time.time(), on_gap=on_gap)

    @property
    def engine_events(self):
        """The engine events feed's status (None when not watching the engine)."""
        sub = self._subscription
        return None if sub is None else sub.feed.status

    # -- the writer thread --------------------------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                pending = [item]
                # Events that arrived with the sweep go into its transaction.
                while item[0] != "sweep":
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._write_guarded(pending)
                        return
                    pending.append(item)
                self._write_guarded(pending)
                if self._close_deadline is not None and time.monotonic() >= self._close_deadline:
                    left = self._drain("the recorder's close passed its deadline")
                    if left:
                        log.warning("the recorder's close passed its deadline: %d queued items dropped", left)
                    return
        finally:
            if self._db is not None:
                try:
                    # when each container was last seen, so that a restarted recorder's retention (which knows
                    # only the containers it sees again) keeps the names of those that ended just before
                    retention.note_last_seen(self._db, self._last_seen)
                except sqlite3.Error:
                    log.warning("noting when containers were last seen failed", exc_info=True)
                try:
                    self._db.close()
                except sqlite3.Error:
                    log.warning("closing the recording failed", exc_info=True)
                self._db = None
            self._release_lock()

    def _write_guarded(self, items: list[tuple]) -> None:
        """_write, and whatever it raises is a counted, logged failure: the writer goes on with the next."""
        started = time.thread_time()
        try:
            self._write(items)
        except Exception as exc:
            self._write_failed(exc, "recording failed")
            for item in items:
                if item[0] == "flush":
                    item[1].set()
        self.cpu_s += time.thread_time() - started

    def _write_failed(self, exc: BaseException, what: str) -> None:
        self._failed += 1
        if isinstance(exc, sqlite3.Error):
            # Interned rows written in the failed transaction are gone: forget them so they are rewritten.
            self._load_interned()
            self._state, self._message = "error", _describe_db_error(exc, self.path)
        else:  # a value the codec cannot encode, a bug: this write is lost, the next one goes ahead
            self._load_interned()
            self._message = f"{what}: {type(exc).__name__}: {exc}"
        self._say("failed", f"{what} ({self._failed} failed writes so far)", exc)

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
                events.extend(self._findings.changes(item[1], item[2]))
            elif kind == "flush":
                waiters.append(item[1])
            elif kind == "retention":
                forced_retention = item[1]
        try:
            snapshot = sweep[1] if sweep is not None else None
            if snapshot is not None:
                events.extend(self._state_changes(snapshot))
                events.extend(self._xid_changes(db, snapshot))
                if sweep[2] is not None:
                    events.extend(self._findings.changes(snapshot.taken_at, getattr(sweep[2], "findings", ())))
            rows = self._event_rows(events)
            try:
                self._commit(db, snapshot, rows)
            except Exception as exc:
                if snapshot is None or not rows:
                    raise
                # A sweep that cannot be written must not take its events with it.
                self._write_failed(exc, f"recording the sweep at {snapshot.taken_at:.3f} failed")
                self._commit(db, None, rows, clears_error=False)
            now = time.monotonic()
            if forced_retention is not None or now - self._last_retention >= self.retention_every_s:
                self._last_retention = now
                try:
                    used = retention.used_bytes(db)
                    grown = used - self._used_after_retention if self._used_after_retention is not None else 0
                    # (what it drops is none of what the writer remembers: `keep`)
                    retention.enforce(db, self.retention_s, self.max_bytes, self._last_seen,
                                      now_ms=forced_retention or None, keep=set(self._containers.values()),
                                      headroom_bytes=grown * 5 // 4)  # (a margin: growth varies)
                    self._used_after_retention = retention.used_bytes(db)
                except Exception as exc:  # what was written stays written; retention tries again later
                    self._write_failed(exc, "retention (thinning and trimming the recording) failed")
        finally:
            for waiter in waiters:
                waiter.set()

    def _event_rows(self, events: list[Event]) -> list[tuple]:
        """The events' rows; one whose detail does not encode is a failed write of its own, left out."""
        rows = []
        for e in events:
            try:
                detail = json.dumps(e.detail) if e.detail else None
            except (TypeError, ValueError) as exc:
                self._write_failed(exc, f"recording the {e.source} event {e.kind!r} failed")
                continue
            rows.append((int(e.t * 1000), e.source, e.kind, e.container_id, e.container, e.severity, e.code,
                         e.title, detail))
        return rows

    def _commit(self, db: sqlite3.Connection, snapshot: Snapshot | None, rows: list[tuple],
                clears_error: bool = True) -> None:
        """One transaction: the sweep (if any) and the events' rows."""
        with write_transaction(db):
            if snapshot is not None:
                self._write_sweep(db, snapshot)
            if rows:
                db.executemany("INSERT INTO events(t, source, kind, container_id, container, severity, code, "
                               "title, detail) VALUES (?,?,?,?,?,?,?,?,?)", rows)
        if snapshot is not None:
            self._sweeps += 1
        self._events_written += len(rows)
        if snapshot is not None or rows:
            self._last_write_t = time.time()
            if clears_error and self._state == "error":  # a write went through: the database error is over
                self._state, self._message = "recording", None

    def _write_sweep(self, db: sqlite3.Connection, snapshot: Snapshot) -> None:
        t = int(snapshot.taken_at * 1000)
        host = codec.host_doc(snapshot.host)
        hid = self._hosts.pop(host, None)
        if hid is None:
            hid = db.execute("INSERT INTO hosts(doc) VALUES (?)", (host,)).lastrowid
        self._hosts[host] = hid  # the most recent last; the host facts change with the container count
        while len(self._hosts) > HOSTS_REMEMBERED:
            del self._hosts[next(iter(self._hosts))]
        cids = []
        pod_ids = []
        cid_of: dict[str, int] = {}
        containers: dict[tuple, int] = {}
        config_docs: dict[int, tuple[Any, str]] = {}
        for c in snapshot.containers:
            pod_ids.append(self._pod_facts.id_of(db, c.kubernetes, c.runtime))
            config = self._config_doc(c.config, config_docs)
            key = (c.id, c.name, c.image, config)
            cid = self._containers.get(key)
            if cid is None:  # new, or changed (renamed, re-inspected): rare, so one insert each for its id
                cid = db.execute(
                    "INSERT INTO containers(id, name, image, config, first_t, last_t) VALUES (?,?,?,?,?,?)",
                    (c.id, c.name, c.image, config, t, t)).lastrowid
            containers[key] = cid
            cids.append(cid)
            cid_of[c.id] = cid
            self._last_seen[cid] = t
        self._containers, self._config_docs = containers, config_docs
        self._pod_facts.end_sweep()
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
                    codec.pack_containers(snapshot.containers, cids, pod_ids)))

    def _config_doc(self, config: Any, used: dict[int, tuple[Any, str]]) -> str:
        """The config's JSON, remembered in `used` (this sweep's). The sampler keeps one ContainerConfig per
        inspect, so most sweeps find it among the last sweep's by identity and skip the JSON encoding."""
        cached = self._config_docs.get(id(config))
        if cached is None or cached[0] is not config:
            cached = (config, codec.config_doc(config))
        used[id(config)] = cached
        return cached[1]

    def _load_interned(self) -> None:
        """Read back what the file already interns, so a restarted recorder reuses the rows."""
        db = self._db
        self._hosts, self._gpu_ids, self._containers = {}, {}, {}
        self._pod_facts.ids = {}
        if db is None:
            return
        try:
            self._hosts = {doc: hid for hid, doc in db.execute("SELECT hid, doc FROM hosts")}
            self._pod_facts.load(db)
            self._gpu_ids = {doc: gid for gid, doc in db.execute("SELECT gid, doc FROM gpu_info")}
            # the containers of the last sweep in the file: those a restarted recorder sees again
            last = db.execute("SELECT containers FROM sweeps ORDER BY t DESC LIMIT 1").fetchone()
            try:
                cids = sorted(set(codec.unpack_containers(last[0]).cids)) if last and last[0] else []
            except (ValueError, struct.error, zlib.error):  # a damaged last sweep: its containers are written anew
                cids = []
            for start in range(0, len(cids), 500):
                chunk = cids[start:start + 500]
                for cid, cid_text, name, image, config in db.execute(
                        "SELECT cid, id, name, image, config FROM containers WHERE cid IN "
                        f"({','.join('?' * len(chunk))})", chunk):
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
