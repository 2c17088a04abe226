"""Actions in pod containers through the CRI runtime's ExecSync (real pods in the private containerd): nvidia-smi
(a shell script in the container, as fake_nvidia_smi does for Docker; no GPU here), the device check, the read
test; a timeout the runtime enforces, --no-exec refusing CRI execs too, `mltop run` naming a pod container."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from cri_harness import ContainerSpec

TOKEN = "hf_" + "Q" * 34  # a Hugging Face token's shape: redacted wherever it is printed
SMI = "echo 'NVIDIA-SMI 550.54.15  Driver Version: 550.54.15  CUDA Version: 12.4'; echo \"token $HF_TOKEN\""



@pytest.fixture(scope="module")
def act_pods(cri_node):
    import shlex

    def install(script: str) -> list[str]:
        return ["sh", "-c", f"printf '%s\\n' '#!/bin/sh' {shlex.quote(script)} > /bin/nvidia-smi && "
                            "chmod +x /bin/nvidia-smi && exec sleep 600"]

    pods = {
        "smi": cri_node.run_pod("ml-team", "smi", [ContainerSpec("smi-worker", install(SMI), env={"HF_TOKEN": TOKEN})]),
        "slow": cri_node.run_pod("ml-team", "slow", [ContainerSpec("main", install("exec sleep 77"))]),
        "plain": cri_node.run_pod("ml-team", "plain", [ContainerSpec("main", ["sleep", "600"])]),
    }
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the script is written by the container's first command
        client = cri_node.client
        from mltop.probes.cri import runtime_pb2 as pb

        done = [client._stub.ExecSync(pb.ExecSyncRequest(
                    container_id=p.containers[n], cmd=["test", "-x", "/bin/nvidia-smi"], timeout=5)).exit_code == 0
                for p, n in ((pods["smi"], "smi-worker"), (pods["slow"], "main"))]
        if all(done):
            break
        time.sleep(0.2)
    yield pods
    for pod in pods.values():
        cri_node.remove_pod(pod)


@pytest.fixture
def snapshot(cri_node, act_pods, monkeypatch):
    from mltop.probes.sampler import ProbeOptions, Sampler

    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", cri_node.endpoint)
    monkeypatch.delenv("MLTOP_NO_EXEC", raising=False)
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=cri_node.endpoint, watch_events=False))
    try:
        yield sampler.sweep(), sampler.engine
    finally:
        sampler.close()


def _run(action, snapshot, name, **kwargs):
    from mltop.diagnostics.actions import ActionRun

    snap, engine = snapshot
    return ActionRun(action, snap, snap.container(name), engine, **kwargs).run()


def test_nvidia_smi_runs_in_a_pod_container_through_exec_sync_with_secrets_redacted(snapshot):
    result = _run("nvidia-smi", snapshot, "ml-team/smi/smi-worker")
    assert result.status == "ok", (result.explanation, result.output)
    assert "NVIDIA-SMI 550.54.15" in result.output
    assert TOKEN not in result.output and "token " in result.output  # the pod's own env value, scrubbed
    assert result.command == ("nvidia-smi",)


def test_nvidia_smi_missing_in_a_pod_falls_back_to_the_hosts_view(snapshot):
    result = _run("nvidia-smi", snapshot, "ml-team/plain/main")
    assert result.status == "unavailable", (result.explanation, result.output)
    assert result.data.get("fallback") == "host_nvml"


def test_an_exec_past_its_timeout_is_ended_by_the_runtime(snapshot, cri_node, act_pods):
    from mltop.probes.identity import identity_of_pid

    result = _run("nvidia-smi", snapshot, "ml-team/slow/main", timeout_s=2)
    assert result.status == "timeout", (result.explanation, result.output)
    cid = act_pods["slow"].containers["main"]
    deadline = time.monotonic() + 10

    def sleepers():
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        if f.read().split(b"\0")[:2] == [b"sleep", b"77"]:
                            identity = identity_of_pid(int(entry))
                            if identity is not None and identity.container_id == cid:
                                found.append(int(entry))
                except OSError:
                    pass
        return found

    while sleepers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not sleepers(), "the exec's process outlived its timeout"


def test_the_device_check_and_the_read_test_run_in_a_pod(snapshot):
    from mltop.diagnostics.doctor import run_doctor

    result = _run("device-check", snapshot, "ml-team/plain/main")
    print(result.status, result.explanation, result.output)
    # busybox has no python: the device check says so from inside the pod (the exec ran), not "engine down"
    assert result.status == "unavailable" and "python" in result.explanation.lower(), result.explanation
    snap, engine = snapshot
    doctor = run_doctor(snap, engine, containers=["ml-team/plain/main"], io_test="/bin/busybox", io_test_max_mb=1)
    assert [s for s in doctor.checks_skipped if s.check == "io.read_test"] == []
    (read,) = [f for f in doctor.findings if f.code in ("io.read_test", "io.slow")]
    assert read.container == "ml-team/plain/main" and "/bin/busybox" in read.title


def test_mltop_run_names_a_pod_container_and_no_exec_refuses_cri_execs(cri_node, act_pods):
    env = {**os.environ, "MLTOP_CRI_ENDPOINT": cri_node.endpoint}
    env.pop("MLTOP_NO_EXEC", None)
    for name in ("ml-team/smi/smi-worker", "smi-worker"):
        done = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "run", "nvidia-smi", name, "--no-nvml"],
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        assert "NVIDIA-SMI 550.54.15" in done.stdout and TOKEN not in done.stdout
    refused = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "--no-exec", "run", "nvidia-smi",
                              "ml-team/smi/smi-worker", "--no-nvml"], capture_output=True, text=True, timeout=120,
                             env=env)
    assert refused.returncode == 1
    assert "forbids docker exec and CRI exec" in refused.stderr
    assert "NVIDIA-SMI" not in refused.stdout


def test_py_spy_attaches_to_a_pod_containers_python_from_the_host(cri_node, test_images, monkeypatch):
    """p: py-spy dumps a pod container's busiest Python process by its host PID, as for Docker (no exec)."""
    import uuid

    from mltop.diagnostics.actions import ActionRun
    from mltop.probes.sampler import ProbeOptions, Sampler

    cri_node.import_images(test_images["python"])
    tag = uuid.uuid4().hex[:6]
    spin = f"def mltop_spin_{tag}():\n    while True:\n        sum(range(1000))\nmltop_spin_{tag}()\n"
    pod = cri_node.run_pod("ml-team", "spinner", [ContainerSpec("main", ["python3", "-c", spin],
                                                                image=test_images["python"])])
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", cri_node.endpoint)
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=cri_node.endpoint, watch_events=False))
    try:
        snap = sampler.sweep_pair(0.5)[1]
        c = snap.container(pod.containers["main"])
        result = ActionRun("py-spy", snap, c, sampler.engine).run()
        pid = cri_node.init_pid(pod.containers["main"])
    finally:
        sampler.close()
        cri_node.remove_pod(pod)
    assert result.status == "ok", (result.explanation, result.output)
    assert f"mltop_spin_{tag}" in result.output
    assert result.command[1:] == ("dump", "--pid", str(pid))  # attached from the host by host PID
