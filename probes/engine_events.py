"""The engine's container events as a timeline: what the flight recorder keeps (create, start, die, oom...),
streamed in a thread that reconnects and asks for what it missed."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from .engine import Engine

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


class EngineEventWatcher:
    """Streams container events to `on_event(EngineEvent)` in its own thread, reconnecting after the engine
    goes away and asking for the events it missed meanwhile (`since` the last one seen)."""

    def __init__(self, engine: Engine, on_event, retry_s: float = 2.0):
        self.engine = engine
        self.on_event = on_event
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._stream = None
        self._since: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mltop-engine-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                since = self._since
                self._stream = self.engine.events(since=None if since is None else since + 1e-6)
                for raw in self._stream:
                    if self._stop.is_set():
                        break
                    event = parse_engine_event(raw)
                    nanos = raw.get("timeNano")
                    if nanos:
                        self._since = nanos / 1e9
                    if event is not None:
                        self.on_event(event)
            except Exception:
                self.engine.reset()
            self._stop.wait(self.retry_s)

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(2.0)
