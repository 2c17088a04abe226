"""Every check from built snapshots, no engine and no GPU: its positive case and a healthy lookalike.

The engine-backed reproductions (test_doctor.py, test_checks_engine.py) stay; these pin each rule down.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from builders import GIB, MIB, container, gpu, gpu_process, gpu_request, gpu_use, gpu_workload, host
from builders import process, replace, snapshot
from mltop.diagnostics.checks import CONTAINER_CHECKS, HOST_CHECKS, CheckContext, Thresholds
from mltop.diagnostics.doctor import judge
from mltop.diagnostics.read_test import ReadTestResult
from mltop.probes.host_facts import ContainerFacts, HostFacts, ReadThrottle
from mltop.probes.model import DeviceMapping, DeviceRequest, EngineStatus, NvmlStatus, XidEvent

CUDA_ENV = (("PATH", "/usr/bin"), ("CUDA_VERSION", "12.1.1"), ("NVIDIA_REQUIRE_CUDA", "cuda>=12.1"))
TOOLKIT = HostFacts(toolkit_binaries={"nvidia-container-runtime-hook": "/usr/bin/nvidia-container-runtime-hook",
                                      "nvidia-ctk": "/usr/bin/nvidia-ctk", "nvidia-container-cli": None},
                    nvidia_char_links=("195:0", "195:255"), driver_version_line="NVRM version: 550.54.15")


def run(snap, *, logs: dict[str, list[str]] | None = None, facts: HostFacts = TOOLKIT,
        container_facts: dict[str, ContainerFacts] | None = None, **ctx_fields: Any):
    """Judge a built snapshot; `logs` and `container_facts` are keyed by container name."""
    by_name = {c.name: c.id for c in snap.containers}
    ctx = CheckContext(
        snapshot=snap, containers=snap.containers,
        logs={by_name[n]: tuple(lines) for n, lines in (logs or {}).items()},
        host=facts, thresholds=ctx_fields.pop("thresholds", Thresholds()),
        container_facts={by_name[n]: f for n, f in (container_facts or {}).items()}, **ctx_fields)
    return judge(ctx)


def codes(result, who: str | None = "any") -> set[str]:
    return {f.code for f in result.findings if who == "any" or f.container == who}


def find(result, code: str, who: str | None = "any"):
    hits = [f for f in result.findings if f.code == code and (who == "any" or f.container == who)]
    assert hits, f"no {code} for {who}: {[(f.code, f.container, f.title) for f in result.findings]}"
    return hits[0]


def warnings_for(result, who: str | None) -> list[tuple[str, str]]:
    return [(f.code, f.title) for f in result.findings if f.container == who and f.severity != "info"]


def cuda_container(name="job", **cfg) -> Any:
    cfg.setdefault("env", CUDA_ENV)
    return container(name, config_overrides=cfg)


def on_gpu(c, index=0, pid=4242, memory=4 * GIB, **gpu_overrides):
    """`c` as NVML sees it on GPU `index`: the container's use and the GPU's process list agree."""
    c = replace(c, gpus=(gpu_use(index, memory, 80.0),))
    g = gpu(index, utilization_percent=80.0, memory_used_bytes=memory + 512 * MIB,
            processes=(gpu_process(pid, memory, 80.0, container=c),), **gpu_overrides)
    return c, g


# --------------------------------------------------------------------------- the registry


def test_every_check_is_registered_once_under_a_name():
    names = [n for n, _ in HOST_CHECKS] + [n for n, _ in CONTAINER_CHECKS]
    assert len(names) == len(set(names))
    for expected in ("engine", "driver", "gpu.health", "gpu.xid", "gpu.ecc", "gpu.pcie_degraded",
                     "gpu.memory_orphaned", "gpu.dev_char", "toolkit", "gpu.not_visible", "driver.cuda_too_new",
                     "nvml.lost_in_container", "nccl.memlock", "oom", "oom.cuda", "shm", "io", "io.read_test",
                     "restarts", "pids", "cpu.throttled", "gpu.idle_reserved"):
        assert expected in names


# --------------------------------------------------------------------------- gpu.not_visible: the false alarm


def test_false_alarm_reproduced_gpu_via_default_runtime_and_nvml_use():
    """The issue's report: default runtime nvidia, no --gpus, NVML lists the container's process."""
    c, g = on_gpu(cuda_container(runtime=None))
    result = run(snapshot([c], [g], default_runtime="nvidia"))
    assert "gpu.not_visible" not in codes(result)


@pytest.mark.parametrize("how", ["default_runtime", "device_nodes", "privileged", "nvml_only", "cdi"])
def test_gpu_reached_without_gpus_flag_is_not_not_visible(how):
    cfg: dict[str, Any] = {}
    host_over: dict[str, Any] = {}
    if how == "default_runtime":
        cfg["runtime"] = None
        host_over["default_runtime"] = "nvidia"
    elif how == "device_nodes":
        cfg["devices"] = tuple(DeviceMapping(p, p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"))
    elif how == "privileged":
        cfg["privileged"] = True
    elif how == "cdi":
        cfg["device_requests"] = (DeviceRequest("cdi", 0, ("nvidia.com/gpu=all",), ()),)
    c = cuda_container(**cfg)
    gpus = []
    if how == "nvml_only":  # no configuration at all, yet the driver lists its process: it has a GPU
        c, g = on_gpu(c)
        gpus = [g]
    snap = snapshot([c], gpus, **host_over)
    assert snap.has_gpus(c)
    result = run(snap, logs={"job": ["no CUDA-capable device is detected"]} if how == "nvml_only" else None)
    assert "gpu.not_visible" not in codes(result), result.findings


def test_cuda_image_without_any_gpu_access_is_not_visible():
    c = cuda_container()
    f = find(run(snapshot([c])), "gpu.not_visible", "job")
    assert f.title == "Looks like a GPU workload but has no GPU assigned"
    assert any("engine default runc" in e for e in f.evidence)
    assert any("none of its processes on any GPU" in e for e in f.evidence)


def test_visible_devices_void_under_nvidia_runtime_hides_gpus_but_not_when_nvml_shows_use():
    c = cuda_container(runtime="nvidia", env=CUDA_ENV + (("NVIDIA_VISIBLE_DEVICES", "void"),))
    assert "hides every GPU" in find(run(snapshot([c])), "gpu.not_visible", "job").title
    c2, g = on_gpu(c)
    assert "gpu.not_visible" not in codes(run(snapshot([c2], [g])))


def test_cuda_visible_devices_beyond_assigned_gpus():
    c = cuda_container(device_requests=(gpu_request(1),), env=CUDA_ENV + (("CUDA_VISIBLE_DEVICES", "1"),))
    assert "names GPU indices" in find(run(snapshot([c])), "gpu.not_visible", "job").title
    ok = cuda_container(device_requests=(gpu_request(2),), env=CUDA_ENV + (("CUDA_VISIBLE_DEVICES", "1"),))
    assert "gpu.not_visible" not in codes(run(snapshot([ok])))


# --------------------------------------------------------------------------- toolkit


def test_toolkit_missing_and_registered_lookalike():
    c = cuda_container(device_requests=(gpu_request(),), exit_code=128,
                       error="could not select device driver \"\" with capabilities: [[gpu]]")
    c = replace(c, status="created")
    bare = HostFacts(toolkit_binaries={}, cdi_gpu_specs=())
    result = run(snapshot([c], runtimes=("runc",)), facts=bare)
    assert find(result, "toolkit.missing", "job").severity == "critical"
    hook_only = HostFacts(toolkit_binaries={"nvidia-container-runtime-hook": "/usr/bin/nvidia-container-runtime-hook"})
    assert "toolkit.not_registered" in codes(run(snapshot([c], runtimes=("runc",)), facts=hook_only))
    healthy, g = gpu_workload("job")
    assert not codes(run(snapshot([healthy], [g])), "job") & {"toolkit.missing", "toolkit.not_registered"}


def test_dev_char_missing_under_systemd_and_device_node_lookalike():
    c, g = gpu_workload("job")
    facts = replace(TOOLKIT, nvidia_char_links=())
    assert "gpu.dev_char_missing" in codes(run(snapshot([c], [g], cgroup_driver="systemd"), facts=facts))
    assert "gpu.dev_char_missing" not in codes(run(snapshot([c], [g], cgroup_driver="systemd")))
    # GPUs passed as --device nodes are in the engine's own device rules: a daemon-reload keeps them.
    nodes = cuda_container(devices=(DeviceMapping("/dev/nvidia0", "/dev/nvidia0"),))
    assert "gpu.dev_char_missing" not in codes(run(snapshot([nodes], cgroup_driver="systemd"), facts=facts))


def test_nvml_lost_in_container_and_never_had_gpus_lookalike():
    c, g = gpu_workload("job")
    logs = {"job": ["Failed to initialize NVML: Unknown Error"]}
    f = find(run(snapshot([c], [g], cgroup_driver="systemd", cgroup_version=2), logs=logs),
             "nvml.lost_in_container", "job")
    assert f.severity == "warning" and "create-dev-char-symlinks" in f.fix
    assert any("CgroupDriver systemd" in e for e in f.evidence)
    stranger = container("job")  # no GPU access at all: the message is no loss
    assert "nvml.lost_in_container" not in codes(run(snapshot([stranger]), logs=logs))


# --------------------------------------------------------------------------- driver and CUDA


def test_driver_states():
    c, g = gpu_workload("job")
    mismatch = host(nvml=NvmlStatus("version_mismatch", "Driver/library version mismatch"))
    assert find(run(snapshot([c], host=mismatch)), "driver.nvml_mismatch").severity == "critical"
    gone = host(nvml=NvmlStatus("driver_not_loaded", "driver not loaded"))
    assert "driver.not_loaded" in codes(run(snapshot([c], host=gone)))
    assert "driver.not_loaded" not in codes(run(snapshot([container("cpu-only")], host=gone)))
    assert "gpu.lost" in codes(run(snapshot([c], host=host(nvml=NvmlStatus("gpu_lost", "GPU 0 lost")))))
    assert "driver.nvml_timeout" in codes(run(snapshot([c], host=host(nvml=NvmlStatus("timeout", "2 s")))))
    assert not codes(run(snapshot([c], [g]))) & {"driver.nvml_mismatch", "driver.not_loaded", "gpu.lost",
                                                 "driver.nvml_timeout"}


def test_engine_unreachable():
    down = host(engine=EngineStatus("unreachable", "connection refused", "unix:///var/run/docker.sock"))
    assert find(run(snapshot([], host=down)), "engine.unreachable").severity == "critical"
    assert "engine.unreachable" not in codes(run(snapshot([])))


def test_cuda_too_new_and_older_image_lookalike():
    newer = cuda_container(env=(("CUDA_VERSION", "13.0.1"), ("NVIDIA_REQUIRE_CUDA", "cuda>=13.0")))
    assert find(run(snapshot([newer])), "driver.cuda_too_new", "job").severity == "critical"
    older = cuda_container(env=(("CUDA_VERSION", "11.8.0"), ("NVIDIA_REQUIRE_CUDA", "cuda>=11.8")))
    assert "driver.cuda_too_new" not in codes(run(snapshot([older])))


# --------------------------------------------------------------------------- memory


def test_oom_killed_near_limit_and_roomy_lookalike():
    dead = container("dead", status="exited", config_overrides=dict(oom_killed=True, exit_code=137))
    assert find(run(snapshot([dead])), "oom.killed", "dead").severity == "critical"
    full = container("full", memory_bytes=int(1.95 * GIB), memory_limit_bytes=2 * GIB)
    assert "oom.near_limit" in codes(run(snapshot([full])), "full")
    roomy = container("roomy", memory_bytes=1 * GIB, memory_limit_bytes=2 * GIB)
    assert not codes(run(snapshot([roomy])), "roomy") & {"oom.killed", "oom.near_limit"}


def test_cuda_oom_in_logs_and_a_word_alone_lookalike():
    c, g = gpu_workload("job")
    logs = {"job": ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has ..."]}
    assert "2.00 GiB" in find(run(snapshot([c], [g]), logs=logs), "oom.cuda", "job").title
    calm = {"job": ["epoch 3: memory use fine, no out-of-memory so far"]}
    assert "oom.cuda" not in codes(run(snapshot([c], [g]), logs=calm))


@pytest.mark.parametrize("cfg", [dict(ipc_mode="host", shm_size_bytes=64 * MIB), dict(shm_size_bytes=8 * GIB)])
def test_shm_too_small_and_host_ipc_or_big_shm_lookalikes(cfg):
    small = container("small", shm_bytes=62 * MIB)
    assert find(run(snapshot([small])), "shm.too_small", "small").severity == "warning"
    ok = container("ok", shm_bytes=62 * MIB, config_overrides=cfg)
    assert "shm.too_small" not in codes(run(snapshot([ok])))


# --------------------------------------------------------------------------- I/O


def test_read_throttle_reached_and_not_reached():
    throttle = {"BlkioDeviceReadBps": ({"Path": "/dev/vda", "Rate": 1048576},)}
    at_limit = container("slow", io_read_bytes_per_s=1_000_000.0, config_overrides=dict(blkio_throttles=throttle))
    assert find(run(snapshot([at_limit])), "io.slow", "slow").severity == "warning"
    wide = {"BlkioDeviceReadBps": ({"Path": "/dev/vda", "Rate": 500 * 1048576},)}
    below = container("fast", io_read_bytes_per_s=5_000_000.0, config_overrides=dict(blkio_throttles=wide))
    result = run(snapshot([below]))
    assert "io.slow" not in codes(result) and find(result, "io.throttle_set", "fast").severity == "info"


def test_cgroup_read_throttle_from_container_facts():
    c = container("slow", io_read_bytes_per_s=900_000.0)
    facts = ContainerFacts(read_throttles=(ReadThrottle("/dev/vda (254:0)", "rbps", "1048576",
                                                        "/sys/fs/cgroup/blkio/x/blkio.throttle.read_bps_device"),))
    f = find(run(snapshot([c]), container_facts={"slow": facts}), "io.slow", "slow")
    assert any("rbps=1048576" in e for e in f.evidence)


def test_reads_stalled_under_pressure_and_quiet_host_lookalike():
    c = container("reader", io_read_bytes_per_s=5e6)
    assert "io.slow" in codes(run(snapshot([c], pressure={"io": 45.0})))
    assert "io.slow" not in codes(run(snapshot([c], pressure={"io": 2.0})))


def test_read_test_slow_and_fast():
    c = container("reader")

    def result(mb_per_s):
        return ReadTestResult("/data/x", ("dd",), True, 64 * MIB, 64 / mb_per_s, mb_per_s, True, False, 0,
                              "67108864 bytes copied", "dd")
    assert "io.slow" in codes(run(snapshot([c]), read_tests={c.id: result(20.0)}))
    fast = run(snapshot([c]), read_tests={c.id: result(900.0)})
    assert "io.slow" not in codes(fast) and "io.read_test" in codes(fast)


# --------------------------------------------------------------------------- container lifecycle


def test_restart_loop_crash_and_clean_exit_lookalike():
    loop = container("loop", status="exited", config_overrides=dict(restart_count=5, exit_code=1))
    assert "container.restart_loop" in codes(run(snapshot([loop])))
    segv = container("segv", status="exited", config_overrides=dict(exit_code=139))
    assert "SIGSEGV" in find(run(snapshot([segv])), "container.crashed", "segv").title
    done = container("done", status="exited", config_overrides=dict(exit_code=0, restart_count=1))
    result = run(snapshot([done]))
    assert not codes(result, "done") & {"container.restart_loop", "container.crashed"}
    assert warnings_for(result, "done") == []


def test_pids_near_max_and_far_from_it():
    c = container("forky", pids=8)
    at_max = ContainerFacts(pids_dir="/sys/fs/cgroup/pids/x", pids_max=8, pids_failed_forks=3)
    assert "pids.near_max" in codes(run(snapshot([c]), container_facts={"forky": at_max}))
    roomy = ContainerFacts(pids_dir="/sys/fs/cgroup/pids/x", pids_max=1000)
    assert "pids.near_max" not in codes(run(snapshot([c]), container_facts={"forky": roomy}))


def test_cpu_throttled_and_throttle_not_reached():
    before = container("busy", cpu_throttled_periods=100, config_overrides=dict(cpu_period=100_000))
    after = replace(before, cpu_throttled_periods=108)  # 8 of ~10 periods in 1 s
    result = run(snapshot([after], interval_s=1.0), previous=snapshot([before]))
    assert find(result, "cpu.throttled", "busy").severity == "warning"
    calm = replace(before, cpu_throttled_periods=101)  # 1 of ~10: below the 0.25 threshold
    assert "cpu.throttled" not in codes(run(snapshot([calm], interval_s=1.0), previous=snapshot([before])))


def test_nccl_memlock_on_two_gpus_and_unlimited_or_single_gpu_lookalikes():
    c = container("ddp", gpus=(gpu_use(0), gpu_use(1)))
    gpus = [gpu(0, processes=(gpu_process(4242, container=c),)), gpu(1, processes=(gpu_process(4243, container=c),))]
    limited = ContainerFacts(memlock_soft_bytes=8 * MIB, limits_file="/proc/4000/limits")
    f = find(run(snapshot([c], gpus), container_facts={"ddp": limited}), "nccl.memlock", "ddp")
    assert f.severity == "info" and "memlock=-1" in f.fix and "2 GPUs" in f.title
    logs = {"ddp": ["NCCL WARN NET/IB : ibv_reg_mr failed: Cannot allocate memory"]}
    assert find(run(snapshot([c], gpus), logs=logs, container_facts={"ddp": limited}),
                "nccl.memlock").severity == "warning"
    unlimited = ContainerFacts(memlock_soft_bytes=-1)
    assert "nccl.memlock" not in codes(run(snapshot([c], gpus), container_facts={"ddp": unlimited}))
    single, g = gpu_workload("single")
    assert "nccl.memlock" not in codes(run(snapshot([single], [g]), container_facts={"single": limited}))


# --------------------------------------------------------------------------- GPU health


def test_gpu_throttled_and_power_cap_lookalike():
    c, g = gpu_workload("job")
    hot = replace(g, throttle_reasons=("hw_thermal_slowdown",), temperature_c=91.0)
    assert "gpu.throttled" in codes(run(snapshot([c], [hot])))
    capped = replace(g, throttle_reasons=("sw_power_cap",))  # a deliberate cap is no fault
    assert "gpu.throttled" not in codes(run(snapshot([c], [capped])))


def test_persistence_off_and_on():
    assert "gpu.persistence_off" in codes(run(snapshot([], [gpu(0, persistence_mode=False, memory_used_bytes=0)])))
    assert "gpu.persistence_off" not in codes(run(snapshot([], [gpu(0, memory_used_bytes=0)])))


def test_gpu_idle_reserved_and_busy_lookalike():
    c = container("holder", gpus=(gpu_use(0, 70 * GIB, 0.0),))
    idle = gpu(0, utilization_percent=0.0, memory_used_bytes=70 * GIB,
               processes=(gpu_process(4242, 70 * GIB, 0.0, container=c),))
    assert "gpu.idle_reserved" in codes(run(snapshot([c], [idle])), "holder")
    busy_c, busy_g = gpu_workload("holder")
    assert "gpu.idle_reserved" not in codes(run(snapshot([busy_c], [busy_g])))


def xid(code: int, age_s: float = 30.0, source: str = "NVML events", text: str | None = None) -> XidEvent:
    return XidEvent(code, time.time() - age_s, source, "0000:18:00", text)


def test_xid_hardware_application_and_old_ones():
    c, g = gpu_workload("trainer")
    fell = run(snapshot([c], [replace(g, xid_events=(xid(79),))]))
    f = find(fell, "gpu.xid")
    assert f.severity == "critical" and "fallen off the bus" in f.title and "trainer" in f.title
    assert "nvidia-smi -r -i 0" in f.fix
    app = find(run(snapshot([c], [replace(g, xid_events=(xid(13),))])), "gpu.xid")
    assert app.severity == "warning" and "the job crashed, the GPU is fine" in app.title
    kernel = xid(79, age_s=3 * 86400, source="/dev/kmsg",
                 text="NVRM: Xid (PCI:0000:18:00): 79, pid=1, GPU has fallen off the bus.")
    old = find(run(snapshot([c], [replace(g, xid_events=(kernel,))])), "gpu.xid")
    assert old.severity == "info" and any("kernel log" in e for e in old.evidence)
    assert "gpu.xid" not in codes(run(snapshot([c], [g])))


@pytest.mark.parametrize("field,value,severity", [
    ("ecc_volatile_uncorrected", 2, "critical"),
    ("remapped_rows_failed", True, "critical"),
    ("remapped_rows_pending", True, "warning"),
    ("retired_pages_pending", True, "warning"),
])
def test_ecc_faults(field, value, severity):
    c, g = gpu_workload("trainer")
    g = replace(g, **{"ecc_enabled": True, "ecc_volatile_uncorrected": 0, field: value})
    f = find(run(snapshot([c], [g])), "gpu.ecc")
    assert f.severity == severity and "trainer" in f.title


def test_corrected_ecc_errors_alone_are_no_finding():
    c, g = gpu_workload("trainer")
    g = replace(g, ecc_enabled=True, ecc_volatile_corrected=120, ecc_aggregate_corrected=4000,
                ecc_volatile_uncorrected=0, remapped_rows_pending=False, remapped_rows_failed=False,
                retired_pages_pending=False)
    assert "gpu.ecc" not in codes(run(snapshot([c], [g])))


def test_pcie_degraded_while_busy_and_idle_downshift_lookalike():
    c, g = gpu_workload("trainer")
    link = dict(pcie_generation=3, pcie_generation_max=5, pcie_width=16, pcie_width_max=16)
    f = find(run(snapshot([c], [replace(g, **link)])), "gpu.pcie_degraded")
    assert "Gen3 of Gen5" in f.title and "trainer" in f.title
    idle = replace(g, utilization_percent=0.0, **link)  # idle GPUs lower their link speed to save power
    assert "gpu.pcie_degraded" not in codes(run(snapshot([c], [idle])))


def test_memory_orphaned_and_driver_reserve_lookalike():
    held = gpu(0, memory_used_bytes=20 * GIB, processes=())
    f = find(run(snapshot([], [held])), "gpu.memory_orphaned")
    assert any("held by none" in e for e in f.evidence)
    reserve = gpu(0, memory_used_bytes=500 * MIB, processes=())  # the driver's own reservation
    assert "gpu.memory_orphaned" not in codes(run(snapshot([], [reserve])))
    stopped = container("gone", status="exited")
    zombie = gpu(0, memory_used_bytes=4 * GIB + 512 * MIB, processes=(gpu_process(4242, container=stopped),))
    assert "stopped container gone" in find(run(snapshot([stopped], [zombie])), "gpu.memory_orphaned").title


def test_memory_orphaned_is_skipped_when_processes_are_hidden_from_mltop():
    held = gpu(0, memory_used_bytes=20 * GIB, processes=())
    result = run(snapshot([], [held], limitations=("The containers' processes are not visible from here",)))
    assert "gpu.memory_orphaned" not in codes(result)
    assert any(s.check == "gpu.memory_orphaned" for s in result.checks_skipped)


# --------------------------------------------------------------------------- every check's lookalike at once


def test_a_healthy_gpu_job_yields_nothing_worse_than_info():
    c, g = gpu_workload("trainer", memory_limit_bytes=64 * GIB,
                        config_overrides=dict(ipc_mode="host", env=CUDA_ENV, device_requests=(gpu_request(),)))
    g = replace(g, ecc_enabled=True, ecc_volatile_uncorrected=0, ecc_volatile_corrected=3, pcie_generation=5,
                pcie_generation_max=5, pcie_width=16, pcie_width_max=16, remapped_rows_pending=False,
                remapped_rows_failed=False)
    facts = ContainerFacts(pids_dir="/x", pids_max=4096, memlock_soft_bytes=-1)
    result = run(snapshot([c], [g]), container_facts={"trainer": facts})
    assert [(f.code, f.title) for f in result.findings if f.severity != "info"] == []
    assert not result.checks_skipped, result.checks_skipped



# --------------------------------------------------------------------------- why is my training slow?


def test_workload_classification_each_kind():
    from mltop.diagnostics.workload import classify
    from mltop.probes.model import Pressure

    def job(sm, **over):
        return container("job", gpus=(gpu_use(0, 8 * GIB, sm),), **over)

    assert classify(job(85.0)).kind == "gpu"
    quota = classify(job(20.0, cpu_limit_cores=4.0, cpu_limit_percent=98.0, cpu_percent=392.0))
    assert quota.kind == "input-cpu" and any("cpu_quota_share=0.9" in r for r in quota.reasons)
    loaders = job(20.0, processes=(process(101, container_pid=1, cpu_percent=40.0),
                                   process(102, container_pid=7, cpu_percent=99.0),
                                   process(103, container_pid=8, cpu_percent=98.0)))
    assert classify(loaders).kind == "input-cpu"
    io = classify(job(10.0, pressure=Pressure(cpu=1.0, memory=0.0, io=55.0), io_read_bytes_per_s=3e6))
    assert io.kind == "input-io" and any("io_psi_percent=20.0" in r for r in io.reasons)
    mem = classify(job(10.0, memory_bytes=int(7.8 * GIB), memory_limit_bytes=8 * GIB))
    assert mem.kind == "memory"
    idle = classify(job(0.0, cpu_percent=0.5, processes=(process(1, cpu_percent=0.5),)))
    assert idle.kind == "idle"
    assert classify(container("cpu-only")) is None  # no GPU: nothing to classify
    # Underused with no reason the snapshot shows: say nothing rather than guess.
    assert classify(job(30.0, cpu_percent=60.0, processes=(process(1, cpu_percent=60.0),))) is None


def test_input_bound_finding_and_gpu_bound_lookalike():
    slow = container("slow", gpus=(gpu_use(0, 8 * GIB, 15.0),), cpu_limit_cores=2.0, cpu_limit_percent=99.0)
    g = gpu(0, utilization_percent=15.0, memory_used_bytes=8 * GIB + 512 * MIB,
            processes=(gpu_process(4242, 8 * GIB, 15.0, container=slow),))
    f = find(run(snapshot([slow], [g])), "perf.input_bound", "slow")
    assert "input-cpu" in f.title and "num_workers" in f.fix
    fast = replace(slow, gpus=(gpu_use(0, 8 * GIB, 90.0),))  # at its quota, but the GPU is busy: GPU-bound
    g2 = replace(g, utilization_percent=90.0, processes=(gpu_process(4242, 8 * GIB, 90.0, container=fast),))
    assert "perf.input_bound" not in codes(run(snapshot([fast], [g2])))
