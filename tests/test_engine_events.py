"""One engine events feed: a stream per engine that every part subscribes to, which survives the engine's socket
being cut mid-stream (through a proxy the test cuts and restores) without losing or repeating an event."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter

from conftest import wait_for
from engine_proxy import EngineSocketProxy

from mltop.probes.engine import Engine
from mltop.probes.engine_events import feed_problems, subscribe_engine_events

PREFIX = f"mltop-feed-{uuid.uuid4().hex[:6]}"


class _Records(logging.Handler):
    def __init__(self, name: str = "mltop.probes.engine_events"):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)


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
            time.sleep(2.5)  # the feed tries again meanwhile, and fails
            proxy.start()

            wait_for(lambda: "start" in _actions(got, during.id) and "die" in _actions(got, died.id),
                     what="the events of the cut, after the reconnect")
            wait_for(lambda: sub.feed.connected, what="the feed connected again")
            status = sub.feed.status
        finally:
            sub.close()
            proxy.stop()
    assert status.error is None and status.failures >= 2
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
