"""One engine events feed: a stream per engine that every part subscribes to, which survives the engine's socket
being cut mid-stream (through a proxy the test cuts and restores) without losing or repeating an event."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter

import pytest

from capture import LogRecords
from conftest import wait_for
from engine_proxy import EngineSocketProxy

from mltop.probes.engine import Engine
from mltop.probes.engine_events import feed_problems, subscribe_engine_events

PREFIX = f"mltop-feed-{uuid.uuid4().hex[:6]}"


def _Records() -> LogRecords:
    return LogRecords("mltop.probes.engine_events")


def _actions(raws: list[dict], container_id: str) -> list[str]:
    return [r.get("Action") for r in raws if (r.get("Actor") or {}).get("ID") == container_id]


def test_a_cut_engine_socket_loses_no_event_and_the_failure_is_logged_and_shown(tmp_path, containers):
    proxy = EngineSocketProxy(tmp_path / "docker.sock").start()
    got: list[dict] = []
    lock = threading.Lock()

    def on_event(raw: dict) -> None:
        with lock:
            got.append(raw)

    with _Records() as log:
        sub = subscribe_engine_events(Engine(proxy.docker_host), on_event)
        try:
            wait_for(lambda: sub.feed.connected, what="the feed connected")
            before = containers.run(["sleep", "600"], name=f"{PREFIX}-before")
            wait_for(lambda: "start" in _actions(got, before.id), what="the first container's start")

            proxy.stop()  # mid-stream: the events connection breaks
            wait_for(lambda: not sub.feed.connected and sub.feed.status.error, what="the feed noticing the cut")
            assert any(sub.feed.status.error in p for p in feed_problems())  # what /healthz says
            during = containers.run(["sleep", "600"], name=f"{PREFIX}-during")
            died = containers.run(["sh", "-c", "exit 3"], name=f"{PREFIX}-died", wait_running=False)
            wait_for(lambda: (died.reload() or died.status) == "exited", what="the short one exiting")
            wait_for(lambda: sub.feed.status.failures >= 2, what="a reconnection attempt failing")
            proxy.start()  # soon: the engine resumes from its last 256 events, and the engine is shared

            wait_for(lambda: "start" in _actions(got, during.id) and "die" in _actions(got, died.id),
                     what="the events of the cut, after the reconnect")
            wait_for(lambda: sub.feed.connected, what="the feed connected again")
            status = sub.feed.status
        finally:
            sub.close()
            proxy.stop()
    assert status.error is None and status.failures >= 2
    assert status.gaps == 0, "the shared engine logged more than 256 events during the cut: it could not resume"
    with lock:
        events = list(got)
    assert _actions(events, before.id) == ["create", "start"]  # nothing again after the reconnect
    assert Counter(_actions(events, during.id)) == Counter({"create": 1, "start": 1})
    assert Counter(_actions(events, died.id)) == Counter({"create": 1, "start": 1, "die": 1})
    keys = [(r.get("timeNano"), (r.get("Actor") or {}).get("ID"), r.get("Action")) for r in events]
    assert len(keys) == len(set(keys))  # no event twice
    # the reconnect asked for what it missed
    assert "since=" in proxy.events_requests()[-1]
    (warning,) = [r for r in log.records if r.levelno == logging.WARNING and "events watcher failed" in r.getMessage()]
    assert warning.exc_info is not None
    assert any("is back after" in r.getMessage() for r in log.records)


def test_the_catalog_and_the_recorder_share_one_stream_across_a_cut(tmp_path, containers, monkeypatch):
    from mltop.probes.recording import Recorder, RecordingStore
    from mltop.probes.sampler import ProbeOptions, Sampler

    proxy = EngineSocketProxy(tmp_path / "docker.sock").start()
    path = str(tmp_path / "h.db")
    # As the dashboard wires them without --docker-host: each finds the engine through DOCKER_HOST.
    monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
    sampler = Sampler(ProbeOptions(nvml=False))
    recorder = Recorder(path).start()
    try:
        sampler.sweep()  # the catalog subscribes once its first sweep has read the cgroups
        sampler.sweep()
        wait_for(lambda: sampler.catalog.watch_error is None and sampler.catalog._watcher_alive(),
                 what="the events flowing")
        assert len(proxy.events_requests()) == 1  # one stream for both

        proxy.stop()
        wait_for(lambda: sampler.catalog.watch_error is not None, what="the cut seen by the catalog")
        assert recorder.engine_events.error == sampler.catalog.watch_error  # the same feed, one status
        during = containers.run(["sleep", "600"], name=f"{PREFIX}-shared")
        proxy.start()
        wait_for(lambda: sampler.catalog._watcher_alive(), what="the feed back")

        def recorded() -> list[str]:
            recorder.flush()
            return [e.kind for e in RecordingStore(path).events() if e.container_id == during.id]

        wait_for(lambda: recorded() == ["create", "start"], what="the recorder storing the cut's events once")
        wait_for(lambda: during.id in {c.id for c in sampler.sweep().containers}, what="the catalog listing it")
        assert len(proxy.events_requests()) == 2  # one reconnect, for both subscribers
    finally:
        recorder.close()
        sampler.close()
        proxy.stop()


class _ScriptedEngine:
    """An engine whose events stream plays given lists, one per connection, then breaks (the replays a real
    engine gives after a reconnect, including one whose buffer no longer reaches back). A reconnection waits
    for `resume`."""

    docker_host = "unix:///scripted/docker.sock"

    def __init__(self, *streams: list[dict]):
        self.streams = list(streams)
        self.asked: list[float | None] = []
        self.resume = threading.Event()

    def events(self, since=None):
        self.asked.append(since)
        if len(self.asked) > 1:
            self.resume.wait(10)
        if not self.streams:
            raise ConnectionError("gone")
        return iter(self.streams.pop(0))

    def list_containers(self):
        return []


def _raw(seconds: float, cid: str, action: str) -> dict:
    return {"Type": "container", "Action": action, "Actor": {"ID": cid, "Attributes": {"name": cid}},
            "timeNano": int(seconds * 1e9)}


def test_a_resume_the_engine_serves_whole_repeats_nothing():
    t = time.time() - 3600
    a, b, d = _raw(t, "a", "start"), _raw(t + 1, "b", "start"), _raw(t + 5, "d", "start")
    engine = _ScriptedEngine([a, b], [b, d])  # the replay starts with the last event seen: nothing missing
    engine.resume.set()
    got: list[dict] = []
    gaps: list[tuple] = []
    sub = subscribe_engine_events(engine, got.append, on_gap=lambda *g: gaps.append(g))
    try:
        wait_for(lambda: len(got) == 3, what="three events")
    finally:
        sub.close()
    assert [r["Actor"]["ID"] for r in got] == ["a", "b", "d"] and gaps == [] and sub.feed.status.gaps == 0
    assert engine.asked[1] is not None and t + 1 - 0.01 < engine.asked[1] < t + 1  # since the last event


def test_a_resume_the_engine_cannot_serve_whole_is_said_and_the_catalog_relists():
    from mltop.probes.catalog import ContainerCatalog

    class Engine(_ScriptedEngine):  # another endpoint: its own feed
        docker_host = "unix:///scripted/other.sock"

    t = time.time()
    a, b, d = _raw(t, "a", "start"), _raw(t + 1, "b", "start"), _raw(t + 5, "d", "start")
    engine = Engine([a, b], [d])  # the engine's buffer no longer holds b: whatever came between is lost
    catalog = ContainerCatalog(engine)  # type: ignore[arg-type]
    catalog.containers()
    gaps: list[tuple] = []
    with _Records() as log:
        catalog.start_background_work()  # the catalog's subscription starts the feed
        sub = subscribe_engine_events(engine, lambda raw: None, on_gap=lambda *g: gaps.append(g))
        try:
            wait_for(lambda: sub.feed.status.failures >= 1, what="the stream breaking")
            catalog.containers()  # re-lists while the stream is down ...
            assert not catalog._full_relist  # ... and then trusts the events again
            engine.resume.set()
            wait_for(lambda: sub.feed.status.gaps == 1, what="the gap noticed")
            assert catalog._full_relist  # the next sweep re-lists rather than trust the events
        finally:
            sub.close()
            catalog.close()
    assert gaps == [(pytest.approx(t + 1), pytest.approx(t + 5))]
    assert any("may be missing" in r.getMessage() for r in log.records if r.levelno == logging.WARNING)
