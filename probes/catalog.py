"""The engine's containers, kept current: one list, inspects only for what is new or changed, and the
engine's events feed (shared with the recorder) saying what changed between sweeps (the sampler's view)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any

from .engine import ContainerMeta, Engine, EngineError, meta_from_inspect, not_found_errors, provisional_meta

log = logging.getLogger(__name__)

REINSPECT_MAX = 16  # more containers named by events than this since the last sweep: re-list instead
BACKGROUND_INSPECT_MIN = 8  # fewer containers to inspect than this: inspect them before answering
INSPECT_DEADLINE_S = 5.0  # a sweep waits this long for the inspects it needs; the rest answer provisionally


class ContainerCatalog:
    """Keeps every container's inspect data, re-inspecting only containers whose state changed.

    Listing is one HTTP call; inspecting is one call per container, so it is done only for new containers
    and those whose listed state moved. An event watcher marks the catalog stale so that between events
    a sweep needs no engine call at all, and after an event only the containers it names are inspected
    again (on a dense host events come every few seconds, and a list of 500 containers costs far more than
    one inspect). A full re-list still happens every `relist_s` as a safety net (30 s with the watcher,
    5 s without), and after mark_stale().
    """

    def __init__(self, engine: Engine, relist_s: float | None = None, watch_events: bool = True,
                 inspect_in_background: bool = False):
        self.engine = engine
        # With many containers to inspect (a cold start on a dense host), answer at once with provisional
        # metas from the list and inspect in the background; later calls pick the results up.
        self.inspect_in_background = inspect_in_background
        self._inspecting: dict[str, Any] = {}  # id -> Future of its ContainerMeta (None: removed meanwhile)
        self._to_inspect: list[str] = []  # queued for start_background_work()
        self._inspect_lock = threading.Lock()  # the queue and the futures, against a release from the UI thread
        self._inspections_held = False
        self._inspect_pool = None
        self.inspect_deadline_s = INSPECT_DEADLINE_S
        self._late: set[str] = set()  # ids whose inspect missed the deadline and is still out
        self.relist_s = relist_s if relist_s is not None else (30.0 if watch_events else 5.0)
        self._full_relist = True
        self._metas: dict[str, ContainerMeta] = {}
        self._hints: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._listed_at = 0.0
        self._stale = threading.Event()
        self._stale.set()
        self._watch_events = watch_events
        self._subscription = None  # to the engine's events feed (probes/engine_events.py), shared with others
        self._watch_since: float | None = None  # the wall time of the last full list
        self._watch_wanted = False
        self._closed = False

    @property
    def watch_error(self) -> str | None:
        """Why the engine's events stream is down (it reconnects by itself); None while it is up."""
        sub = self._subscription
        return None if sub is None else sub.feed.status.error

    def mark_stale(self) -> None:
        """Re-list everything at the next call (a sweep found a cgroup gone, the engine failed)."""
        self._full_relist = True
        self._stale.set()

    def containers(self) -> list[ContainerMeta]:
        """Current containers, refreshed from the engine when stale. Raises EngineError when down."""
        now = time.monotonic()
        if self._full_relist or now - self._listed_at >= self.relist_s or not self._watcher_alive():
            self._stale.clear()
            self._full_relist = False
            listed_wall = time.time()
            try:
                self._relist()
            except Exception:
                self.mark_stale()
                raise
            self._listed_at = now
            self._watch_since = listed_wall  # the watcher, started by start_background_work(), misses nothing
            self._watch_wanted = True
        elif self._inspecting:
            self._collect_inspected()
        if self._stale.is_set() and not self._full_relist and now - self._listed_at < self.relist_s:
            self._stale.clear()
            with self._dirty_lock:
                dirty, self._dirty = self._dirty, set()
            if len(dirty) > REINSPECT_MAX:  # a burst (a fleet starting): one list, parallel inspects
                with self._dirty_lock:
                    self._dirty |= dirty
                self.mark_stale()
                return self.containers()
            try:
                self._reinspect(dirty)
            except Exception:
                self.mark_stale()
                raise
        return list(self._metas.values())

    def start_background_work(self) -> None:
        """Start the events watcher (after a re-list) and the inspections a background re-list queued. The
        sampler calls this once its sweep has read the cgroups: a thread parsing JSON or HTTP headers takes
        the GIL at every file the sweep opens and holds it up to the switch interval (5 ms), which on the
        first sweep of 100 containers added 20-30 ms."""
        if self._watch_wanted:  # after a list that succeeded: the engine answers
            self._watch_wanted = False
            self._start_watcher()
        if not self._inspections_held:
            self._start_inspections()

    def hold_background_inspections(self) -> None:
        """Queue background inspections until release_background_inspections(). The dashboard holds them
        over its first frame: 500 inspections parsing JSON beside Textual's first paint made it 50 ms later."""
        self._inspections_held = True

    def release_background_inspections(self) -> None:
        """Start what was held (from any thread) and stop holding."""
        self._inspections_held = False
        self._start_inspections()

    def _start_inspections(self) -> None:
        def inspect(cid: str) -> ContainerMeta | None:
            try:
                return meta_from_inspect(self.engine.inspect(cid))
            except not_found_errors():
                return None  # removed meanwhile

        with self._inspect_lock:
            if not self._to_inspect or self._closed:
                return
            pool = self._pool()
            queued, self._to_inspect = self._to_inspect, []
            for cid in queued:
                if cid not in self._inspecting:
                    self._inspecting[cid] = pool.submit(inspect, cid)

    def _collect_inspected(self) -> None:
        """Put the background inspections that finished in place of their provisional metas."""
        with self._inspect_lock:
            done = [(cid, self._inspecting.pop(cid)) for cid, future in list(self._inspecting.items())
                    if future.done()]
        if not done:
            return
        metas = dict(self._metas)
        for cid, future in done:
            self._late.discard(cid)
            try:
                meta = future.result()
            except Exception as exc:  # the engine failed mid-way: inspect it at the next full re-list
                self._hints.pop(cid, None)
                old = metas.get(cid)
                if old is not None and old.provisional:  # the doctor says why it did not judge it
                    metas[cid] = replace(old, inspect_error=_inspect_failed(cid, exc))
                continue
            if meta is None:
                metas.pop(cid, None)
            elif cid in metas:
                metas[cid] = meta
        self._metas = metas

    def _reinspect(self, ids: set[str]) -> None:
        """Inspect only the containers events named: new ones appear, removed ones go, the rest update."""
        metas = dict(self._metas)
        new: dict[str, ContainerMeta] = {}
        answered, late = self._inspect_within_deadline(sorted(ids))
        for cid in ids:
            if cid in late:  # the engine is slow or stuck: keep what is known, say so, collect it later
                if cid in metas:
                    metas[cid] = replace(metas[cid], inspect_error=late[cid])
                continue
            outcome = answered[cid]
            if outcome is None:
                metas.pop(cid, None)
            elif isinstance(outcome, BaseException):  # the engine refused this one inspect: the rest is known
                if cid in metas:
                    metas[cid] = replace(metas[cid], inspect_error=_inspect_failed(cid, outcome))
            else:
                (metas if cid in metas else new)[cid] = outcome
            # its listed state is not known from an inspect: the next full re-list inspects it once more
            self._hints.pop(cid, None)
        self._metas = {**new, **metas}  # new ones first, as the engine lists them (newest first)

    def _inspect_within_deadline(self, ids: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
        """Inspect `ids` on the pool and wait at most inspect_deadline_s: ({id: meta, None when removed, or the
        exception of a refused inspect}, {id: why it is late} for those still out, which the pool finishes and
        a later call collects). Raises EngineError when an inspect finds the engine gone altogether.

        A wedged dockerd can list its containers and never answer their inspects; each inspect then ends only
        at the engine timeout (10 s), which on 100 containers held the first sweep (and `mltop serve`'s
        /healthz) for minutes before failing it whole."""
        from concurrent.futures import wait

        if not ids:
            return {}, {}

        def inspect(cid: str) -> ContainerMeta | None:
            try:
                return meta_from_inspect(self.engine.inspect(cid))
            except not_found_errors():
                return None  # removed meanwhile

        futures = {}
        with self._inspect_lock:
            pool = self._pool()
            for cid in ids:
                futures[cid] = self._inspecting.pop(cid, None) or pool.submit(inspect, cid)
        # an inspect already late at an earlier sweep is not waited for again: one stuck container costs the
        # deadline once, not at every sweep
        fresh = [f for cid, f in futures.items() if cid not in self._late]
        done, _ = wait(fresh, timeout=self.inspect_deadline_s)
        done |= {f for f in futures.values() if f.done()}
        answered: dict[str, Any] = {}
        late: dict[str, str] = {}
        for cid, future in futures.items():
            if future not in done:
                late[cid] = (f"no answer within {self.inspect_deadline_s:g} s: the engine lists its containers but "
                             f"is slow or stuck on this one (still asking; `docker inspect {cid[:12]}` shows "
                             "whether it answers at all)")
                with self._inspect_lock:
                    self._inspecting[cid] = future
                self._late.add(cid)
                continue
            self._late.discard(cid)
            exc = future.exception()
            if exc is not None and _engine_down(exc):
                raise exc
            answered[cid] = exc if exc is not None else future.result()
        if late:
            log.warning("docker inspect: %d of %d containers unanswered after %g s; they stay provisional",
                        len(late), len(ids), self.inspect_deadline_s)
        return answered, late

    def _pool(self):
        """The catalog's inspect threads (call under _inspect_lock): a few keep the engine busy; more only fight
        over the GIL with the UI. Four keep a local engine as busy as eight did, for a quarter less CPU."""
        if self._inspect_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._inspect_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mltop-inspect")
        return self._inspect_pool

    def get(self, container_id: str) -> ContainerMeta | None:
        return self._metas.get(container_id)

    def _relist(self) -> None:
        listed = self.engine.list_containers()

        fresh: dict[str, ContainerMeta] = {}
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        hints: dict[str, Any] = {}
        to_inspect: list[str] = []
        for entry in listed:
            cid = entry["Id"]
            # "Status" is "Up 5 minutes" and changes every minute, so only State and Created are compared;
            # restarts (same State, new PID) arrive as events and mark the id dirty.
            hint = (entry.get("State"), entry.get("Created"))
            hints[cid] = hint
            old = self._metas.get(cid)
            if old is not None and cid not in dirty and self._hints.get(cid) == hint:
                fresh[cid] = old
            else:
                to_inspect.append(cid)

        by_id = {entry["Id"]: entry for entry in listed}

        if self.inspect_in_background and len(to_inspect) > BACKGROUND_INSPECT_MIN:
            with self._inspect_lock:
                self._to_inspect += [cid for cid in to_inspect if cid not in self._inspecting]
            for cid in to_inspect:
                old = self._metas.get(cid)
                fresh[cid] = old if old is not None and old.provisional else provisional_meta(by_id[cid])
            self._metas = fresh
            self._hints = hints
            self._collect_inspected()
            return
        answered, late = self._inspect_within_deadline(to_inspect)
        for cid in to_inspect:
            if cid in late:
                fresh[cid] = replace(provisional_meta(by_id[cid]), inspect_error=late[cid])
                hints.pop(cid, None)  # inspected again at the next full list, unless collected before
                continue
            outcome = answered[cid]
            if outcome is None:
                continue  # removed between list and inspect
            if isinstance(outcome, BaseException):  # the engine refused this one: the list stands, it is unknown
                outcome = replace(provisional_meta(by_id[cid]), inspect_error=_inspect_failed(cid, outcome))
            fresh[cid] = outcome
            if outcome.inspect_error:
                hints.pop(cid, None)  # inspected again at the next full list
        self._metas = fresh
        self._hints = hints

    def _watcher_alive(self) -> bool:
        """Events flow: without them, every sweep re-lists (the feed reconnects and resumes meanwhile)."""
        return not self._watch_events or (self._subscription is not None and self._subscription.feed.connected)

    def _start_watcher(self) -> None:
        if not self._watch_events or self._closed or self._subscription is not None:
            return
        from .engine_events import subscribe_engine_events

        # a gap in the engine's events (a long outage on a busy engine): re-list rather than trust them
        self._subscription = subscribe_engine_events(self.engine, self._on_event, since=self._watch_since,
                                                     on_gap=lambda since, until: self.mark_stale())
        if not self._subscription.complete:  # the stream another part opened began after our list
            self.mark_stale()

    def _on_event(self, event: dict) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        # exec_* and health checks do not change what we show; everything else might
        if not action.startswith(("exec_", "health_status", "top")):
            cid = event.get("id") or (event.get("Actor") or {}).get("ID")
            if cid:
                with self._dirty_lock:
                    self._dirty.add(cid)
            self._stale.set()

    def close(self) -> None:
        with self._inspect_lock:
            self._closed = True
            if self._inspect_pool is not None:
                self._inspect_pool.shutdown(wait=False, cancel_futures=True)
                self._inspect_pool = None  # (a list asked after close inspects on a new pool, not a dead one)
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()


def _engine_down(exc: BaseException) -> bool:
    """An inspect failed because the engine cannot be reached at all (the sweep says so), not because it refused
    this one container (an API error: Engine.call reports those as EngineError status "error") or did not answer
    it in time (the list answered: the engine is there, slow or stuck on this container)."""
    return isinstance(exc, EngineError) and exc.status != "error" and not exc.timed_out


def _inspect_failed(cid: str, exc: BaseException) -> str:
    """The engine's words for an inspect that failed (what the doctor shows for the container it skips)."""
    log.info("docker inspect %s failed; inspected again at the next full list", cid[:12], exc_info=True)
    api_error = exc.__context__ if isinstance(exc, EngineError) else exc  # the SDK's, with the engine's message
    words = getattr(api_error, "explanation", None) or getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(words).split())[:300]
