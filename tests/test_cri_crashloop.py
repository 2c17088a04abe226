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
ERROR = "RuntimeError: shard 7 of /data/train is corrupt (crc mismatch)"
CRASH = ["sh", "-c", "echo 'loading shard 7' >&2; echo \"auth with HF_TOKEN=$HF_TOKEN\" >&2; "
                     f"echo '{ERROR}' >&2; exit 3"]


@pytest.fixture(scope="module")
def looped(cri_node):
    """crasher: exits 3 five times (attempts 0-4, all kept, the newest exited: the kubelet's back-off);
    collected: three restarts, the earlier containers removed (their log files kept), attempt 3 running;
    once: exited 3 once, attempt 1 running (below the threshold); steady: runs, never restarted."""
    from mltop.diagnostics.doctor import run_doctor
    from mltop.probes.sampler import ProbeOptions, Sampler

    node = cri_node
    pods = {
        "crasher": node.run_pod("ml-team", "crasher", [ContainerSpec("train", CRASH, env={"HF_TOKEN": TOKEN})]),
        "collected": node.run_pod("ml-team", "collected", [ContainerSpec("train", CRASH, env={"HF_TOKEN": TOKEN})]),
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
    assert "auth with HF_TOKEN=[REDACTED]" in text and TOKEN not in text  # the secret it printed
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
    assert TOKEN not in text and "attempt running" not in text  # the running attempt's own log is not it


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
    assert TOKEN not in done.stdout


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
