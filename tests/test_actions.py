"""The in-container actions against a real engine: real py-spy, the container's own Python with a CPU
build of PyTorch, nvidia-smi's fallback to the host's (simulated) NVML view, timeouts and cancelling."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
import uuid

import pytest

from conftest import fake_nvidia_smi, wait_for
from fixtures_torch import TORCH_VERSION, torch_container
from mltop.diagnostics.actions import (
    CANCELLED,
    FAILED,
    OK,
    TIMEOUT,
    UNAVAILABLE,
    ActionLog,
    ActionRun,
    PtraceFacts,
    explain_missing_nvidia_smi,
    explain_py_spy_failure,
    find_py_spy,
)
from mltop.probes.model import DeviceRequest
from mltop.probes.redaction import REDACTED
from mltop.probes.sampler import ProbeOptions, Sampler



def _snapshot(sampler, seconds=0.0):
    if seconds:
        sampler.sweep()
        time.sleep(seconds)
    return sampler.sweep()


def _host_pid(container) -> int:
    container.reload()
    return int(container.attrs["State"]["Pid"])


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def _run(action, snapshot, container, engine, **kwargs):
    lines: list[str] = []
    result = ActionRun(action, snapshot, container.id, engine, on_line=lines.append, **kwargs).run()
    return result, lines


# ----------------------------------------------------------------------------- py-spy

SPIN = """
import time
def mltop_spin_{tag}():
    while True:
        sum(range(1000))
mltop_spin_{tag}()
"""
NAP = """
import time
def mltop_nap_{tag}():
    while True:
        time.sleep(0.05)
mltop_nap_{tag}()
"""


def test_py_spy_dumps_the_stack_of_a_python_loop(containers, sampler):
    tag = uuid.uuid4().hex[:6]
    c = containers.run(["python3", "-c", SPIN.format(tag=tag)], image="python")
    snap = _snapshot(sampler)
    log = ActionLog()
    result, lines = _run("py-spy", snap, c, sampler.engine, log=log)
    assert result.status == OK, (result.explanation, result.output)
    assert f"mltop_spin_{tag}" in result.output  # the function the container is running right now
    assert "Thread" in result.output
    pid = _host_pid(c)
    assert result.command[1:] == ("dump", "--pid", str(pid))  # argv, attached from the host by host PID
    assert result.data["pid"] == pid
    assert "\n".join(lines) == result.output  # what streamed is what was kept
    assert log.latest("py-spy", c.name) is result


def test_py_spy_defaults_to_the_busiest_python_process_and_takes_a_host_pid(containers, sampler):
    tag = uuid.uuid4().hex[:6]
    script = f"python3 -c '{NAP.format(tag=tag)}' & exec python3 -c '{SPIN.format(tag=tag)}'"
    c = containers.run(["sh", "-c", script], image="python")
    wait_for(lambda: len(_children(_host_pid(c))) == 1, what="the napping child")
    snap = _snapshot(sampler, 1.0)
    busiest, _ = _run("py-spy", snap, c, sampler.engine)
    assert busiest.status == OK, busiest.explanation
    assert f"mltop_spin_{tag}" in busiest.output and f"mltop_nap_{tag}" not in busiest.output
    assert "busiest of 2 Python processes" in busiest.output
    (napper,) = _children(_host_pid(c))
    chosen, _ = _run("py-spy", snap, c, sampler.engine, pid=napper)
    assert chosen.status == OK, chosen.explanation
    assert f"mltop_nap_{tag}" in chosen.output and f"mltop_spin_{tag}" not in chosen.output
    both, _ = _run("py-spy", snap, c, sampler.engine, all_processes=True)
    assert f"mltop_nap_{tag}" in both.output and f"mltop_spin_{tag}" in both.output


def test_py_spy_refuses_a_pid_outside_the_container(containers, sampler):
    c = containers.run(["python3", "-c", SPIN.format(tag="x")], image="python")
    result, _ = _run("py-spy", _snapshot(sampler), c, sampler.engine, pid=os.getpid())
    assert result.status == UNAVAILABLE
    assert f"Host PID {os.getpid()} is not a process of {c.name}" in result.explanation
    assert str(_host_pid(c)) in result.explanation  # and it lists the ones that are


def test_py_spy_without_python_processes_says_so(containers, sampler):
    c = containers.run(["sleep", "300"])
    result, _ = _run("py-spy", _snapshot(sampler), c, sampler.engine)
    assert result.status == UNAVAILABLE and "runs no Python process" in result.explanation
    assert "sleep 300" in result.explanation


def test_py_spy_missing_says_how_to_install(containers, sampler):
    c = containers.run(["python3", "-c", SPIN.format(tag="x")], image="python")
    result, _ = _run("py-spy", _snapshot(sampler), c, sampler.engine, py_spy="/nonexistent/py-spy")
    assert result.status == UNAVAILABLE
    assert "pip install py-spy" in result.explanation


@pytest.fixture
def unprivileged_py_spy():
    """A py-spy that drops to `nobody` before attaching: a real permission refusal, as a non-root user sees."""
    real = find_py_spy()
    setpriv = shutil.which("setpriv")
    if real is None or setpriv is None:
        pytest.skip("needs py-spy and setpriv (util-linux)")
    folder = tempfile.mkdtemp(prefix="mltop-pyspy-")
    os.chmod(folder, 0o755)
    binary = os.path.join(folder, "py-spy-real")
    shutil.copy(real, binary)
    os.chmod(binary, 0o755)
    wrapper = os.path.join(folder, "py-spy")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec {setpriv} --reuid=65534 --regid=65534 --clear-groups {binary} "$@"\n')
    os.chmod(wrapper, 0o755)
    yield wrapper
    shutil.rmtree(folder, ignore_errors=True)


def test_py_spy_permission_refusal_says_exactly_what_is_missing(containers, sampler, unprivileged_py_spy):
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges")
    c = containers.run(["python3", "-c", SPIN.format(tag="x")], image="python")
    result, _ = _run("py-spy", _snapshot(sampler), c, sampler.engine, py_spy=unprivileged_py_spy)
    assert result.status == FAILED and result.exit_code != 0
    assert "refused" in result.explanation
    output = result.output  # py-spy's own words for the refusal
    as_user = explain_py_spy_failure(output, PtraceFacts(euid=1000, in_container=False, cap_sys_ptrace=False,
                                                         ptrace_scope=1))
    assert "root on the host" in as_user and "sudo" in as_user
    in_container = explain_py_spy_failure(output, PtraceFacts(0, True, False, 1))
    assert "--cap-add SYS_PTRACE" in in_container and "root on the host" not in in_container
    scope3 = explain_py_spy_failure(output, PtraceFacts(0, False, True, 3))
    assert "ptrace_scope is 3" in scope3
    policy = explain_py_spy_failure(output, PtraceFacts(0, True, True, 1))
    assert "seccomp" in policy and "--cap-add SYS_PTRACE" in policy


# ----------------------------------------------------------------------------- device check


def test_device_check_with_cpu_torch_reports_version_and_no_gpu(containers, sampler, cpu_torch):
    c = torch_container(containers, cpu_torch)
    result, lines = _run("device-check", _snapshot(sampler), c, sampler.engine)
    assert result.status == OK, (result.explanation, result.output)
    assert result.command == ("python3", "-c", "<mltop device_check.py>")
    torch = result.data["frameworks"]["torch"]
    assert torch["imported"] is True, torch
    assert torch["version"].startswith(TORCH_VERSION)
    assert torch["built_with_cuda"] is None  # the CPU build
    assert torch["gpu_available"] is False and torch["device_count"] == 0
    assert torch["tensor_device"] == "cpu" and torch["tensor_op_ok"] is True
    assert result.data["installed"] == ["torch"]
    for other in ("tensorflow", "jax", "cupy"):
        assert result.data["frameworks"][other]["installed"] is False
    assert result.data["cuda_driver"]["loadable"] is False  # no driver library injected
    assert any(line.startswith(f"PyTorch {TORCH_VERSION}") and "sees a GPU: no" in line
               and "lands on: cpu" in line for line in lines), lines
    assert "CPU-only build" in result.explanation


def test_device_check_without_a_framework_says_so(containers, sampler):
    c = containers.run(["sleep", "300"], image="python")
    result, _ = _run("device-check", _snapshot(sampler), c, sampler.engine)
    assert result.status == OK, result.output
    assert result.data["installed"] == []
    assert "No ML framework is installed" in result.explanation
    assert "PyTorch: not installed" in result.output


def test_device_check_without_python_says_so(containers, sampler):
    c = containers.run(["sleep", "300"])  # busybox: no python at all
    result, lines = _run("device-check", _snapshot(sampler), c, sampler.engine)
    assert result.status == UNAVAILABLE
    assert "No Python" in result.explanation and "executable file not found" in result.explanation
    assert lines == ["python3: not found in the container", "python: not found in the container"]
    assert result.data == {}


def test_actions_on_a_stopped_container_say_it_is_not_running(containers, sampler):
    c = containers.run(["true"], wait_running=False)
    wait_for(lambda: (c.reload() or c.status) == "exited", what="exit")
    snap = _snapshot(sampler)
    for action in ("nvidia-smi", "py-spy", "device-check"):
        result, _ = _run(action, snap, c, sampler.engine)
        assert result.status == UNAVAILABLE and "is not running" in result.explanation, action


# ----------------------------------------------------------------------------- nvidia-smi


def test_nvidia_smi_missing_falls_back_to_the_host_view_of_its_gpus(containers, nvml_scenario):
    from fakenvml import FakeGpu, FakeProcess

    c = containers.run(["sh", "-c", "sleep 500 & wait"], name=f"mltop-test-smi-{uuid.uuid4().hex[:6]}")
    other = containers.run(["sleep", "501"])
    worker = _children(_host_pid(c))[0]
    lib = nvml_scenario(gpus=[
        FakeGpu(uuid="GPU-1111", name="NVIDIA A100-SXM4-80GB", util=77, mem_used=21 << 30, pci="00000000:07:00.0",
                processes=[FakeProcess(pid=worker, used_memory=20 << 30, sm=60)]),
        FakeGpu(uuid="GPU-2222", name="NVIDIA L4", util=10,
                processes=[FakeProcess(pid=_host_pid(other), used_memory=3 << 30, sm=5)]),
    ])
    sampler = Sampler(ProbeOptions(nvml_lib=lib))
    try:
        snap = _snapshot(sampler, 0.3)
        result, lines = _run("nvidia-smi", snap, c, sampler.engine)
    finally:
        sampler.close()
    assert result.status == UNAVAILABLE
    assert "executable file not found" in result.output  # the engine's own words stay as evidence
    assert "started without GPUs" in result.explanation and "--gpus all" in result.explanation
    assert result.data == {"fallback": "host_nvml", "gpu_indices": [0]}
    text = "\n".join(lines)
    assert "Host NVML view" in text and "driver 550.54.15" in text and "CUDA 12.4" in text
    assert "NVIDIA A100-SXM4-80GB" in text and "00000000:07:00.0" in text and "77%" in text
    assert "NVIDIA L4" not in text  # the other container's GPU is not shown
    (row,) = [line for line in lines if f" {worker} |" in line]
    assert "20480MiB" in row and "sleep 500" in row and "60%" in row


def test_nvidia_smi_fallback_without_nvml_says_so(containers, sampler):
    c = containers.run(["sleep", "300"])
    result, _ = _run("nvidia-smi", _snapshot(sampler), c, sampler.engine)
    assert result.status == UNAVAILABLE
    assert "NVML view is not available either" in result.output


def _commands(container) -> list[str]:
    return [p[-1] for p in container.top()["Processes"]]


def test_nvidia_smi_output_streams_when_present(containers, sampler):
    c = fake_nvidia_smi(containers, "echo 'NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4'; "
                                     "sleep 0.3; echo '|   0  NVIDIA H100 80GB HBM3   On |'")
    result, lines = _run("nvidia-smi", _snapshot(sampler), c, sampler.engine)
    assert result.status == OK and result.exit_code == 0 and result.explanation is None
    assert lines[0].startswith("NVIDIA-SMI 550.54.15") and "H100" in lines[1]
    assert result.command == ("nvidia-smi",)


def test_nvidia_smi_failure_is_explained(containers, sampler):
    c = fake_nvidia_smi(containers, "echo 'Failed to initialize NVML: Unknown Error'; exit 255")
    result, _ = _run("nvidia-smi", _snapshot(sampler), c, sampler.engine)
    assert result.status == FAILED and result.exit_code == 255
    assert "daemon-reload" in result.explanation
    assert "NVML view is not available either" in result.output  # the host view follows


def test_lines_arrive_while_the_command_runs_and_timeout_ends_it(containers, sampler):
    c = fake_nvidia_smi(containers, "echo started; sleep 600")
    arrived = []
    t0 = time.monotonic()
    run = ActionRun("nvidia-smi", _snapshot(sampler), c.id, sampler.engine, timeout_s=2.0,
                    on_line=lambda line: arrived.append((time.monotonic() - t0, line)))
    result = run.run()
    assert result.status == TIMEOUT and "did not finish in time" in result.explanation
    assert arrived and arrived[0][1] == "started" and arrived[0][0] < 1.5  # streamed, not at the end
    assert 1.9 <= result.duration_s < 6
    # the script and its own `sleep 600` were ended inside the container: only the main process is left
    wait_for(lambda: _commands(c) == ["sleep 600"], timeout=5, what="the timed-out command to be gone")


def test_cancel_from_another_thread_stops_the_run(containers, sampler):
    c = fake_nvidia_smi(containers, "echo started; sleep 600")
    started = threading.Event()
    log = ActionLog()
    run = ActionRun("nvidia-smi", _snapshot(sampler), c.id, sampler.engine, timeout_s=60,
                    on_line=lambda line: started.set(), log=log)
    run.start()
    assert started.wait(10)
    t0 = time.monotonic()
    run.cancel()
    result = run.wait(10)
    assert result is not None and result.status == CANCELLED and time.monotonic() - t0 < 5
    assert result.output == "started" and log.results() == (result,)
    wait_for(lambda: _commands(c) == ["sleep 600"], timeout=5, what="the cancelled command to be gone")


def test_action_output_is_redacted_including_bare_secret_values(containers, sampler):
    secret = uuid.uuid4().hex + "Zq/9"  # no token shape at all: only its name says it is secret
    hf = "hf_" + uuid.uuid4().hex + "abcdef"
    c = fake_nvidia_smi(containers, 'echo "key=$AWS_SECRET_ACCESS_KEY"; echo "$AWS_SECRET_ACCESS_KEY"; '
                                     'echo "token $HF_TOKEN"',
                         environment={"AWS_SECRET_ACCESS_KEY": secret, "HF_TOKEN": hf})
    result, lines = _run("nvidia-smi", _snapshot(sampler), c, sampler.engine)
    assert result.status == OK
    assert lines == [f"key={REDACTED}", REDACTED, f"token {REDACTED}"]
    blob = json.dumps(result.to_json())
    assert secret not in blob and hf not in blob


def _with_config(container, **changes):
    return dataclasses.replace(container, config=dataclasses.replace(container.config, **changes))


def test_missing_nvidia_smi_explanations_follow_the_gpu_request(containers, sampler):
    c = containers.run(["sleep", "300"], environment={"NVIDIA_DRIVER_CAPABILITIES": "compute"})
    snap = _snapshot(sampler)
    base = snap.container(c.id)
    host = snap.host
    assert "started without GPUs" in explain_missing_nvidia_smi(base, host)

    gpu = DeviceRequest(driver="", count=-1, device_ids=(), capabilities=(("gpu",),))
    no_utility = _with_config(base, device_requests=(gpu,))
    text = explain_missing_nvidia_smi(no_utility, host)
    assert "NVIDIA_DRIVER_CAPABILITIES=compute" in text and "`utility`" in text
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in text

    caps_in_request = _with_config(base, device_requests=(
        DeviceRequest("", -1, (), (("gpu", "compute", "utility"),)),))
    assert "hook did not inject it" in explain_missing_nvidia_smi(caps_in_request, host)

    runtime_only = _with_config(base, runtime="nvidia", env=())
    assert "NVIDIA_VISIBLE_DEVICES is unset" in explain_missing_nvidia_smi(runtime_only, host)


# ----------------------------------------------------------------------------- `mltop run`


def test_mltop_run_streams_prints_json_and_exits_by_status(containers, capsys):
    from mltop.tui import cli

    busybox = containers.run(["sleep", "300"])
    assert cli.main(["--no-nvml", "run", "device-check", busybox.name]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == ["python3: not found in the container", "python: not found in the container"]
    assert "device-check in" in err and "unavailable" in err and "No Python" in err

    tag = uuid.uuid4().hex[:6]
    py = containers.run(["python3", "-c", SPIN.format(tag=tag)], image="python")
    assert cli.main(["--no-nvml", "--interval", "0.3", "run", "py-spy", py.name[:20], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "ok" and doc["container"] == py.name and f"mltop_spin_{tag}" in doc["output"]
    assert doc["command"][1:3] == ["dump", "--pid"]

    assert cli.main(["--no-nvml", "run", "nvidia-smi", "no-such-container-xyz"]) == 3
    assert "no container named or id-prefixed 'no-such-container-xyz'" in capsys.readouterr().err

    smi = fake_nvidia_smi(containers, "echo 'Driver Version: 550.54.15'; printf 'bell\\007\\n'")
    assert cli.main(["--no-nvml", "run", "nvidia-smi", smi.name, "--timeout", "20"]) == 0
    assert capsys.readouterr().out == "Driver Version: 550.54.15\nbell\\x07\n"  # control characters shown, not obeyed


# ----------------------------------------------------------------------------- who may act


def test_every_action_and_in_container_work_says_whether_it_needs_the_live_container():
    from mltop.diagnostics.actions import CONTAINER_WORK, ACTIONS as ALL_ACTIONS, refusal
    from mltop.probes.recording import RecordingSource
    from mltop.probes.source import LiveSource, StaticSource

    work = (*ALL_ACTIONS, *CONTAINER_WORK)
    assert {w.name for w in CONTAINER_WORK} == {"io.read_test", "device-check.background", "signal", "stop", "restart"}
    for w in work:
        assert isinstance(w.needs_live_container, bool), w.name
        assert refusal(w, LiveSource) is None and refusal(w, StaticSource) is None
    # A source says it cannot act; the refusal names it and every action that needs the live container
    for source in (RecordingSource, type("Fleet", (), {"cannot_act": "The fleet view shows what Prometheus scraped"})):
        for w in work:
            why = refusal(w, source)
            assert why is not None and why.startswith(source.cannot_act + ": "), why
            assert "in-container actions (" in why or "needs the live container" in why, why
    assert refusal("py-spy", RecordingSource) == (
        "Replay shows recorded data: in-container actions (nvidia-smi, py-spy, framework check, rank stacks) "
        "need the live container. Run `mltop` to act on it now.")  # the words `p` has always shown in replay
    # Work that does not need the live container is never refused by a source
    reader = dataclasses.replace(CONTAINER_WORK[0], reaches=frozenset())
    assert refusal(reader, RecordingSource) is None
    with pytest.raises(ValueError, match="unknown action 'framework'"):
        refusal("framework", RecordingSource)
