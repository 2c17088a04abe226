"""What mltop keeps per container stays bounded by the containers listed now, on a node where containers come
and go all day (a node running 2,000 short jobs a day must not keep each of them). tests/bench_churn_memory.py
measures the same in bytes per container lifecycle with tracemalloc."""

from __future__ import annotations

import sqlite3
import time
import uuid

from builders import container, host, replace, snapshot

from mltop.probes.model import ContainerAttempt, KubernetesInfo
from mltop.probes.recording import Recorder, RecordingSource
from mltop.probes.recording.recorder import HOSTS_REMEMBERED

PREFIX = f"mltop-leak-{uuid.uuid4().hex[:6]}"
LIVE = 3  # containers alive at a time in the synthetic churn


def _job(n: int):
    """The n-th short job: a pod container with an attempt of its own (its facts differ from every other's)."""
    attempt = ContainerAttempt(0, f"{n:064x}", "exited", 1, "Error", "2026-11-29T03:00:00Z",
                               "2026-11-29T03:00:05Z", None)
    k = KubernetesInfo("ml", f"job-{n}", f"uid-{n}", "main", "Burstable", previous_attempts=(attempt,))
    labels = {"io.kubernetes.pod.namespace": "ml", "io.kubernetes.pod.name": f"job-{n}",
              "io.kubernetes.pod.uid": f"uid-{n}", "io.kubernetes.container.name": "main"}
    c = container(f"ml/job-{n}/main", config_overrides={"labels": labels, "command": ("train", f"--run={n}")})
    return replace(c, kubernetes=k, runtime="containerd")


def _churn(rec: Recorder, jobs: int, start: float) -> list:
    """Sweeps while `jobs` containers come and go, LIVE at a time; the host's container count changes too."""
    snaps = []
    for i in range(jobs):
        live = [_job(n) for n in range(max(0, i - LIVE + 1), i + 1)]
        snap = snapshot(live, taken_at=start + i, host=host(limitations=(f"{i} containers started",)))
        rec.record(snap)
        snaps.append(snap)
    rec.flush()
    return snaps


def test_recorder_remembers_only_what_the_last_sweep_held_and_replay_is_unchanged(tmp_path):
    path = str(tmp_path / "history.db")
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    try:
        start = time.time() - 600
        snaps = _churn(rec, 200, start)
        # the writer's interned ids: the last sweep's containers, configs and pod facts, a few host docs
        assert len(rec._containers) <= LIVE
        assert len(rec._config_docs) <= LIVE
        assert len(rec._pod_facts.ids) <= LIVE and len(rec._pod_facts._docs) <= LIVE
        assert len(rec._hosts) <= HOSTS_REMEMBERED
    finally:
        rec.close()
    # what replay shows is what was recorded: each sweep's containers with their own config and pod facts
    source = RecordingSource(path)
    try:
        for snap in (snaps[5], snaps[120], snaps[-1]):
            replayed = source.at(snap.taken_at)
            assert [c.name for c in replayed.containers] == [c.name for c in snap.containers]
            for got, want in zip(replayed.containers, snap.containers):
                assert got.config.command == want.config.command
                assert got.kubernetes.previous_attempts == want.kubernetes.previous_attempts
    finally:
        source.close()


def test_a_restarted_recorder_reuses_the_last_sweeps_containers(tmp_path):
    path = str(tmp_path / "history.db")
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    start = time.time() - 600
    snaps = _churn(rec, 50, start)
    rec.close()

    def rows() -> int:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT COUNT(*) FROM containers").fetchone()[0]

    before = rows()
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    try:
        assert len(rec._containers) == LIVE  # the last sweep's, not every container the file names
        rec.record(replace(snaps[-1], taken_at=start + 60))
        rec.flush()
        assert rows() == before  # the same containers again: no new rows
    finally:
        rec.close()


def test_sampler_and_engine_forget_containers_once_removed(containers, sampler, docker_client):
    """Real containers started and removed one after another: what the sampler and the engine keep for each
    (readings, cgroup paths, limits, secrets) goes with the container."""
    kept = []
    for i in range(4):
        c = containers.run(["sleep", "30"], name=f"{PREFIX}-{i}", environment={"API_TOKEN": f"secret-{i}"})
        snap = sampler.sweep()
        assert any(s.id == c.id for s in snap.containers)
        assert sampler.engine.container_secrets(c.id).known  # what the logs pane and the report ask for
        c.remove(force=True)
        sampler.catalog.mark_stale()
        snap = sampler.sweep()
        listed = {s.id for s in snap.containers}
        assert c.id not in listed
        tables = {"readings": sampler._previous, "paths": sampler._paths, "limits": sampler._limits,
                  "netns": sampler._host_netns, "unmeasured": sampler._unmeasured_samples,
                  "secrets": sampler.engine._secrets}
        kept.append({name: set(table) - listed for name, table in tables.items()})
    assert all(not gone for sweep in kept for gone in sweep.values()), kept


def test_a_restarted_recorders_retention_keeps_the_names_its_kept_sweeps_refer_to(tmp_path):
    """The writer no longer keeps every container it wrote (retention's `keep`), so the file must know when each
    was last seen: a container that lived across the retention border, recorded before a restart, keeps its row
    as long as a kept sweep shows it."""
    path = str(tmp_path / "history.db")
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    start = time.time() - 600
    snaps = _churn(rec, 50, start)
    rec.close()
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf"), retention_s=3600).start()
    try:
        rec.enforce_retention(now_ms=int((start + 25.5 + 3600) * 1000))  # keeps the sweeps from start + 26 on
    finally:
        rec.close()
    source = RecordingSource(path)
    try:
        for snap in snaps[26:29]:
            assert [c.name for c in source.at(snap.taken_at).containers] == [c.name for c in snap.containers]
    finally:
        source.close()
