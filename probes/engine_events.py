"""The engine's container events: one stream per engine in the process (EngineEventFeed), which reconnects
and resumes from the last event it saw, for every part that needs them (the catalog, the flight recorder);
and the container actions worth keeping in a timeline (create, start, die, oom...).

    sub = subscribe_engine_events(engine, on_raw_event, since=time.time())   # a raw event dict per call
    sub.feed.status        # FeedStatus: connected, the last error, how many times the stream broke
    sub.close()            # the last subscriber to leave ends the stream
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from .units import local_time

log = logging.getLogger(__name__)

RETRY_S = 2.0  # between reconnection attempts, at most (the first comes after FIRST_RETRY_S, then doubling)
FIRST_RETRY_S = 0.25  # soon: the engine keeps only its last 256 events to resume from
BACKLOG = 512  # recent events kept for a subscriber that joins late and asks `since` an earlier time
RESUME_OVERLAP_S = 0.001  # ask from a little before the last event: the float `since` rounds; repeats are skipped

# Container actions worth keeping in a timeline; exec_*, attach, resize, top... are noise.
RECORDED_ACTIONS = frozenset({"create", "start", "die", "oom", "kill", "restart", "health_status", "destroy",
                              "stop", "pause", "unpause", "rename"})


@dataclass(frozen=True)
class EngineEvent:
    """One container event from `docker events`. Labels are left out: they can carry anything."""

    time: float
    action: str  # "die", "oom", "health_status", ...
    container_id: str
    name: str | None
    image: str | None
    exit_code: int | None = None
    signal: int | None = None
    health: str | None = None  # "healthy" | "unhealthy" | "starting" on health_status


def parse_engine_event(raw: dict[str, Any]) -> EngineEvent | None:
    """An EngineEvent for a recorded container action, or None for anything else."""
    if (raw.get("Type") or "container") != "container":
        return None
    action = str(raw.get("Action") or raw.get("status") or "")
    health = None
    if action.startswith("health_status"):
        action, _, health = action.partition(":")
        health = health.strip() or None
    if action not in RECORDED_ACTIONS:
        return None
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    cid = actor.get("ID") or raw.get("id")
    if not cid:
        return None
    nanos = raw.get("timeNano")
    when = nanos / 1e9 if nanos else float(raw.get("time") or time.time())

    def number(key: str) -> int | None:
        try:
            return int(attributes[key])
        except (KeyError, TypeError, ValueError):
            return None

    return EngineEvent(time=when, action=action, container_id=cid, name=attributes.get("name"),
                       image=attributes.get("image") or raw.get("from"), exit_code=number("exitCode"),
                       signal=number("signal"), health=health)


@dataclass(frozen=True)
class FeedStatus:
    """The events stream as the header and /healthz show it."""

    connected: bool
    error: str | None  # why the stream last broke; None while it is up
    failures: int  # how many times it broke (or could not connect) since the feed started
    last_event_t: float | None
    gaps: int = 0  # resumes where the engine no longer had the events since the last one seen


class Subscription:
    def __init__(self, feed: "EngineEventFeed", callback: Callable[[dict], None],
                 on_gap: Callable[[float, float], None] | None = None):
        self.feed = feed
        self.callback = callback
        self.on_gap = on_gap  # (from, to) wall times whose events may be missing: the engine no longer had them
        self.complete = True  # False: the feed started after the `since` asked for, events may be missing

    def close(self) -> None:
        _unsubscribe(self)


def _event_key(raw: dict) -> tuple:
    return (raw.get("timeNano"), raw.get("id") or (raw.get("Actor") or {}).get("ID"),
            raw.get("Action") or raw.get("status"))


class EngineEventFeed:
    """Streams the engine's container events in its own thread to every subscriber. When the stream breaks
    (the engine restarts, the socket goes) the failure is logged and kept in `status`, and the feed reconnects
    (soon, then up to every RETRY_S) asking `since` its last event, so no event is lost across the gap and
    none is delivered twice. The engine answers that from its last 256 events (of every kind, every
    container): when a longer or busier outage has pushed the last event seen out of them, the feed says so
    (`on_gap`, `status.gaps`, a log line) instead of pretending the timeline is whole."""

    def __init__(self, engine: Any, retry_s: float = RETRY_S):
        self.engine = engine
        self.retry_s = retry_s
        self._lock = threading.Lock()  # subscribers, the backlog; held while delivering (callbacks are short)
        self._subs: list[Subscription] = []
        self._backlog: deque = deque(maxlen=BACKLOG)  # (time in s, raw)
        self._recent: deque = deque(maxlen=64)  # keys of the last events delivered, to skip resumed repeats
        self._last_ns: int | None = None
        self._first_since: float | None = None
        self._covered_from: float | None = None  # wall time from which every event was delivered
        self._stop = threading.Event()
        self._stream = None
        self._thread: threading.Thread | None = None
        self._connected = False
        self._error: str | None = None
        self._failures = 0
        self._failing_since: float | None = None
        self._resumed = False  # the next event is the first after a reconnect: is it a repeat?
        self._gaps = 0

    @property
    def status(self) -> FeedStatus:
        return FeedStatus(self._connected, None if self._connected else self._error, self._failures,
                          None if self._last_ns is None else self._last_ns / 1e9, self._gaps)

    @property
    def connected(self) -> bool:
        return self._connected

    def _subscribe(self, callback: Callable[[dict], None], since: float | None,
                   on_gap: Callable[[float, float], None] | None = None) -> Subscription:
        sub = Subscription(self, callback, on_gap)
        with self._lock:
            if self._thread is None:
                if since is not None:
                    self._first_since = since if self._first_since is None else min(self._first_since, since)
            elif since is not None:
                sub.complete = self._covered_from is not None and self._covered_from <= since
                for t, raw in self._backlog:
                    if t >= since:
                        self._call(sub, raw)
            self._subs.append(sub)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mltop-engine-events", daemon=True)
            self._thread.start()
        return sub

    def _call(self, sub: Subscription, raw: dict) -> None:
        try:
            sub.callback(raw)
        except Exception:  # one subscriber's bug must not end the stream for the others
            log.warning("an engine events subscriber failed on %s", raw.get("Action"), exc_info=True)

    def _deliver(self, raw: dict) -> None:
        nanos = raw.get("timeNano")
        if isinstance(nanos, int):
            resumed, self._resumed = self._resumed, False
            if self._last_ns is not None and nanos < self._last_ns:
                return  # resumed from a little earlier: already delivered
            key = _event_key(raw)
            if key in self._recent:
                return
            if resumed and self._last_ns is not None:
                # The engine replays from its buffer: had it still held the last event seen, that would have
                # come first (a repeat). It did not: what happened between may be gone.
                self._gap(self._last_ns / 1e9, nanos / 1e9)
            self._recent.append(key)
            self._last_ns = nanos
            t = nanos / 1e9
        else:
            t = float(raw.get("time") or time.time())
        with self._lock:
            self._backlog.append((t, raw))
            for sub in self._subs:
                self._call(sub, raw)

    def _gap(self, since: float, until: float) -> None:
        self._gaps += 1
        log.warning("the engine no longer had its events since %s (it keeps its last 256): events up to %s may be "
                    "missing", local_time(since, with_date=False), local_time(until, with_date=False))
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if sub.on_gap is not None:
                try:
                    sub.on_gap(since, until)
                except Exception:
                    log.warning("an engine events subscriber failed on a gap", exc_info=True)

    def _run(self) -> None:
        retry = FIRST_RETRY_S
        while not self._stop.is_set():
            since = self._first_since if self._last_ns is None else self._last_ns / 1e9 - RESUME_OVERLAP_S
            stream = None
            try:
                asked_at = time.time()
                stream = self._stream = self.engine.events(since=since)
                if self._stop.is_set():
                    break
                if self._covered_from is None:
                    self._covered_from = since if since is not None else asked_at
                self._connected = True
                self._resumed = self._last_ns is not None
                retry = FIRST_RETRY_S
                if self._failing_since is not None:
                    log.warning("the engine events stream is back after %.1f s (%d failures); resumed from its "
                                "last event", time.monotonic() - self._failing_since, self._failures)
                    self._failing_since = None
                for raw in stream:
                    if self._stop.is_set():
                        break
                    self._deliver(raw)
                if self._stop.is_set():
                    break
                raise ConnectionError("the engine ended the events stream")
            except Exception as exc:
                if self._stop.is_set():
                    break
                self._connected = False
                self._failures += 1
                self._error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning("the engine events watcher failed (%s); reconnecting (every %g s at most), resuming "
                                "from the last event", self._error, self.retry_s, exc_info=True)
                else:  # still down: the first failure said it
                    log.debug("the engine events stream is still down", exc_info=True)
            finally:
                self._connected = False
                self._stream = None
                if stream is not None:
                    _close_quietly(stream)
            self._stop.wait(min(retry, self.retry_s))
            retry *= 2

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            _close_quietly(stream)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


def _close_quietly(stream: Any) -> None:
    try:
        stream.close()
    except Exception:
        log.debug("closing the engine events stream failed", exc_info=True)


# One feed per engine endpoint (and kind of client) in this process, shared by every subscriber.
_feeds: dict[tuple, EngineEventFeed] = {}
_feeds_lock = threading.Lock()


def subscribe_engine_events(engine: Any, callback: Callable[[dict], None], since: float | None = None,
                            on_gap: Callable[[float, float], None] | None = None) -> Subscription:
    """Call `callback(raw event dict)` for each container event of `engine`'s endpoint, from the events at
    `since` (wall time; None: from now) on, and `on_gap(from, to)` when events between may be missing. Every
    subscriber of an endpoint shares one stream."""
    key = (type(engine), getattr(engine, "docker_host", None))
    with _feeds_lock:
        feed = _feeds.get(key)
        if feed is None:
            feed = _feeds[key] = EngineEventFeed(engine)
        return feed._subscribe(callback, since, on_gap)


def _unsubscribe(sub: Subscription) -> None:
    feed = sub.feed
    with _feeds_lock:
        with feed._lock:
            if sub in feed._subs:
                feed._subs.remove(sub)
            last = not feed._subs
        if last:
            for key, value in list(_feeds.items()):
                if value is feed:
                    del _feeds[key]
    if last:
        feed.stop()


def feed_problems() -> list[str]:
    """A line per events stream of this process that is down (for /healthz)."""
    with _feeds_lock:
        feeds = list(_feeds.values())
    return [f"engine events stream down ({status.error}; {status.failures} failures); reconnecting"
            for status in (feed.status for feed in feeds) if not status.connected and status.error]
