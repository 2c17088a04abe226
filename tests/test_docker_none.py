"""`--docker-host none` turns the Docker engine off, as `--cri-endpoint none` turns CRI off: on a node with pods
(a private containerd) beside a real Docker engine that holds a container, mltop opens no connection to the
engine (a proxy in front of it counts them), says "disabled" where it names sources and raises no alarm, while
the pods and the host are still read and judged. The look-alikes: the same commands without it read Docker,
and a bad engine named on purpose still alarms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import until
from cri_harness import ContainerSpec
from engine_proxy import EngineSocketProxy
from serve_helpers import ServeProcess, wait_until

SMI = "echo 'NVIDIA-SMI 550.54.15  Driver Version: 550.54.15  CUDA Version: 12.4'"


@pytest.fixture(scope="module")
def node_pods(cri_node):
    """A pod whose container fills most of its 64 MiB /dev/shm (a pod finding for the doctor) and one with an
    nvidia-smi script (an action through the runtime's ExecSync)."""
    import shlex

    from mltop.probes.cri import runtime_pb2 as pb

    pods = {
        "shmfull": cri_node.run_pod("ml-team", "shmfull", [ContainerSpec("main", [
            "sh", "-c", "dd if=/dev/zero of=/dev/shm/batch bs=1M count=60 2>/dev/null; touch /tmp/ready; "
                        "exec sleep 600"])]),
        "smi": cri_node.run_pod("ml-team", "smi", [ContainerSpec("smi-worker", [
            "sh", "-c", f"printf '%s\\n' '#!/bin/sh' {shlex.quote(SMI)} > /bin/nvidia-smi && chmod +x /bin/nvidia-smi"
                        " && touch /tmp/ready && exec sleep 600"])]),
    }
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # each container's first command readies it
        if all(cri_node.client._stub.ExecSync(pb.ExecSyncRequest(
                container_id=pod.containers[name], cmd=["test", "-e", "/tmp/ready"], timeout=5)).exit_code == 0
               for pod, name in ((pods["shmfull"], "main"), (pods["smi"], "smi-worker"))):
            break
        time.sleep(0.2)
    yield pods
    for pod in pods.values():
        cri_node.remove_pod(pod)


@pytest.fixture
def engine(tmp_path):
    """The real engine behind a proxy that counts connections; DOCKER_HOST names the proxy."""
    proxy = EngineSocketProxy(tmp_path / "docker.sock").start()
    yield proxy
    proxy.stop()


def _env(cri_node, engine, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLTOP_DOCKER_HOST", "MLTOP_NO_EXEC")}
    return {**env, "DOCKER_HOST": engine.docker_host, "MLTOP_CRI_ENDPOINT": cri_node.endpoint,
            "MLTOP_POD_RESOURCES_SOCKET": "none", **extra}  # (no kubelet here)


def _mltop(env, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mltop.tui.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _snapshot(env, *args):
    done = _mltop(env, "snapshot", "--json", "--no-nvml", *args)
    doc = json.loads(done.stdout)
    return done, doc, {s["kind"]: s for s in doc["host"]["sources"]}, {c["id"] for c in doc["containers"]}


def test_snapshot_with_docker_none_opens_no_connection_and_lists_the_pods(cri_node, node_pods, engine, containers,
                                                                         tmp_path):
    docker_one = containers.run(["sleep", "300"])
    pod_main = node_pods["shmfull"].containers["main"]
    env = _env(cri_node, engine)

    done, doc, sources, ids = _snapshot(env, "--docker-host", "none")
    assert done.returncode == 0, done.stderr
    assert engine.connections == 0 and engine.requests == []  # not one socket opened to the engine
    assert sources["docker"] == {"kind": "docker", "endpoint": "none", "status": "disabled",
                                 "error": "Docker turned off (--docker-host none)", "runtime": None,
                                 "version": None, "containers": 0}
    assert sources["cri"]["status"] == "ok" and sources["cri"]["runtime"] == "containerd"
    assert pod_main in ids and docker_one.id not in ids
    assert doc["host"]["engine"]["status"] == "disabled"
    assert "mltop:" not in done.stderr  # no alarm, and no "nothing is asked" either: CRI is

    # mltop's own variable does the same ($DOCKER_HOST is the docker CLI's, and left to it)
    done, _, sources, ids = _snapshot(_env(cri_node, engine, MLTOP_DOCKER_HOST="none"))
    assert done.returncode == 0, done.stderr
    assert sources["docker"]["status"] == "disabled" and "MLTOP_DOCKER_HOST=none" in sources["docker"]["error"]
    assert engine.connections == 0 and pod_main in ids

    # look-alike: the same command without it reads Docker through the proxy
    done, _, sources, ids = _snapshot(env)
    assert done.returncode == 0, done.stderr
    assert engine.connections > 0 and sources["docker"]["status"] == "ok"
    assert docker_one.id in ids and pod_main in ids

    # look-alike: a bad engine named on purpose still alarms (exit 3, the reason on stderr)
    done, _, sources, ids = _snapshot(env, "--docker-host", f"unix://{tmp_path}/dead.sock")
    assert done.returncode == 3 and sources["docker"]["status"] == "unreachable" and pod_main in ids
    assert "No Docker engine at" in done.stderr

    # DOCKER_HOST=none is a machine named "none" to the docker CLI: not a switch, but the error says which is
    done, _, sources, _ = _snapshot(_env(cri_node, engine, DOCKER_HOST="none"))
    assert done.returncode == 3 and sources["docker"]["status"] == "error"
    assert "--docker-host none or MLTOP_DOCKER_HOST=none" in sources["docker"]["error"]


def test_with_neither_docker_nor_cri_nothing_is_asked_and_it_says_so(cri_node, engine, tmp_path):
    env = _env(cri_node, engine)
    done, doc, sources, ids = _snapshot(env, "--docker-host", "none", "--cri-endpoint", "none")
    assert done.returncode == 0, done.stderr  # asked for on purpose: the host and GPUs are still read
    assert list(sources) == ["docker"] and sources["docker"]["status"] == "disabled" and ids == set()
    assert doc["host"]["hostname"] and doc["host"]["cpu_count"] > 0
    assert "mltop: no container source is asked: Docker turned off (--docker-host none), and no CRI runtime" \
        in done.stderr
    assert engine.connections == 0
    doctor = _mltop(env, "doctor", "--json", "--no-nvml", "--docker-host", "none", "--cri-endpoint", "none")
    assert doctor.returncode in (0, 1, 2) and not [f for f in json.loads(doctor.stdout)["findings"]
                                                   if f["code"].startswith("engine.")]
    assert "mltop doctor: no container source is asked" in doctor.stderr
    report = _mltop(env, "report", "--no-nvml", "--no-doctor", "--docker-host", "none", "--cri-endpoint", "none",
                    "-o", str(tmp_path / "r.json"))
    assert report.returncode == 0 and "mltop report: no container source is asked" in report.stderr
    assert json.loads((tmp_path / "r.json").read_text())["host"]["engine"]["status"] == "disabled"
    run = _mltop(env, "run", "nvidia-smi", "anything", "--no-nvml", "--docker-host", "none", "--cri-endpoint", "none")
    assert run.returncode == 3 and "mltop run: no container source is asked" in run.stderr
    assert "Traceback" not in doctor.stderr + report.stderr + run.stderr
    assert engine.connections == 0


def test_doctor_with_docker_none_judges_pods_and_host_without_an_engine_finding(cri_node, node_pods, engine,
                                                                                nvml_scenario, tmp_path):
    lib = nvml_scenario(init_error=18)  # NVML: driver/library version mismatch, a critical host finding
    env = _env(cri_node, engine)
    pod = "ml-team/shmfull/main"

    done = _mltop(env, "doctor", "--json", "--nvml-lib", lib, "--docker-host", "none", pod)
    doc = json.loads(done.stdout)
    codes = {(f["code"], f["container"]) for f in doc["findings"]}
    assert ("driver.nvml_mismatch", None) in codes  # the host is judged
    assert ("shm.too_small", pod) in codes  # and the pod
    assert not [c for c, _ in codes if c.startswith("engine.")]
    assert done.returncode == 2  # by the findings: the critical driver one, not an engine
    assert engine.connections == 0
    text = _mltop(env, "doctor", "--nvml-lib", lib, "--docker-host", "none", pod)
    assert text.stdout.startswith(f"mltop doctor: host {os.uname().nodename}, docker off, 1 container(s) checked")

    # look-alike: a bad engine named on purpose is the doctor's critical engine.unreachable
    dead = _mltop(env, "doctor", "--json", "--no-nvml", "--docker-host", f"unix://{tmp_path}/dead.sock", pod)
    found = {(f["code"], f["container"]) for f in json.loads(dead.stdout)["findings"]}
    assert ("engine.unreachable", None) in found and ("shm.too_small", pod) in found
    assert dead.returncode == 2


def test_actions_need_docker_refused_clearly_pods_exec_through_their_runtime(cri_node, node_pods, engine,
                                                                             containers, sampler):
    from mltop.diagnostics.actions import ActionRun
    from mltop.diagnostics.actions.runner import StepControl, exec_in_container
    from mltop.probes.engine import Engine

    # a pod container: `mltop run` with Docker off goes through containerd's ExecSync
    env = _env(cri_node, engine)
    done = _mltop(env, "run", "nvidia-smi", "ml-team/smi/smi-worker", "--no-nvml", "--docker-host", "none")
    assert done.returncode == 0, done.stderr
    assert "NVIDIA-SMI 550.54.15" in done.stdout
    assert engine.connections == 0

    # a Docker container (seen by a sampler that reads Docker) with the engine turned off: refused in words
    docker_one = containers.run(["sleep", "300"])
    snap = sampler.sweep()
    off = Engine("none")
    result = ActionRun("nvidia-smi", snap, snap.container(docker_one.id), off).run()
    assert result.status == "unavailable"
    assert result.explanation == (f"Docker turned off (--docker-host none): mltop does not docker exec into "
                                  f"{docker_one.name}")
    outcome = exec_in_container(off, docker_one.id, ["true"], StepControl.within(5))
    assert outcome.error.startswith("Docker turned off (--docker-host none)") and outcome.exit_code is None
    assert off.status().status == "disabled"


async def test_dashboard_header_names_the_cri_runtime_only(cri_node, node_pods, engine, containers, monkeypatch):
    from mltop.tui.app import MltopApp
    from mltop.tui.screens.dashboard import DashboardScreen

    docker_one = containers.run(["sleep", "300"])
    monkeypatch.setenv("DOCKER_HOST", engine.docker_host)
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", cri_node.endpoint)
    app = MltopApp(docker_host="none", nvml=False, interval=0.5)
    pod_main = node_pods["shmfull"].containers["main"]
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen)
                    and pod_main in app.screen.table.keys_in_order and app.sweeps > 2, timeout=30, what="the pods")
        header = app.screen.query_one("#header").plain
        assert "containerd 1.6" in header and "(CRI)" in header
        assert "docker" not in header.lower() and "DOWN" not in header and "engine" not in header
        assert docker_one.id not in app.screen.table.keys_in_order
        assert "engine down" not in str(app.screen.table.border_title)
    assert engine.connections == 0

    # with CRI off too: "docker off" and one line saying nothing lists containers
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", "none")
    app = MltopApp(docker_host="none", nvml=False, interval=0.5)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.sweeps > 1, what="a sweep")
        header = app.screen.query_one("#header").plain
        assert "docker off" in header and "DOWN" not in header
        assert "no container source is asked" in header
    assert engine.connections == 0


def test_serve_says_docker_disabled_and_stays_healthy(cri_node, node_pods, engine):
    serve = ServeProcess("--interval", "0.5", "--doctor-interval", "1", "--no-nvml", "--docker-host", "none",
                         env={"DOCKER_HOST": engine.docker_host, "MLTOP_CRI_ENDPOINT": cri_node.endpoint})
    try:
        serve.wait_healthy()
        metrics = wait_until(lambda: (lambda m: m if "mltop_doctor_age_seconds" in m else None)(serve.metrics()),
                             30, "a doctor run")
        assert metrics["mltop_engine_up"] == [({"status": "disabled"}, 0.0)]
        up = {labels["kind"]: (labels, value) for labels, value in metrics["mltop_source_up"]}
        assert up["docker"] == ({"kind": "docker", "endpoint": "none", "runtime": "", "version": "",
                                 "status": "disabled"}, 0.0)
        assert up["cri"][0]["runtime"] == "containerd" and up["cri"][1] == 1.0
        codes = {labels["code"] for labels, _ in metrics.get("mltop_finding", [])}
        assert "shm.too_small" in codes and not [c for c in codes if c.startswith("engine.")]  # pods judged
        code, body = serve.get("/healthz")
        assert code == 200 and "sources: docker disabled, containerd (CRI) ok" in body.decode()
        time.sleep(1.5)  # sweeps, the doctor and the recorder went on a while
        assert engine.connections == 0
    finally:
        serve.stop()


def test_a_docker_source_meant_not_to_answer_is_no_alarm_anywhere():
    """Turned off, or absent from a node whose CRI runtime answers: mltop_engine_up's status says which (so
    MltopEngineDown leaves it be), and a fleet host read back from that label is no alarm either. The
    look-alike: the same engine down where it should answer."""
    import dataclasses

    from builders import snapshot

    from mltop.probes.model import EngineStatus, SourceStatus
    from mltop.tui.serve.metrics import engine_family
    from mltop.tui.widgets.header import header_parts, problems

    def host_with(engine, *sources):
        snap = snapshot()
        return dataclasses.replace(snap, host=dataclasses.replace(snap.host, engine=engine, sources=sources))

    def up(snap):
        (sample,) = engine_family(snap.host).samples
        return sample.labels["status"], sample.value

    def header(snap):
        facts, lines = header_parts(snap, snap.host.docker_host, 1.0, False)
        return " ".join(f.text.plain for f in facts), [line.plain for line in lines]

    cri = SourceStatus("cri", "unix:///run/containerd/containerd.sock", "ok", None, "containerd", "1.7.2", 3)
    off = EngineStatus("disabled", "Docker turned off (--docker-host none)", "none")
    down = EngineStatus("unreachable", "No Docker engine at unix:///var/run/docker.sock", "unix:///var/run/docker.sock")
    disabled = host_with(off, SourceStatus("docker", "none", "disabled", off.error), cri)
    absent = host_with(down, SourceStatus("docker", down.docker_host, "absent"), cri)
    alarm = host_with(down, SourceStatus("docker", down.docker_host, "unreachable", down.error), cri)
    assert up(disabled) == ("disabled", 0.0) and up(absent) == ("absent", 0.0) and up(alarm) == ("unreachable", 0.0)
    assert not disabled.host.engine_down and not absent.host.engine_down and alarm.host.engine_down
    assert disabled.host.no_container_source is None  # CRI is asked

    # a fleet host: no sources, only the agent's mltop_engine_up (probes/fleet_host.py)
    for status, word in (("disabled", "docker off"), ("absent", "no docker")):
        fleet = host_with(EngineStatus(status, "why", "prometheus: h1:10140"))
        assert not fleet.host.engine_down
        text, lines = header(fleet)
        assert word in text and "DOWN" not in text and not [p for p in problems(fleet) if p[0] == "engine"]
    fleet_down = host_with(EngineStatus("unreachable", "the agent's engine did not answer", "prometheus: h1:10140"))
    assert fleet_down.host.engine_down and "DOWN" in header(fleet_down)[0]
