"""CrashLoopBackOff for pod containers (real pods in the private containerd, restarted by the test as the kubelet
would: a new container of the same name, attempt n, log file `<name>/<n>.log`, the dead ones kept): mltop lists
one container per pod container, the newest attempt carrying how the earlier ones ended, and the doctor names the
loop with the exit codes, the last lines of the last ended attempt's log (secrets redacted) and a kubectl fix.
Healthy look-alikes (a container restarted once, one that runs on) raise nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from cri_harness import ContainerSpec

TOKEN = "hf_" + "Q7x" * 12  # a Hugging Face token's shape, echoed by the crashing container
PASSWORD = "correct-horse-battery-staple"  # no token's shape: only its value, from the pod's env, gives it away
ENV = {"HF_TOKEN": TOKEN, "DB_PASSWORD": PASSWORD}
ERROR = "RuntimeError: shard 7 of /data/train is corrupt (crc mismatch)"
CRASH = ["sh", "-c", "echo 'loading shard 7' >&2; echo \"auth with HF_TOKEN=$HF_TOKEN\" >&2; "
                     f"echo \"db login with $DB_PASSWORD\" >&2; echo '{ERROR}' >&2; exit 3"]


@pytest.fixture(scope="module")
def looped(cri_node):
    """crasher: exits 3 five times (attempts 0-4, all kept, the newest exited: the kubelet's back-off);
    collected: three restarts, the earlier containers removed (their log files kept), attempt 3 running;
    once: exited 3 once, attempt 1 running (below the threshold); steady: runs, never restarted."""
    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.sampler import ProbeOptions, Sampler

    node = cri_node
    pods = {
        "crasher": node.run_pod("ml-team", "crasher", [ContainerSpec("train", CRASH, env=ENV)]),
        "collected": node.run_pod("ml-team", "collected", [ContainerSpec("train", CRASH, env=ENV)]),
        "once": node.run_pod("ml-team", "once", [ContainerSpec("main", ["sh", "-c", "echo bye; exit 3"])]),
        "steady": node.run_pod("ml-team", "steady", [ContainerSpec("main", ["sh", "-c", "echo up; exec sleep 600"])]),
    }
    running = ["sh", "-c", "echo 'attempt running'; exec sleep 600"]
    try:
        ids = {"crasher": node.crash_loop(pods["crasher"], "train", 4)}
        node.wait_exited(ids["crasher"][-1])
        ids["collected"] = node.crash_loop(pods["collected"], "train", 3, command=running)
        for cid in ids["collected"][:-1]:  # the kubelet's garbage collection
            node.client.remove_container(cid)
        ids["once"] = node.crash_loop(pods["once"], "main", 1, command=running)
        sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=node.endpoint, watch_events=False))
        try:
            snap = sampler.sweep()
            names = [c.name for c in snap.containers if c.kubernetes is not None
                     and c.kubernetes.pod in pods and c.kubernetes.namespace == "ml-team"]
            result = run_doctor(snap, sampler.engine, containers=names)
        finally:
            sampler.close()
        yield {"pods": pods, "ids": ids, "snap": snap, "result": result, "node": node}
    finally:
        for pod in pods.values():
            node.remove_pod(pod)


def findings(looped, code: str) -> dict:
    return {f.container: f for f in looped["result"].findings if f.code == code}


def test_the_attempts_of_a_pod_container_are_listed_as_one(looped):
    snap, ids = looped["snap"], looped["ids"]
    crashers = [c for c in snap.containers if c.name == "ml-team/crasher/train"]
    assert [c.id for c in crashers] == [ids["crasher"][-1]]  # the newest attempt, once
    (c,) = crashers
    assert c.status == "exited" and c.config.exit_code == 3 and c.config.restart_count == 4
    assert c.config.log_path.endswith("/train/4.log")
    earlier = c.kubernetes.previous_attempts
    assert [(a.attempt, a.container_id, a.exit_code, a.reason) for a in earlier] == [
        (n, ids["crasher"][n], 3, "Error") for n in (3, 2, 1, 0)]
    assert all(a.log_path.endswith(f"/train/{a.attempt}.log") and a.finished_at for a in earlier)
    (collected,) = [c for c in snap.containers if c.name == "ml-team/collected/train"]
    assert collected.status == "running" and collected.config.restart_count == 3
    assert collected.kubernetes.previous_attempts == ()  # removed: CRI knows nothing of them
    cri = next(s for s in snap.host.sources if s.kind == "cri")
    assert cri.containers == len([c for c in snap.containers if c.runtime != "docker"])  # one per pod container


def test_a_crash_loop_gets_crash_loop_back_off_with_exits_log_and_kubectl(looped):
    finding = findings(looped, "container.restart_loop")["ml-team/crasher/train"]
    assert finding.title == ("CrashLoopBackOff: the pod container has restarted 4 times, last exit code 3 (Error)")
    text = "\n".join(finding.evidence)
    assert "restartCount 4: attempt 4 has exited, waiting for its next restart" in text
    assert "attempt 4 exited 3 (Error) at 20" in text and "attempt 3 exited 3 (Error) at 20" in text
    assert "attempt 0 exited 3 (Error)" in text
    log_path = looped["snap"].container(looped["ids"]["crasher"][-1]).config.log_path
    assert f"log line {ERROR!r} — {log_path} (last 200 lines)" in text
    assert "auth with HF_TOKEN=[REDACTED]" in text and TOKEN not in text  # the secrets it printed
    assert "db login with [REDACTED]" in text and PASSWORD not in text
    assert finding.fix.startswith("Read why it dies: `kubectl -n ml-team logs crasher -c train --previous` and "
                                  "`kubectl -n ml-team describe pod crasher`")
    assert "docker" not in finding.fix + text


def test_a_collected_previous_attempt_still_gives_its_log_tail(looped):
    """The newest attempt runs again and its predecessors were removed: the previous attempt's log file
    (`2.log`), which outlives its container, is what `kubectl logs --previous` would show."""
    finding = findings(looped, "container.restart_loop")["ml-team/collected/train"]
    assert finding.title == "CrashLoopBackOff: the pod container has restarted 3 times"
    text = "\n".join(finding.evidence)
    assert "restartCount 3: attempt 3 is running" in text
    assert "attempts 0-2 removed by the kubelet's garbage collection" in text
    current = looped["snap"].container(looped["ids"]["collected"][-1]).config.log_path
    previous = os.path.join(os.path.dirname(current), "2.log")
    assert f"log line {ERROR!r} — {previous} (the previous attempt's log)" in text
    assert "db login with [REDACTED]" in text and TOKEN not in text and PASSWORD not in text
    assert "attempt running" not in text  # the running attempt's own log is not it


def test_healthy_look_alikes_raise_nothing(looped):
    """Restarted once (below restart_loop_count 3) and running again; never restarted: no lifecycle finding."""
    once = looped["snap"].container(looped["ids"]["once"][-1])
    assert once.config.restart_count == 1 and once.status == "running"
    assert [a.exit_code for a in once.kubernetes.previous_attempts] == [3]
    quiet = [f for f in looped["result"].findings if f.code.startswith("container.")
             and f.container in ("ml-team/once/main", "ml-team/steady/main")]
    assert quiet == []
    assert "ml-team/once/main" in looped["result"].containers_checked


def test_snapshot_json_and_the_doctor_cli_name_the_loop(looped, tmp_path):
    """`mltop snapshot --json` lists the crashing container once with its earlier attempts under `kubernetes`;
    `mltop doctor --cri-endpoint` names it (the Docker engine out of the way)."""
    node = looped["node"]
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/dead.sock"}
    done = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "snapshot", "--json", "--no-nvml",
                           "--cri-endpoint", node.endpoint], capture_output=True, text=True, env=env, timeout=120)
    doc = json.loads(done.stdout)
    (c,) = [c for c in doc["containers"] if c["name"] == "ml-team/crasher/train"]
    assert c["config"]["restart_count"] == 4 and c["config"]["exit_code"] == 3
    assert [a["attempt"] for a in c["kubernetes"]["previous_attempts"]] == [3, 2, 1, 0]
    assert {a["exit_code"] for a in c["kubernetes"]["previous_attempts"]} == {3}
    done = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "doctor", "--json", "--no-nvml",
                           "--cri-endpoint", node.endpoint, "ml-team/crasher/train", "ml-team/steady/main"],
                          capture_output=True, text=True, env=env, timeout=120)
    report = json.loads(done.stdout)
    found = {(f["code"], f["container"]) for f in report["findings"]}
    assert ("container.restart_loop", "ml-team/crasher/train") in found
    assert not [f for f in found if f[1] == "ml-team/steady/main" and f[0].startswith("container.")]
    assert TOKEN not in done.stdout and PASSWORD not in done.stdout


def test_a_cold_start_lists_a_crash_loop_once(looped):
    """In the dashboard's background mode the statuses of new containers arrive later: the attempts are one
    container from the first frame, and their exit codes follow."""
    from mltop.probes.sampler import ProbeOptions, Sampler

    ids = looped["ids"]["crasher"]
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=looped["node"].endpoint, watch_events=False,
                                   inspect_in_background=True))
    try:
        first = sampler.sweep()
        assert [c.id for c in first.containers if c.name == "ml-team/crasher/train"] == [ids[-1]]
        deadline = time.monotonic() + 20
        while True:
            snap = sampler.sweep()
            c = snap.container(ids[-1])
            if not c.config_pending and all(a.exit_code is not None for a in c.kubernetes.previous_attempts):
                break
            assert time.monotonic() < deadline, "the statuses never arrived"
            time.sleep(0.2)
    finally:
        sampler.close()
    assert [a.attempt for a in c.kubernetes.previous_attempts] == [3, 2, 1, 0]


# --------------------------------------------------------------------------- without a runtime

POD_UID = "5f2d3a1c-8e4b-4c2a-9f1e-0a1b2c3d4e5f"


def _cri(cid: str, name: str, attempt: int, created: int, *, uid: str = POD_UID, sandbox: str = "sb1",
         exit_code: int | None = 3, reason: str = "Error"):
    """A listed CRI container and its status, as containerd gives them for attempt `attempt` of `name`."""
    from mltop.probes.cri import runtime_pb2 as pb

    labels = {"io.kubernetes.pod.namespace": "ml-team", "io.kubernetes.pod.name": "trainer",
              "io.kubernetes.pod.uid": uid, "io.kubernetes.container.name": name}
    annotations = {"io.kubernetes.container.restartCount": str(attempt)}
    state = 1 if exit_code is None else 2
    listed = pb.Container(id=cid, pod_sandbox_id=sandbox, metadata=pb.ContainerMetadata(name=name, attempt=attempt),
                          state=state, created_at=created, labels=labels, annotations=annotations)
    status = pb.ContainerStatusResponse(status=pb.ContainerStatus(
        id=cid, metadata=listed.metadata, state=state, created_at=created, started_at=created + 10**8,
        finished_at=created + 10**9 if exit_code is not None else 0, exit_code=exit_code or 0,
        reason=reason if exit_code is not None else "", labels=labels, annotations=annotations,
        log_path=f"/var/log/pods/ml-team_trainer_{uid}/{name}/{attempt}.log"))
    return listed, status


def test_the_attempts_collapse_to_the_newest_with_the_earlier_exits_newest_first():
    from mltop.probes.cri.attempts import collapse_attempts
    from mltop.probes.cri.source import attempt_from_cri, meta_from_cri

    t = int(time.time() - 3600) * 10**9
    made = [  # listed in no particular order, as ListContainers gives them
        _cri("a1", "main", 1, t + 10**10),
        _cri("s0", "sidecar", 0, t, exit_code=None),
        _cri("a3", "main", 3, t + 3 * 10**10, exit_code=None),  # the newest: running again
        _cri("a0", "main", 0, t),
        _cri("a2", "main", 2, t + 2 * 10**10, exit_code=137, reason="OOMKilled"),
        _cri("b0", "main", 0, t, uid="0b0b0b0b-0000-4000-8000-000000000000", sandbox="sb2", exit_code=None),
    ]
    entries = [(listed, meta_from_cri(listed, status, None, "containerd"), attempt_from_cri(listed, status))
               for listed, status in made]
    metas = collapse_attempts(entries)
    assert [m.id for m in metas] == ["a3", "s0", "b0"]  # one per pod container, where its first attempt stood
    main = metas[0]
    assert main.name == "ml-team/trainer/main" and main.status == "running" and main.config.restart_count == 3
    assert [(a.attempt, a.container_id, a.exit_code, a.reason) for a in main.kubernetes.previous_attempts] == [
        (2, "a2", 137, "OOMKilled"), (1, "a1", 3, "Error"), (0, "a0", 3, "Error")]
    assert main.kubernetes.previous_attempts[0].finished_at.startswith("2026-")
    assert main.kubernetes.previous_attempts[0].log_path.endswith("/main/2.log")
    assert metas[1].kubernetes.previous_attempts == () and metas[2].kubernetes.previous_attempts == ()
    # an attempt whose status is still on the way (a cold start) is known by its number and log file only
    listed, _ = made[0]
    pending = collapse_attempts([entries[2], (listed, entries[0][1], attempt_from_cri(listed, None))])
    (early,) = pending[0].kubernetes.previous_attempts
    assert (early.attempt, early.exit_code, early.reason) == (1, None, "")
    assert early.log_path == "/var/log/pods/ml-team_trainer_5f2d3a1c-8e4b-4c2a-9f1e-0a1b2c3d4e5f/main/1.log"
    # the sampler keeps a meta's caches while it is the same object: unchanged attempts give the same meta back
    cache: dict = {}
    first = collapse_attempts(entries, cache)
    assert collapse_attempts(entries, cache)[0] is first[0]
    moved = [*entries[:2], (made[2][0], meta_from_cri(*made[2], None, "containerd"), entries[2][2]), *entries[3:]]
    assert collapse_attempts(moved, cache)[0] is not first[0]
    # the same attempt number twice (the kubelet made it again): the one created last wins
    again = _cri("a3b", "main", 3, t + 4 * 10**10, exit_code=None)
    both = collapse_attempts([entries[2], (again[0], meta_from_cri(*again, None, "containerd"),
                                           attempt_from_cri(*again))])
    assert [m.id for m in both] == ["a3b"] and both[0].kubernetes.previous_attempts[0].container_id == "a3"


def _pod_sample(status: str, restarts: int, previous=(), **config):
    from builders import container
    from builders import config as make_config

    from mltop.probes.model import KubernetesInfo

    k = KubernetesInfo("ml-team", "trainer", POD_UID, "main", "Burstable", previous_attempts=tuple(previous))
    cfg = make_config(restart_count=restarts, log_path=f"/var/log/pods/x/main/{restarts}.log", **config)
    return container("ml-team/trainer/main", status=status, kubernetes=k, runtime="containerd", config=cfg)


def _judge(c, logs=(), previous_logs=None):
    from builders import snapshot

    from mltop.diagnostics.checks import CheckContext, HostFacts, Thresholds
    from mltop.diagnostics.checks.container import check_restarts

    ctx = CheckContext(snapshot=snapshot([c]), containers=(c,), logs={c.id: tuple(logs)}, host=HostFacts(),
                       thresholds=Thresholds(), previous_logs=previous_logs or {})
    return check_restarts(ctx, c)


def test_an_oom_killed_crash_loop_points_at_the_memory_limit():
    from mltop.probes.model import ContainerAttempt

    earlier = [ContainerAttempt(n, f"c{n}", "exited", 137, "OOMKilled", None, f"2026-12-02T07:0{n}:00Z", None)
               for n in (2, 1, 0)]
    c = _pod_sample("exited", 3, earlier, exit_code=137, oom_killed=True, memory_limit_bytes=512 << 20,
                    finished_at="2026-12-02T07:03:00Z")
    (loop,) = [f for f in _judge(c) if f.code == "container.restart_loop"]
    assert loop.title == "CrashLoopBackOff: the pod container has restarted 3 times, last exit code 137 (OOMKilled)"
    assert ("attempt 3 exited 137 (OOMKilled) at 2026-12-02T07:03:00Z, attempt 2 exited 137 (OOMKilled) at "
            "2026-12-02T07:02:00Z") in "\n".join(loop.evidence)
    assert "`containers: [{name: main, resources: {limits: {memory: 1Gi}}}]`" in loop.fix
    assert "garbage collection" not in "\n".join(loop.evidence)  # attempts 0-3 are all known


def test_a_pod_container_dead_of_a_signal_gets_kubectl_not_docker():
    c = _pod_sample("exited", 0, exit_code=139, finished_at="2026-12-02T07:03:00Z")
    (crash,) = _judge(c, logs=["Segmentation fault (core dumped)"])
    assert crash.code == "container.crashed" and crash.title == "The pod container died of SIGSEGV (segmentation fault)"
    assert crash.fix.startswith("Read the last log lines: `kubectl -n ml-team logs trainer -c main --previous`")
    assert "log line 'Segmentation fault (core dumped)' — /var/log/pods/x/main/0.log" in "\n".join(crash.evidence)
    bus = _pod_sample("exited", 0, exit_code=135)
    assert "emptyDir: {medium: Memory" in _judge(bus)[0].fix
    killed = _pod_sample("exited", 0, exit_code=137)
    (info,) = _judge(killed)
    assert info.severity == "info" and "liveness probe" in info.fix and "docker" not in info.fix
    # the Docker container of the same facts keeps its words
    from builders import container

    docker = container("trainer", status="exited", config_overrides=dict(exit_code=139, restart_count=5))
    assert [f.fix.startswith("Read why it dies: `docker logs") or f.fix.startswith("Read the last log lines: "
                                                                                     "`docker logs")
            for f in _judge(docker)] == [True, True]


def test_a_running_attempt_shows_the_previous_attempts_log_and_hostile_lines_literally():
    c = _pod_sample("running", 5, exit_code=None)
    hostile = ["[bold red]boom[/] \x1b[31m", "HF_TOKEN=[REDACTED]", "Traceback: ValueError('x')"]
    (loop,) = _judge(c, logs=["started again"], previous_logs={c.id: ("/var/log/pods/x/main/4.log", hostile)})
    text = "\n".join(loop.evidence)
    assert "attempts 0-4 removed by the kubelet's garbage collection" in text
    assert "log line '[bold red]boom[/] \\x1b[31m' — /var/log/pods/x/main/4.log (the previous attempt's log)" in text
    assert "started again" not in text


def test_the_previous_log_is_the_previous_attempts_file_or_its_sibling(tmp_path):
    from mltop.probes.cri.attempts import previous_log_path
    from mltop.probes.model import ContainerAttempt

    (tmp_path / "main").mkdir()
    for n in (2, 3):
        (tmp_path / "main" / f"{n}.log").write_text("")
    running = _pod_sample("running", 4, exit_code=None)
    running = replace_log(running, str(tmp_path / "main" / "4.log"))
    assert previous_log_path(running) == str(tmp_path / "main" / "3.log")  # collected: its file outlived it
    kept = ContainerAttempt(2, "c2", "exited", 1, "Error", None, None, str(tmp_path / "main" / "2.log"))
    assert previous_log_path(replace_k(running, (kept,))) == str(tmp_path / "main" / "2.log")
    assert previous_log_path(replace_log(running, str(tmp_path / "main" / "2.log"))) is None  # no 1.log
    from builders import replace

    assert previous_log_path(replace(running, status="exited")) is None  # its own log is the last ended one


def replace_log(c, path: str):
    from builders import replace

    return replace(c, config=replace(c.config, log_path=path))


def replace_k(c, previous):
    from builders import replace

    return replace(c, kubernetes=replace(c.kubernetes, previous_attempts=previous))


def test_dead_attempts_are_asked_once(cri_pods):
    """A steady sweep costs the two lists: the dead attempts' statuses were asked when they were new, and a dead
    container's state does not move. The kubelet's next attempt is asked for alone."""
    from mltop.probes.cri.source import CriSource

    node = cri_pods.node
    pod = cri_pods.run("ml-team", "asked", [ContainerSpec("main", ["sh", "-c", "exit 3"])])
    ids = node.crash_loop(pod, "main", 1)
    node.wait_exited(ids[-1])
    source = CriSource(node.endpoint)
    try:
        source.view()
        asked = []
        client = source._connect()
        real = client.container_status
        client.container_status = lambda cid, verbose=True: asked.append(cid) or real(cid, verbose=verbose)
        status, metas = source.view()
        assert status.ok and asked == []
        newest = node.restart_container(pod, "main", command=["sleep", "600"])  # attempt 2
        metas = source.view()[1]
        assert asked == [newest]
    finally:
        source.close()
    (main,) = [m for m in metas if m.name == "ml-team/asked/main"]
    assert main.id == newest and [a.attempt for a in main.kubernetes.previous_attempts] == [1, 0]


def test_the_kubelets_next_attempt_is_a_restart_event_not_a_new_container(cri_pods):
    """The pod events (timeline, `mltop events`) see the attempts as one container: the earlier attempt's
    disappearance from the list is the restart, not a `destroy` beside a `create`."""
    from mltop.probes.pod_events import PodEventTracker
    from mltop.probes.sampler import ProbeOptions, Sampler

    node = cri_pods.node
    pod = cri_pods.run("ml-team", "evented", [ContainerSpec("main", ["sh", "-c", "exit 3"])])
    node.wait_exited(pod.containers["main"])
    tracker = PodEventTracker()
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=node.endpoint, watch_events=False))
    try:
        tracker.observe(sampler.sweep())
        newest = node.restart_container(pod, "main", command=["sleep", "600"])
        deadline = time.monotonic() + 20
        while True:
            snap = sampler.sweep()
            if snap.container(newest) is not None and snap.container(newest).status == "running":
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        events = [(e.kind, e.container_id, e.detail) for e in tracker.observe(snap)
                  if e.container == "ml-team/evented/main"]
    finally:
        sampler.close()
    assert events[0] == ("restart", newest, {"restart_count": 1, "previous_restart_count": 0})
    assert "destroy" not in [kind for kind, _, _ in events] and "create" not in [kind for kind, _, _ in events]


async def test_the_dashboard_shows_one_row_per_pod_container_and_the_last_exits(looped, monkeypatch):
    """The containers table holds the newest attempt only; its detail says the restarts and how the last
    attempts ended."""
    from conftest import until

    from mltop.tui.app import MltopApp
    from mltop.tui.screens.detail import ContainerDetailScreen

    ids = looped["ids"]["crasher"]
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", looped["node"].endpoint)
    app = MltopApp(nvml=False, interval=0.5)
    async with app.run_test(size=(160, 50)) as pilot:
        table = app.screen.table
        await until(pilot, lambda: ids[-1] in table.keys_in_order, timeout=30, what="the crasher's row")
        assert not set(ids[:-1]) & set(table.keys_in_order)  # one row, not one per attempt
        await until(pilot, lambda: table.move_to_key(ids[-1]), what="the crasher's row")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), what="the detail screen")
        # the earlier attempts' exits are asked of the runtime once, after the sweep that named the container
        await until(pilot, lambda: "\nexits" in str(app.screen.query_one("#config").render()), timeout=30,
                    what="the last attempts' exits")
        text = str(app.screen.query_one("#config").render())
    lines = text.splitlines()
    assert "restarts  4" in lines
    (exits,) = [line for line in lines if line.startswith("exits")]
    assert exits.startswith("exits     #4 exit 3 Error ") and ", #3 exit 3 Error " in exits
    assert exits.endswith("(+2 earlier)")


def test_a_recording_keeps_the_earlier_attempts_and_replay_names_the_loop_as_live(looped, tmp_path):
    """Replay shows how the earlier attempts ended, and the doctor on the replay says CrashLoopBackOff with the
    same exit codes as live (the log files are not the recording's: the tail is live's alone)."""
    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.recording import Recorder, RecordingSource

    path = str(tmp_path / "h.db")
    rec = Recorder(path, watch_engine=False, retention_every_s=float("inf")).start()
    rec.record(looped["snap"])
    rec.flush()
    rec.close()
    replayed = RecordingSource(path).latest()
    live = {c.name: c for c in looped["snap"].containers}
    for c in replayed.containers:
        if c.kubernetes is not None and c.kubernetes.pod in looped["pods"]:
            assert c.kubernetes.previous_attempts == live[c.name].kubernetes.previous_attempts, c.name
            assert c.runtime == live[c.name].runtime == "containerd"
    (crasher,) = [c for c in replayed.containers if c.name == "ml-team/crasher/train"]
    assert [a.exit_code for a in crasher.kubernetes.previous_attempts] == [3, 3, 3, 3]
    again = run_doctor(replayed, None, containers=["ml-team/crasher/train"])
    (finding,) = [f for f in again.findings if f.code == "container.restart_loop"]
    was = findings(looped, "container.restart_loop")["ml-team/crasher/train"]
    assert finding.title == was.title and "CrashLoopBackOff" in finding.title
    exits = [e for e in finding.evidence if "attempt" in e and "exit" in e]
    assert exits and exits == [e for e in was.evidence if "attempt" in e and "exit" in e]
