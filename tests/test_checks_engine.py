"""GPU access without `--gpus` and GPU health, reproduced on the real engine with the simulated NVML.

Containers reach "their GPU" by a `--device` node (a stand-in /dev/null mounted as /dev/nvidia0), by
--privileged, or by nothing at all while the simulated driver lists their real host PIDs; GPUs carry Xid
events, ECC errors, a trained-down link and memory nobody holds. One module-scoped run judges them all.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from conftest import ContainerFactory, wait_for
from consistency import contradictions
from fakenvml import HEALTHY, SCENARIO_ENV, FakeGpu, FakeProcess, FakeScenario, FakeXid, write_scenario

from mltop.diagnostics.doctor import run_doctor
from mltop.probes.model import snapshot_to_json
from mltop.probes.sampler import ProbeOptions, Sampler

GIB = 1 << 30
CUDA_ENV = {"CUDA_VERSION": "12.1.1", "NVIDIA_REQUIRE_CUDA": "cuda>=12.1"}
FAKE_NODE = ["/dev/null:/dev/nvidia0:rwm", "/dev/null:/dev/nvidiactl:rwm", "/dev/null:/dev/nvidia-uvm:rwm"]


@dataclasses.dataclass
class Run:
    names: dict[str, str]
    snapshot: object
    result: object
    privileged_refused: str | None  # why this engine could not start a privileged container, if it could not


def codes_for(run: Run, role: str) -> set[str]:
    return {f.code for f in run.result.findings if f.container == run.names[role]}


def host_finding(run: Run, code: str, gpu: int):
    hits = [f for f in run.result.findings if f.code == code and f.container is None and f"GPU {gpu}" in f.title]
    assert hits, [(f.code, f.title) for f in run.result.findings if f.container is None]
    return hits[0]


@pytest.fixture(scope="module")
def gpu_run(docker_client, test_images, fake_nvml_lib, tmp_path_factory):
    factory = ContainerFactory(docker_client, test_images)
    names: dict[str, str] = {}

    def start(role, command, **kwargs):
        c = factory.run(command, name=f"mltop-checks-{role}-{os.getpid()}", **kwargs)
        names[role] = c.name
        return c

    try:
        start("devnodes", ["sleep", "300"], environment=CUDA_ENV, devices=FAKE_NODE)
        import docker

        try:
            start("privileged", ["sleep", "300"], environment=CUDA_ENV, privileged=True)
        except docker.errors.APIError as err:  # a nested engine without every capability cannot run one
            unprivileged = str(err)
        else:
            unprivileged = None
        # An old "no device" line in its log, but the driver lists its process now: NVML wins.
        start("nvml-only", ["sh", "-c", "echo 'RuntimeError: No CUDA GPUs are available' >&2; "
                                        "echo 'no CUDA-capable device is detected' >&2; exec sleep 300"],
              environment=CUDA_ENV)
        start("no-gpu", ["sleep", "300"], environment=CUDA_ENV)  # the true positive, same scenario
        start("ipc-host", ["python3", "-c", "import time; time.sleep(300)"], image="python", ipc_mode="host")
        start("big-shm", ["python3", "-c", "import time; time.sleep(300)"], image="python", shm_size="2g")
        start("nvml-lost", ["sh", "-c", "echo 'Failed to initialize NVML: Unknown Error' >&2; exec sleep 300"],
              environment=CUDA_ENV, devices=FAKE_NODE)
        start("ddp", ["sleep", "300"], environment=CUDA_ENV)
        # (`--ulimit memlock=-1` is refused by this nested engine: the unlimited lookalike is a unit test.)
        start("single", ["sleep", "300"], environment=CUDA_ENV)


        def pid(role):
            if role not in names:
                return 4_000_001  # a PID no process has: the driver lists a process mltop cannot attribute
            return docker_client.containers.get(names[role]).attrs["State"]["Pid"]

        tmp = tmp_path_factory.mktemp("checks-nvml")
        sick = dict(HEALTHY, ecc_vol_unc=2, ecc_agg_unc=2, remap_pending=1, pcie_gen=3)
        calm = dict(HEALTHY, ecc_vol_corr=7, pcie_gen=1)  # corrected errors; an idle link at Gen1
        write_scenario(tmp / "scenario.txt", FakeScenario(
            gpus=[
                FakeGpu(uuid="GPU-00000000-0000-0000-0000-0000000000a0", pci="00000000:18:00.0", util=[60, 95, 80],
                        mem_used=13 * GIB, processes=[FakeProcess(pid("devnodes"), used_memory=4 * GIB, sm=30),
                                                      FakeProcess(pid("privileged"), used_memory=4 * GIB, sm=30),
                                                      FakeProcess(pid("nvml-only"), used_memory=4 * GIB, sm=20)]),
                FakeGpu(uuid="GPU-00000000-0000-0000-0000-0000000000a1", pci="00000000:2A:00.0", util=90,
                        mem_used=9 * GIB, health=sick,
                        processes=[FakeProcess(pid("ddp"), used_memory=4 * GIB, sm=45),
                                   FakeProcess(pid("single"), used_memory=4 * GIB, sm=45)]),
                FakeGpu(uuid="GPU-00000000-0000-0000-0000-0000000000a2", pci="00000000:3B:00.0", util=70,
                        mem_used=34 * GIB, processes=[FakeProcess(pid("ddp"), used_memory=4 * GIB, sm=45)]),
                FakeGpu(uuid="GPU-00000000-0000-0000-0000-0000000000a3", pci="00000000:4C:00.0", util=0,
                        mem_used=400 << 20, health=calm),
            ],
            xids=[FakeXid(gpu=0, code=79)],
        ))
        kmsg = tmp / "kmsg"  # an Xid from before mltop started, on GPU 3 (PCI 4c)
        kmsg.write_text("4,200,5000000,-;NVRM: Xid (PCI:0000:4c:00): 48, pid=77, name=python3, DBE (double "
                        "bit error) ECC error\n")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(SCENARIO_ENV, str(tmp / "scenario.txt"))
            mp.setenv("MLTOP_KMSG", str(kmsg))
            sampler = Sampler(ProbeOptions(nvml=True, nvml_lib=str(fake_nvml_lib)))
            try:
                previous = sampler.sweep()
                time.sleep(1.0)
                snap = sampler.sweep()
                wait_for(lambda: all(c.pid for c in snap.containers if c.name in names.values()), what="pids")
                result = run_doctor(snap, sampler.engine, containers=list(names.values()), previous=previous)
                yield Run(names, snap, result, unprivileged)
            finally:
                sampler.close()
    finally:
        factory.cleanup()


# --------------------------------------------------------------------------- evidence never contradicts


def test_no_finding_contradicts_its_snapshot(gpu_run):
    assert contradictions(gpu_run.snapshot, gpu_run.result.findings) == []


@pytest.mark.parametrize("role", ["devnodes", "privileged", "nvml-only"])
def test_gpu_reached_without_gpus_flag_is_no_false_alarm(gpu_run, role):
    if role == "privileged" and gpu_run.privileged_refused:
        pytest.skip(f"this engine cannot start a privileged container: {gpu_run.privileged_refused[-120:]}")
    c = gpu_run.snapshot.container(gpu_run.names[role])
    assert gpu_run.snapshot.uses_gpu(c) and gpu_run.snapshot.has_gpus(c)
    assert "gpu.not_visible" not in codes_for(gpu_run, role)


def test_device_nodes_are_read_from_inspect(gpu_run):
    c = gpu_run.snapshot.container(gpu_run.names["devnodes"])
    assert c.config.nvidia_device_nodes == ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm")
    assert any("HostConfig.Devices passes /dev/nvidia0" in a for a in gpu_run.snapshot.gpu_access(c))


def test_the_true_positive_in_the_same_scenario_still_fires(gpu_run):
    assert "gpu.not_visible" in codes_for(gpu_run, "no-gpu")


@pytest.mark.parametrize("role", ["ipc-host", "big-shm"])
def test_roomy_shared_memory_is_no_shm_finding(gpu_run, role):
    assert "shm.too_small" not in codes_for(gpu_run, role)


# --------------------------------------------------------------------------- GPU health


def test_xid_from_nvml_events_names_the_containers_on_that_gpu(gpu_run):
    f = host_finding(gpu_run, "gpu.xid", 0)
    assert f.severity == "critical" and "Xid 79" in f.title
    for role in ("devnodes", "nvml-only"):
        assert gpu_run.names[role] in f.title


def test_xid_from_the_kernel_log_before_mltop_started(gpu_run):
    f = host_finding(gpu_run, "gpu.xid", 3)
    assert "Xid 48" in f.title and any("/dev/kmsg" in e and "DBE" in e for e in f.evidence)


def test_ecc_errors_and_pending_remap(gpu_run):
    f = host_finding(gpu_run, "gpu.ecc", 1)
    assert f.severity == "critical" and gpu_run.names["ddp"] in f.title
    assert any("2 uncorrectable ECC error(s)" in e for e in f.evidence)
    assert not [x for x in gpu_run.result.findings if x.code == "gpu.ecc" and "GPU 3" in x.title]


def test_pcie_trained_down_while_busy_but_not_when_idle(gpu_run):
    assert "Gen3 of Gen5" in host_finding(gpu_run, "gpu.pcie_degraded", 1).title
    assert not [x for x in gpu_run.result.findings if x.code == "gpu.pcie_degraded" and "GPU 3" in x.title]


def test_memory_no_process_holds(gpu_run):
    f = host_finding(gpu_run, "gpu.memory_orphaned", 2)
    assert any("held by none" in e for e in f.evidence)
    assert not [x for x in gpu_run.result.findings if x.code == "gpu.memory_orphaned" and "GPU 3" in x.title]


def test_nvml_lost_inside_a_container_that_had_its_gpus(gpu_run):
    assert "nvml.lost_in_container" in codes_for(gpu_run, "nvml-lost")
    assert "nvml.lost_in_container" not in codes_for(gpu_run, "no-gpu")


def test_nccl_memlock_on_a_multi_gpu_container_but_not_a_single_gpu_one(gpu_run):
    f = next(f for f in gpu_run.result.findings if f.code == "nccl.memlock" and f.container == gpu_run.names["ddp"])
    assert "2 GPUs" in f.title and any("Max locked memory" in e for e in f.evidence)
    assert "nccl.memlock" not in codes_for(gpu_run, "single")


def test_health_reaches_snapshot_json(gpu_run):
    doc = snapshot_to_json(gpu_run.snapshot)
    g1 = doc["gpus"][1]
    assert g1["ecc_volatile_uncorrected"] == 2 and g1["pcie_generation"] == 3 and g1["pcie_generation_max"] == 5
    assert doc["gpus"][0]["xid_events"][0]["xid"] == 79


# --------------------------------------------------------------------------- the device check in the background


def test_background_device_check_once_per_container_start(containers, sampler):
    from mltop.diagnostics.actions import ActionLog
    from mltop.diagnostics.doctor import BackgroundDeviceChecks, latest_device_check

    gpuish = containers.run(["python3", "-c", "import time; time.sleep(300)"], image="python",
                            environment=CUDA_ENV)
    plain = containers.run(["sleep", "300"])
    log = ActionLog()
    checks = BackgroundDeviceChecks(log, timeout_s=60)
    snap = sampler.sweep()
    due = [c.name for c in checks.due(snap)]
    assert gpuish.name in due and plain.name not in due

    while checks.due(snap):  # other test sessions' GPU-looking containers may be due too
        assert checks.run_one(snap, sampler.engine) is not None
    mine = snap.container(gpuish.id)
    assert checks.outcomes[checks.key(mine)] == "ok"
    assert latest_device_check(log, mine) is not None  # the doctor will read it from the log
    assert checks.run_one(snap, sampler.engine) is None  # cached: nothing runs again for this start

    gpuish.restart(timeout=1)
    wait_for(lambda: sampler.sweep().container(gpuish.id).config.started_at != mine.config.started_at,
             what="a new start")
    assert gpuish.name in [c.name for c in checks.due(sampler.sweep())]  # a new start is due again


def test_background_device_check_runs_one_at_a_time(containers, sampler):
    from mltop.diagnostics.actions import ActionLog
    from mltop.diagnostics.doctor import BackgroundDeviceChecks

    containers.run(["python3", "-c", "import time; time.sleep(300)"], image="python", environment=CUDA_ENV)
    checks = BackgroundDeviceChecks(ActionLog(), timeout_s=60)
    snap = sampler.sweep()
    with checks._lock:  # as if another worker's check were running
        assert checks.run_one(snap, sampler.engine) is None
    assert checks.due(snap)


def test_no_exec_forbids_every_exec_and_says_what_was_skipped(containers, sampler, monkeypatch):
    from mltop.diagnostics.actions import ActionLog
    from mltop.diagnostics.doctor import BackgroundDeviceChecks, run_doctor

    c = containers.run(["python3", "-c", "import time; time.sleep(300)"], image="python", environment=CUDA_ENV)
    snap = sampler.sweep()
    log = ActionLog()
    result = run_doctor(snap, sampler.engine, containers=[c.name], io_test="/etc/hostname", framework_check=True,
                        action_log=log, no_exec=True)
    skipped = {s.check: s.reason for s in result.checks_skipped}
    assert "--no-exec" in skipped["io.read_test"] and "--no-exec" in skipped["framework_check"]
    assert log.results() == () or not list(log.results())  # nothing was exec'd
    monkeypatch.setenv("MLTOP_NO_EXEC", "1")
    result = run_doctor(snap, sampler.engine, containers=[c.name])
    assert any(s.check == "exec" and "MLTOP_NO_EXEC=1" in s.reason for s in result.checks_skipped)
    assert BackgroundDeviceChecks(log).due(snap) == []



def test_input_bound_at_its_cpu_quota(containers, fake_nvml_lib, tmp_path, monkeypatch):
    """A pipeline pinned at a 0.1-CPU quota while its GPU process shows 5 % SM."""
    from mltop.diagnostics.workload import classify

    c = containers.run(["sh", "-c", "while :; do :; done"], environment=CUDA_ENV, nano_cpus=100_000_000)
    pid = c.attrs["State"]["Pid"] or __import__("docker").from_env().containers.get(c.id).attrs["State"]["Pid"]
    write_scenario(tmp_path / "s.txt", FakeScenario(gpus=[FakeGpu(util=5, mem_used=2 * GIB, processes=[
        FakeProcess(pid, used_memory=1 * GIB, sm=5)])]))
    monkeypatch.setenv(SCENARIO_ENV, str(tmp_path / "s.txt"))
    sampler = Sampler(ProbeOptions(nvml=True, nvml_lib=str(fake_nvml_lib)))
    try:
        previous = snap = sampler.sweep()
        seen = []
        for _ in range(15):  # on a loaded host the loop may not even get its 0.1 CPU: wait for a sweep where it does
            time.sleep(0.5)
            previous, snap = snap, sampler.sweep()
            me = snap.container(c.id)
            seen.append(me.cpu_limit_percent)
            before = previous.container(c.id)
            if me.cpu_throttled_periods and before.cpu_throttled_periods is not None and \
                    me.cpu_throttled_periods > before.cpu_throttled_periods:
                break
        else:
            pytest.skip(f"the host is too loaded for the loop to reach its quota (% of limit seen: {seen})")
        w = classify(me, snap, previous=previous)
        assert w.kind == "input-cpu", (w, seen)
        result = run_doctor(snap, sampler.engine, containers=[c.name], previous=previous)
        f = next(f for f in result.findings if f.code == "perf.input_bound")
        assert "input-cpu" in f.title and "--cpus" in f.fix
        assert contradictions(snap, result.findings) == []
    finally:
        sampler.close()
