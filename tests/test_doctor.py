"""`mltop doctor` on the real engine: each fault reproduced by a real container, judged from a real snapshot.

The one stand-in is the simulated libnvidia-ml.so.1 (driver and CUDA version, GPUs, processes with the
containers' real host PIDs). One module-scoped run starts every faulty and healthy container at once and
diagnoses them in a single sweep, so the whole file stays quick on a small machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ContainerFactory, wait_for
from fakenvml import SCENARIO_ENV, FakeGpu, FakeProcess, FakeScenario, write_scenario

from mltop.diagnostics import cuda_compat
from mltop.diagnostics.actions import OK, ActionLog, ActionRun
from mltop.diagnostics.checks import HostProbe, Thresholds, parse_cuda_oom
from mltop.diagnostics.doctor import run_doctor
from mltop.diagnostics.findings import Finding, exit_code, sort_findings, worst_by_container
from mltop.probes.model import DeviceRequest
from mltop.probes.sampler import ProbeOptions, Sampler
from fixtures_torch import torch_container

GIB = 1 << 30
REPO = Path(__file__).resolve().parents[1]

# What PyTorch 2.x prints when a CUDA allocation fails (torch/csrc/cuda/CUDACachingAllocator.cpp).
TORCH_OOM = [
    "Traceback (most recent call last):",
    '  File "/workspace/train.py", line 88, in <module>',
    "    loss = model(batch).loss",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
    "79.15 GiB of which 1.06 GiB is free. Process 41872 has 70.00 GiB memory in use. Including non-PyTorch "
    "memory, this process has 8.06 GiB memory in use. Of the allocated memory 6.50 GiB is allocated by "
    "PyTorch, and 1.12 GiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large "
    "try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation "
    "for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)",
]


def docker_root_block_device(client) -> str:
    """The whole-disk block device under Docker's root dir (throttles apply to disks, not partitions)."""
    root = client.info()["DockerRootDir"]
    st = os.stat(root)
    link = os.path.realpath(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if os.path.exists(os.path.join(link, "partition")):
        link = os.path.dirname(link)
    return f"/dev/{os.path.basename(link)}"


def by_code(result, container, code) -> list[Finding]:
    return [f for f in result.findings if f.container == container and f.code == code]


def one(result, container, code) -> Finding:
    found = by_code(result, container, code)
    assert found, f"no {code} for {container}; got {[(f.container, f.code) for f in result.findings]}"
    return found[0]


def evidence_text(f: Finding) -> str:
    return "\n".join(f.evidence)


@dataclasses.dataclass
class FaultRun:
    names: dict[str, str]
    ids: dict[str, str]
    previous: object
    snapshot: object
    result: object
    engine: object
    lib: str
    scenario: Path


@pytest.fixture(scope="module")
def fault_run(docker_client, test_images, fake_nvml_lib, tmp_path_factory):
    factory = ContainerFactory(docker_client, test_images)
    names: dict[str, str] = {}
    ids: dict[str, str] = {}

    def start(role: str, command, **kwargs):
        c = factory.run(command, name=f"mltop-doctor-{role}-{os.getpid()}", **kwargs)
        names[role], ids[role] = c.name, c.id
        return c

    try:
        # OOM: /dev/shm pages are charged to the memory cgroup, so dd into a big shm under a 64 MiB limit.
        # dd is a child (as a DataLoader worker would be), so the engine sees the OOM event before the exit.
        hog = start("oom-hog", ["sh", "-c", "dd if=/dev/zero of=/dev/shm/x bs=1M count=256; rm -f /dev/shm/x; "
                                            "sleep 1; exit 137"], wait_running=False,
                    mem_limit="64m", memswap_limit="64m", shm_size="512m")
        # A writer filling Docker's default 64 MiB /dev/shm.
        start("shm-writer", ["sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=100; exec sleep 300"])
        # --gpus all on a host without the NVIDIA toolkit: start fails with "could not select device driver".
        import docker

        gpu = factory.create(["true"], name=f"mltop-doctor-gpu-request-{os.getpid()}",
                             device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])])
        names["gpu-request"], ids["gpu-request"] = gpu.name, gpu.id
        with pytest.raises(docker.errors.APIError, match="could not select device driver"):
            gpu.start()
        # CUDA image environments newer than the simulated driver (550.54.15, CUDA 12.4).
        start("cuda-major", ["sleep", "300"], environment={
            "CUDA_VERSION": "13.0.1",
            "NVIDIA_REQUIRE_CUDA": "cuda>=13.0 brand=tesla,driver>=535,driver<536 brand=tesla,driver>=570,driver<571"})
        start("cuda-minor", ["sleep", "300"], environment={
            "CUDA_VERSION": "12.6.3",
            "NVIDIA_REQUIRE_CUDA": "cuda>=12.6 brand=tesla,driver>=470,driver<471 brand=tesla,driver>=535,driver<536"})
        # A reader throttled with --device-read-bps on the disk Docker's root (and so the image) lives on.
        device = docker_root_block_device(docker_client)
        start("throttled", ["sh", "-c", "while true; do dd if=/bin/busybox of=/dev/null bs=1M iflag=direct "
                                        "2>/dev/null; done"],
              device_read_bps=[{"Path": device, "Rate": 1048576}])
        # A job that printed PyTorch's CUDA OOM, and a neighbour holding most of that GPU.
        start("cuda-oom", ["sh", "-c", 'for l in "$@"; do echo "$l" >&2; done; exec sleep 300', "sh", *TORCH_OOM])
        start("neighbour", ["sleep", "300"])
        # At its pids limit: forks beyond it fail (pids.events max). The forking subshell dies at the
        # limit ("can't fork"); the container lives on in its exec'd sleep.
        start("pids", ["sh", "-c", "(for i in $(seq 12); do sleep 300 & done); exec sleep 300"], pids_limit=8)
        # A busy loop under a 0.1-CPU quota: throttled in nearly every CFS period.
        start("cpu", ["sh", "-c", "while :; do :; done"], nano_cpus=100_000_000)
        # Restarted three times by its policy, then left exited.
        start("restarts", ["sh", "-c", "echo giving up >&2; exit 3"], wait_running=False,
              restart_policy={"Name": "on-failure", "MaximumRetryCount": 3})
        # PID 1 ignores signals it has no handler for, so the segfault happens in a child ("; exit $?"
        # keeps sh from exec'ing it as PID 1).
        start("segv", ["sh", "-c", 'sh -c "kill -SEGV \\$\\$"; exit $?'], wait_running=False)
        # Healthy ones: no warning may come out of these.
        start("healthy", ["sleep", "300"])
        start("healthy-py", ["python3", "-c", "import time; time.sleep(300)"], image="python")

        def settled(role, check):
            c = docker_client.containers.get(ids[role])
            return check(c.attrs)

        wait_for(lambda: settled("oom-hog", lambda a: a["State"]["Status"] == "exited"), what="oom hog exits")
        wait_for(lambda: settled("restarts", lambda a: a["State"]["Status"] == "exited" and a["RestartCount"] == 3),
                 what="restart policy gives up")
        wait_for(lambda: settled("segv", lambda a: a["State"]["Status"] == "exited"), what="segv exits")
        wait_for(lambda: b"No space left" in docker_client.containers.get(ids["shm-writer"]).logs(),
                 what="shm writer fills /dev/shm")
        assert hog.wait(timeout=1)["StatusCode"] == 137

        def pid(role):
            return docker_client.containers.get(ids[role]).attrs["State"]["Pid"]

        scenario = tmp_path_factory.mktemp("doctor-nvml") / "scenario.txt"
        write_scenario(scenario, FakeScenario(
            driver_version="550.54.15", cuda_version=12040,
            gpus=[
                FakeGpu(uuid="GPU-aaaaaaaa-0000-0000-0000-000000000000", util=0, mem_used=78 * GIB,
                        processes=[FakeProcess(pid("cuda-oom"), used_memory=8 * GIB),
                                   FakeProcess(pid("neighbour"), used_memory=70 * GIB)]),
                FakeGpu(uuid="GPU-bbbbbbbb-0000-0000-0000-000000000000", pci="00000000:86:00.0", util=97,
                        temp=91, clocks_event=0x40, persistence=False),
            ],
        ))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(SCENARIO_ENV, str(scenario))
            sampler = Sampler(ProbeOptions(nvml=True, nvml_lib=str(fake_nvml_lib)))
            try:
                previous = sampler.sweep()
                time.sleep(1.0)
                snapshot = sampler.sweep()
                result = run_doctor(snapshot, sampler.engine, containers=list(names.values()), previous=previous)
                yield FaultRun(names, ids, previous, snapshot, result, sampler.engine, str(fake_nvml_lib), scenario)
            finally:
                sampler.close()
    finally:
        factory.cleanup()


# --------------------------------------------------------------------------- required codes


def test_oom_killed_memory_hog(fault_run):
    f = one(fault_run.result, fault_run.names["oom-hog"], "oom.killed")
    assert f.severity == "critical"
    assert "State.OOMKilled true, ExitCode 137" in evidence_text(f)
    assert "HostConfig.Memory 67108864 bytes" in evidence_text(f)
    assert "--memory" in f.fix


def test_shm_filled_by_writer(fault_run):
    f = one(fault_run.result, fault_run.names["shm-writer"], "shm.too_small")
    assert f.severity == "warning"
    text = evidence_text(f)
    assert "HostConfig.ShmSize 67108864 bytes" in text
    assert "No space left on device" in text  # the writer's own error, verbatim from its log
    assert "= 100% of its size" in text and "shm_near_full=0.9" in text
    assert "--ipc=host" in f.fix or "--shm-size" in f.fix


def test_gpus_requested_without_toolkit(fault_run):
    f = one(fault_run.result, fault_run.names["gpu-request"], "toolkit.missing")
    assert f.severity == "critical"
    text = evidence_text(f)
    assert "State.Error 'could not select device driver \"\" with capabilities: [[gpu]]'" in text
    assert "nvidia-container-runtime-hook: not found" in text
    assert "Runtimes" in text and "nvidia" not in text.split("Runtimes", 1)[1].split("—", 1)[0]
    assert "nvidia-ctk runtime configure" in f.fix


def test_hook_installed_but_engine_unaware_is_not_registered(fault_run, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    hook = bindir / "nvidia-container-runtime-hook"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    result = run_doctor(fault_run.snapshot, fault_run.engine, containers=[fault_run.names["gpu-request"]],
                        host=HostProbe(path=str(bindir), cdi_dirs=[str(tmp_path / "cdi")]))
    f = one(result, fault_run.names["gpu-request"], "toolkit.not_registered")
    assert f.severity == "critical"
    assert f"nvidia-container-runtime-hook: {hook}" in evidence_text(f)
    assert "systemctl restart docker" in f.fix
    assert not by_code(result, fault_run.names["gpu-request"], "toolkit.missing")


def test_cuda_newer_major_is_critical_newer_minor_is_warning(fault_run):
    major = one(fault_run.result, fault_run.names["cuda-major"], "driver.cuda_too_new")
    assert major.severity == "critical"
    assert "host driver 550.54.15 supports CUDA up to 12.4" in evidence_text(major)
    assert "needs driver >= 580.65.06" in evidence_text(major)
    assert "580.65.06" in major.fix
    minor = one(fault_run.result, fault_run.names["cuda-minor"], "driver.cuda_too_new")
    assert minor.severity == "warning"
    assert "needs driver >= 560.28.03" in evidence_text(minor)
    assert "minor-version compatibility" in evidence_text(minor)


def test_cuda_image_without_gpus_is_not_visible(fault_run):
    f = one(fault_run.result, fault_run.names["cuda-major"], "gpu.not_visible")
    assert f.severity == "warning"
    assert "Config.Env CUDA_VERSION=13.0.1" in evidence_text(f)
    assert "--gpus all" in f.fix


def test_cuda_oom_in_logs_names_size_and_neighbour(fault_run):
    f = one(fault_run.result, fault_run.names["cuda-oom"], "oom.cuda")
    assert f.severity == "warning"  # still running: it may have caught the error
    assert "2.00 GiB" in f.title and "GPU 0" in f.title
    text = evidence_text(f)
    assert "requested 2.00 GiB = 2147483648 bytes" in text
    assert f"container {fault_run.names['neighbour']}" in text and "75161927680 bytes" in text
    assert "torch.OutOfMemoryError: CUDA out of memory." in text
    assert "expandable_segments" in f.fix


def test_read_throttle_is_io_slow(fault_run):
    f = one(fault_run.result, fault_run.names["throttled"], "io.slow")
    assert f.severity == "warning"
    text = evidence_text(f)
    assert "HostConfig.BlkioDeviceReadBps" in text and "1048576 bytes/s" in text
    assert "rbps=1048576" in text and "blkio.throttle.read_bps_device" in text


def test_healthy_containers_yield_no_warnings(fault_run):
    worst = worst_by_container(fault_run.result.findings)
    for role in ("healthy", "healthy-py"):
        assert worst.get(fault_run.names[role]) in (None, "info"), [
            (f.code, f.title) for f in fault_run.result.findings if f.container == fault_run.names[role]]


def test_nvml_version_mismatch(containers, nvml_scenario):
    cuda = containers.run(["sleep", "300"], environment={"CUDA_VERSION": "12.2.0"})
    lib = nvml_scenario(init_error=18)
    sampler = Sampler(ProbeOptions(nvml=True, nvml_lib=lib))
    try:
        result = run_doctor(sampler.sweep(), sampler.engine, containers=[cuda.name])
    finally:
        sampler.close()
    f = one(result, None, "driver.nvml_mismatch")
    assert f.severity == "critical"
    assert "Driver/library version mismatch" in evidence_text(f)
    assert "reboot" in f.fix.lower()
    skipped = {s.check: s.reason for s in result.checks_skipped}
    assert "NVML version_mismatch" in skipped["driver.cuda_too_new"] and cuda.name in skipped["driver.cuda_too_new"]
    assert result.exit_code == 2


def test_driver_not_loaded_while_a_container_wants_gpus(containers, nvml_scenario):
    import docker

    gpu = containers.create(["true"], device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])])
    lib = nvml_scenario(init_error=9)
    sampler = Sampler(ProbeOptions(nvml=True, nvml_lib=lib))
    try:
        result = run_doctor(sampler.sweep(), sampler.engine, containers=[gpu.name])
    finally:
        sampler.close()
    f = one(result, None, "driver.not_loaded")
    assert f.severity == "critical"
    assert f"{gpu.name} requests GPUs" in evidence_text(f)
    assert "modprobe nvidia" in f.fix


# --------------------------------------------------------------------------- further checks


def test_pids_limit_reached(fault_run):
    f = one(fault_run.result, fault_run.names["pids"], "pids.near_max")
    assert f.severity == "warning"
    assert "pids.max 8" in evidence_text(f)
    assert "pids.events max" in evidence_text(f)


def test_cpu_quota_throttling(fault_run):
    f = one(fault_run.result, fault_run.names["cpu"], "cpu.throttled")
    assert f.severity == "warning"
    assert "cpu_throttled_ratio=0.25" in evidence_text(f)
    assert "--cpus" in f.fix


def test_restart_loop_and_crash(fault_run):
    loop = one(fault_run.result, fault_run.names["restarts"], "container.restart_loop")
    assert "RestartCount 3" in evidence_text(loop) and "giving up" in evidence_text(loop)
    segv = one(fault_run.result, fault_run.names["segv"], "container.crashed")
    assert segv.severity == "warning" and "SIGSEGV" in segv.title
    assert not by_code(fault_run.result, fault_run.names["oom-hog"], "container.crashed")  # OOM explains its 137


def test_gpu_throttling_persistence_and_idle_reservation(fault_run):
    throttled = one(fault_run.result, None, "gpu.throttled")
    assert throttled.severity == "warning" and "GPU 1" in throttled.title
    assert "hw_thermal_slowdown" in evidence_text(throttled)
    persistence = one(fault_run.result, None, "gpu.persistence_off")
    assert persistence.severity == "info" and "GPU 1 (GPU-bbbbbbbb" in evidence_text(persistence)
    idle = one(fault_run.result, fault_run.names["neighbour"], "gpu.idle_reserved")
    assert idle.severity == "info" and "75161927680 bytes" in evidence_text(idle)


def test_dev_char_links_missing_under_systemd_driver(fault_run, tmp_path):
    snap = fault_run.snapshot
    gpu_container = next(c for c in snap.containers if c.name == fault_run.names["healthy"])
    gpu_container = dataclasses.replace(gpu_container, config=dataclasses.replace(gpu_container.config,
                                                                                runtime="nvidia"))
    snap = dataclasses.replace(snap, host=dataclasses.replace(snap.host, cgroup_driver="systemd"),
                               containers=(gpu_container,))
    (tmp_path / "char").mkdir()
    result = run_doctor(snap, None, containers=[], host=HostProbe(dev_char_dir=str(tmp_path / "char")))
    f = one(result, None, "gpu.dev_char_missing")
    assert "CgroupDriver systemd" in evidence_text(f) and "create-dev-char-symlinks" in f.fix
    (tmp_path / "char" / "195:0").symlink_to("../nvidia0")
    result = run_doctor(snap, None, containers=[], host=HostProbe(dev_char_dir=str(tmp_path / "char")))
    assert not by_code(result, None, "gpu.dev_char_missing")


def test_a_broken_check_is_skipped_not_raised(fault_run, monkeypatch):
    def broken(ctx, c):
        raise KeyError("boom")

    from mltop.diagnostics.checks import base

    monkeypatch.setattr(base, "CONTAINER_CHECKS", [("broken", broken), *base.CONTAINER_CHECKS])
    result = run_doctor(fault_run.snapshot, fault_run.engine, containers=[fault_run.names["oom-hog"]])
    assert one(result, fault_run.names["oom-hog"], "oom.killed")
    skipped = [s for s in result.checks_skipped if s.check == "broken"]
    assert skipped and "KeyError" in skipped[0].reason and fault_run.names["oom-hog"] in skipped[0].reason


def test_worst_by_container_and_ordering(fault_run):
    worst = fault_run.result.worst_by_container()
    assert worst[fault_run.names["oom-hog"]] == "critical"
    assert worst[fault_run.names["shm-writer"]] == "warning"
    assert worst[None] == "warning"  # host: the throttled GPU
    findings = list(fault_run.result.findings)
    assert findings == sort_findings(reversed(findings))
    assert findings[0].container is None
    groups = [f.container for f in findings if f.container is not None]
    first_warning_group = next(i for i, name in enumerate(groups) if worst[name] != "critical")
    assert all(worst[n] == "critical" for n in groups[:first_warning_group])
    assert exit_code(findings) == 2


# --------------------------------------------------------------------------- the command line


def _mltop(*args, env_extra=None, timeout=60):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "mltop.tui.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=timeout)


def test_cli_exit_codes_and_json(fault_run):
    nvml = ["--nvml-lib", fault_run.lib]
    env = {SCENARIO_ENV: str(fault_run.scenario)}
    ok = _mltop("doctor", "--interval", "0.25", "--no-nvml", fault_run.names["healthy"])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"no findings: {fault_run.names['healthy']}" in ok.stdout

    warn = _mltop("doctor", "--interval", "0.25", "--json", *nvml, fault_run.names["shm-writer"], env_extra=env)
    doc = json.loads(warn.stdout)
    assert set(doc) == {"schema_version", "findings", "checks_skipped"}
    assert warn.returncode == 1  # the shm warning, and the host's throttled GPU: both warnings
    for f in doc["findings"]:
        assert set(f) == {"code", "severity", "container", "title", "evidence", "fix"}
    assert {(f["container"], f["code"]) for f in doc["findings"]} >= {
        (fault_run.names["shm-writer"], "shm.too_small"), (None, "gpu.throttled")}

    crit = _mltop("doctor", "--interval", "0.25", *nvml, fault_run.names["oom-hog"], fault_run.names["healthy"],
                  env_extra=env)
    assert crit.returncode == 2, crit.stdout + crit.stderr
    out = crit.stdout
    assert out.index("host") < out.index(f"container {fault_run.names['oom-hog']}")
    assert "CRITICAL  oom.killed" in out and "fix:" in out

    missing = _mltop("doctor", "--no-nvml", "no-such-container-xyz")
    assert missing.returncode == 3 and "no-such-container-xyz" in missing.stderr


def test_cli_io_test_measures_throttled_read(fault_run):
    r = _mltop("doctor", "--interval", "0.25", "--no-nvml", "--json", "--io-test", "/bin/busybox",
               "--log-tail", "50",
               fault_run.names["throttled"], fault_run.names["healthy"])
    doc = json.loads(r.stdout)
    assert r.returncode == 1, r.stderr
    slow = [f for f in doc["findings"] if f["container"] == fault_run.names["throttled"] and f["code"] == "io.slow"
            and "MB/s" in f["title"]]
    assert slow, doc["findings"]
    rate = float(slow[0]["title"].split(" runs at ")[1].split(" MB/s")[0])
    assert 0.3 < rate < 3.0  # a 1 MiB/s throttle, measured
    assert any("iflag=direct" in e for e in slow[0]["evidence"])
    fast = [f for f in doc["findings"] if f["container"] == fault_run.names["healthy"]]
    assert [f["code"] for f in fast] == ["io.read_test"] and fast[0]["severity"] == "info"


# --------------------------------------------------------------------------- what the framework device check found

def _with_gpu_request(snapshot, container_id):
    """The snapshot with one container as if started with `--gpus all` (this host has no toolkit to start it)."""
    gpus = DeviceRequest(driver="", count=-1, device_ids=(), capabilities=(("gpu",),))
    changed = tuple(dataclasses.replace(c, config=dataclasses.replace(c.config, device_requests=(gpus,)))
                    if c.id == container_id else c for c in snapshot.containers)
    return dataclasses.replace(snapshot, containers=changed)


def test_cpu_torch_build_is_no_gpu_workload(containers, cpu_torch, nvml_scenario):
    c = torch_container(containers, cpu_torch)
    lib = nvml_scenario()  # driver 550.54.15, CUDA 12.4
    log = ActionLog()
    sampler = Sampler(ProbeOptions(nvml=True, nvml_lib=lib))
    try:
        result = run_doctor(sampler.sweep(), sampler.engine, containers=[c.name], action_log=log,
                            framework_check=True)
    finally:
        sampler.close()
    check = log.latest("device-check", c.name)  # run by the doctor, kept in the log it was given
    assert check is not None and check.status == OK, check
    torch = check.data["frameworks"]["torch"]
    assert torch["imported"] is True and torch["built_with_cuda"] is None and torch["gpu_available"] is False
    assert not by_code(result, c.name, "gpu.not_visible")
    assert not by_code(result, c.name, "driver.cuda_too_new")
    assert worst_by_container(result.findings).get(c.name) is None, result.findings
    assert not [s for s in result.checks_skipped if s.check == "framework_check"], result.checks_skipped


def test_framework_built_with_newer_cuda_that_finds_no_gpu(cuda13_torch_container, nvml_scenario):
    c = cuda13_torch_container
    lib = nvml_scenario()  # driver 550.54.15, CUDA 12.4
    sampler = Sampler(ProbeOptions(nvml=True, nvml_lib=lib))
    try:
        snapshot = sampler.sweep()
        log = ActionLog()
        check = ActionRun("device-check", snapshot, c.id, sampler.engine, log=log).run()
        without = run_doctor(snapshot, sampler.engine, containers=[c.name])
        result = run_doctor(snapshot, sampler.engine, containers=[c.name], action_log=log)
    finally:
        sampler.close()
    assert check.status == OK, (check.explanation, check.output)
    torch = check.data["frameworks"]["torch"]
    assert (torch["version"], torch["built_with_cuda"], torch["gpu_available"]) == ("2.9.0", "13.0", False)
    # The image says nothing about CUDA: only the device check tells.
    assert not by_code(without, c.name, "driver.cuda_too_new") and not by_code(without, c.name, "gpu.not_visible")

    too_new = one(result, c.name, "driver.cuda_too_new")
    assert too_new.severity == "critical"
    assert too_new.title == "torch 2.9.0 needs CUDA 13.0, newer than the host's CUDA 12.4"
    text = evidence_text(too_new)
    assert f"needs CUDA 13.0: torch 2.9.0 built with CUDA 13.0 — mltop run device-check {c.name}" in text
    assert "host driver 550.54.15 supports CUDA up to 12.4" in text
    assert "CUDA 13.0 needs driver >= 580.65.06" in text and "580.65.06" in too_new.fix

    hidden = one(result, c.name, "gpu.not_visible")
    assert hidden.severity == "warning" and hidden.title == "Looks like a GPU workload but has no GPU assigned"
    text = evidence_text(hidden)
    assert f"torch 2.9.0 built with CUDA 13.0 finds no GPU (device count 0) — mltop run device-check {c.name}" in text
    assert "Found no NVIDIA driver on your system" in text  # what the framework itself said
    assert "--gpus all" in hidden.fix

    # The same container started with --gpus: its framework still finds none.
    asked = run_doctor(_with_gpu_request(snapshot, c.id), None, containers=[c.name], action_log=log)
    assert one(asked, c.name, "gpu.not_visible").title == "The container asks for GPUs but its framework finds none"

    # Within the host's major version: a warning, with the minimum driver for that minor.
    newer_minor = dataclasses.replace(check, data={**check.data, "frameworks": {
        **check.data["frameworks"], "torch": {**torch, "built_with_cuda": "12.6"}}})
    minor = one(run_doctor(snapshot, None, containers=[c.name], action_log=[newer_minor]), c.name,
                "driver.cuda_too_new")
    assert minor.severity == "warning" and "CUDA 12.6 needs driver >= 560.28.03" in evidence_text(minor)


def test_newest_successful_device_check_counts(cuda13_torch_container, nvml_scenario):
    c = cuda13_torch_container
    sampler = Sampler(ProbeOptions(nvml=True, nvml_lib=nvml_scenario()))
    try:
        snapshot = sampler.sweep()
        log = ActionLog()
        ok = ActionRun("device-check", snapshot, c.id, sampler.engine, log=log).run()
        timed_out = ActionRun("device-check", snapshot, c.id, sampler.engine, log=log, timeout_s=0.01).run()
        result = run_doctor(snapshot, sampler.engine, containers=[c.name], action_log=log)
    finally:
        sampler.close()
    assert ok.status == OK and timed_out.status != OK and log.latest("device-check", c.name) is timed_out
    assert one(result, c.name, "driver.cuda_too_new").severity == "critical"  # from the earlier, good run


def test_cli_framework_check_feeds_the_findings(cuda13_torch_container, containers, nvml_scenario):
    c = cuda13_torch_container
    no_python = containers.run(["sleep", "300"])  # busybox: the check cannot run there
    nvml = ["--nvml-lib", nvml_scenario()]
    plain = _mltop("doctor", "--interval", "0.25", "--json", *nvml, c.name)
    assert plain.returncode == 0, plain.stdout + plain.stderr  # the image alone shows nothing wrong

    r = _mltop("doctor", "--interval", "0.25", "--json", "--framework-check", *nvml, c.name, no_python.name,
               timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    found = {(f["code"], f["severity"]) for f in doc["findings"] if f["container"] == c.name}
    assert found == {("driver.cuda_too_new", "critical"), ("gpu.not_visible", "warning")}, doc["findings"]
    too_new = next(f for f in doc["findings"] if f["code"] == "driver.cuda_too_new")
    assert any("torch 2.9.0 built with CUDA 13.0" in e for e in too_new["evidence"])
    assert not [f for f in doc["findings"] if f["container"] == no_python.name]
    skipped = [s["reason"] for s in doc["checks_skipped"] if s["check"] == "framework_check"]
    assert len(skipped) == 1 and "unavailable" in skipped[0] and f"No Python in {no_python.name}" in skipped[0]

    assert "--framework-check" in _mltop("doctor", "--help").stdout


# --------------------------------------------------------------------------- pure parts


def test_require_cuda_parsing_and_table():
    alts = cuda_compat.parse_requirement("cuda>=12.4 brand=tesla,driver>=470,driver<471")
    assert [[str(t) for t in a] for a in alts] == [["cuda>=12.4"], ["brand=tesla", "driver>=470", "driver<471"]]
    assert cuda_compat.minimum_driver((12, 4, 1)) == "550.54.14"
    assert cuda_compat.minimum_driver((12, 7)) == "570.26"  # no 12.7 release: the next row up
    assert cuda_compat.minimum_driver((14, 0)) is None
    need = cuda_compat.cuda_need({"NVIDIA_REQUIRE_CUDA": "cuda>=13.0 brand=tesla,driver>=535,driver<536"}.get)
    forward = cuda_compat.judge(need, (12, 2), (535, 183, 1))
    assert forward.severity == "warning" and "forward compatibility" in forward.reason
    assert cuda_compat.judge(need, (12, 4), (550, 54, 15)).severity == "critical"
    assert cuda_compat.judge(need, (13, 0), (580, 65, 6)) is None


@pytest.mark.parametrize("line, framework, requested", [
    ("RuntimeError: CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 10.76 GiB total capacity; 8.63 GiB "
     "already allocated; 1.05 GiB free; 8.69 GiB reserved in total by PyTorch)", "pytorch", 3 * GIB // 2),
    ("tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor with "
     "shape[1024,1024,1024] and type float on /job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc",
     "tensorflow", 4 * GIB),
    ("jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
     "17179869184 bytes.", "jax/xla", 16 * GIB),
    ("RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", "cublas", None),
])
def test_cuda_oom_messages(line, framework, requested):
    oom = parse_cuda_oom(line)
    assert oom is not None and oom.framework == framework and oom.requested_bytes == requested


def test_thresholds_are_options_and_named():
    t = Thresholds(memory_near_limit=0.8)
    assert t.named("memory_near_limit") == "threshold memory_near_limit=0.8 (--memory-near-limit)"
    assert {name for name, *_ in Thresholds.options()} >= {"memory_near_limit", "shm_near_full", "io_min_read_mb_s"}


def test_no_finding_contradicts_its_snapshot(fault_run):
    from consistency import contradictions

    assert contradictions(fault_run.snapshot, fault_run.result.findings) == []
