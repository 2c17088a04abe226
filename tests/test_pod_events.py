"""Pod lifecycle events (probes/pod_events.py) and their recording: created, started, exited with its code,
OOM-killed from the cgroup's counter, restarted (a new container id, attempt + 1), removed; replay keeps pods."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from builders import config, container, recent_start, replace, snapshot
from cri_harness import ContainerSpec

from mltop.probes.model import KubernetesInfo
from mltop.probes.pod_events import PodEventTracker

T0 = recent_start()
K = KubernetesInfo("ml-team", "trainer", "5f2d3a1c-8e4b-4c2a-9f1e-0a1b2c3d4e5f", "main", "Burstable")


def pod_container(cid: str, **overrides):
    cfg = overrides.pop("config", None) or config(restart_count=overrides.pop("restarts", 0),
                                                  exit_code=overrides.pop("exit_code", None),
                                                  oom_killed=overrides.pop("oom_killed", False))
    return container("ml-team/trainer/main", id=cid, kubernetes=K, runtime="containerd", config=cfg,
                     **overrides)


def kinds(events):
    return [(e.kind, e.container, e.detail) for e in events]


def test_lifecycle_from_successive_sweeps():
    tracker = PodEventTracker()
    a, b = "a" * 64, "b" * 64
    docker_one = container("web")  # not a pod: the engine's watcher tells its story
    assert tracker.observe(snapshot([docker_one], taken_at=T0)) == []  # what existed before: no event
    created = pod_container(a, status="created", oom_kills=None)
    assert kinds(tracker.observe(snapshot([docker_one, created], taken_at=T0 + 1))) == [
        ("create", "ml-team/trainer/main", None)]
    running = pod_container(a, oom_kills=0)
    assert kinds(tracker.observe(snapshot([running], taken_at=T0 + 2))) == [("start", "ml-team/trainer/main", None)]
    oomed = pod_container(a, oom_kills=1)
    assert kinds(tracker.observe(snapshot([oomed], taken_at=T0 + 3))) == [
        ("oom", "ml-team/trainer/main", {"oom_kills": 1, "via": "cgroup"})]
    exited = pod_container(a, status="exited", exit_code=137, oom_killed=True, oom_kills=None)
    assert kinds(tracker.observe(snapshot([exited], taken_at=T0 + 4))) == [
        ("oom", "ml-team/trainer/main", {"via": "runtime"}), ("die", "ml-team/trainer/main", {"exit_code": 137})]
    # the kubelet removes it and starts attempt 1: a new id, the same namespace/pod/container
    again = pod_container(b, restarts=1, oom_kills=0)
    events = tracker.observe(snapshot([again], taken_at=T0 + 5))
    assert kinds(events) == [("restart", "ml-team/trainer/main", {"restart_count": 1, "previous_restart_count": 0}),
                             ("start", "ml-team/trainer/main", None)]
    assert events[0].container_id == b and events[0].t == T0 + 5
    assert kinds(tracker.observe(snapshot([], taken_at=T0 + 6))) == [("destroy", "ml-team/trainer/main", None)]


def test_recorded_pod_events_and_replayed_pods(tmp_path):
    from mltop.probes.recording import Recorder, RecordingSource, RecordingStore

    path = str(tmp_path / "h.db")
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    cid = "c" * 64
    labels = {"io.kubernetes.pod.namespace": "ml-team", "io.kubernetes.pod.name": "trainer",
              "io.kubernetes.pod.uid": K.pod_uid, "io.kubernetes.container.name": "main"}
    cfg = config(labels=labels, pod_labels={"app": "trainer"}, exit_code=None)
    rec.record(snapshot([], taken_at=T0))
    rec.record(snapshot([pod_container(cid, config=cfg, oom_kills=0)], taken_at=T0 + 5))
    rec.record(snapshot([pod_container(cid, config=replace(cfg, exit_code=3), status="exited", oom_kills=None)],
                        taken_at=T0 + 10))
    rec.flush()
    rec.close()
    store = RecordingStore(path)
    try:
        events = [(e.source, e.kind, e.container, e.detail) for e in store.events(since=T0 - 1) if e.source == "cri"]
    finally:
        store.close()
    assert events == [("cri", "create", "ml-team/trainer/main", None), ("cri", "start", "ml-team/trainer/main", None),
                      ("cri", "die", "ml-team/trainer/main", {"exit_code": 3})]
    replayed = RecordingSource(path).at(T0 + 5)
    (c,) = replayed.containers
    assert c.name == "ml-team/trainer/main"
    assert (c.kubernetes.namespace, c.kubernetes.pod, c.kubernetes.container) == ("ml-team", "trainer", "main")
    assert replayed.host.sources == snapshot([]).host.sources
    text = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "events", "--record", path, "--since",
                           str(int(T0 - 60))], capture_output=True, text=True, timeout=60).stdout
    assert "ml-team/trainer/main" in text and "exit code 3" in text


def test_a_real_pods_lifecycle_is_recorded(cri_pods, tmp_path):
    """A pod on the real containerd: its container starts, a child is OOM-killed, it exits with code 3."""
    from mltop.probes.recording import Recorder, RecordingStore
    from mltop.probes.sampler import ProbeOptions, Sampler

    node = cri_pods.node
    path = str(tmp_path / "h.db")
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=node.endpoint, watch_events=False))
    try:
        rec.record(sampler.sweep())
        pod = cri_pods.run("batch", "job", [ContainerSpec(
            "work", ["sh", "-c", "sleep 2; tail /dev/zero; sleep 4; exit 3"], memory_limit_bytes=32 << 20)])
        cid = pod.containers["work"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            snap = sampler.sweep()
            rec.record(snap)
            c = snap.container(cid)
            if c is not None and c.status == "exited":
                break
            time.sleep(0.3)
        rec.flush()
    finally:
        sampler.close()
        rec.close()
    store = RecordingStore(path)
    try:
        events = [(e.kind, e.detail) for e in store.events(since=time.time() - 300) if e.container_id == cid]
    finally:
        store.close()
    assert [k for k, _ in events][:2] == ["create", "start"] or [k for k, _ in events][:1] == ["create"]
    assert ("oom", {"oom_kills": 1, "via": "cgroup"}) in events, events
    assert events[-1] == ("die", {"exit_code": 3}), events
    assert json.dumps(events)  # details are JSON-ready
