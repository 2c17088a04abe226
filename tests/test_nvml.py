"""The NVML probe through the real pynvml bindings, loaded onto the simulated libnvidia-ml.so.1."""

from __future__ import annotations

import os
import time

import pytest

from fakenvml import (
    DRIVER_NOT_LOADED,
    GPU_IS_LOST,
    LIB_RM_VERSION_MISMATCH,
    NO_PERMISSION,
    NOT_SUPPORTED,
    UNKNOWN,
    FakeGpu,
    FakeProcess,
    FakeScenario,
    FakeMig,
    FakeXid,
    fail,
    hang,
)
from mltop.probes.nvml import ENV_LIBRARY, NvmlProbe, NvmlState, resolve_library_path

GiB = 1 << 30
OWN_PID = os.getpid()
OTHER_PID = 4_000_000  # beyond pid_max: no /proc entry, so no name


def _own_comm() -> str:
    with open(f"/proc/{OWN_PID}/comm") as f:
        return f.read().strip()


def busy_gpu(**overrides) -> FakeGpu:
    values = dict(
        uuid="GPU-8f6a1c2e-0000-4000-8000-000000000000",
        name="NVIDIA H100 80GB HBM3",
        util=87,
        mem_util=41,
        mem_total=80 * GiB,
        mem_used=61 * GiB,
        temp=71,
        power_mw=612_500,
        power_limit_mw=700_000,
        clocks_event=0x4 | 0x40,
        persistence=True,
        pci="00000000:3B:00.0",
        processes=[
            FakeProcess(OWN_PID, "compute", used_memory=40 * GiB, sm=63, sm_prev=12),
            FakeProcess(OTHER_PID, "compute", used_memory=20 * GiB, sm=0),
            FakeProcess(OTHER_PID + 1, "graphics", used_memory=None, sm=5),
        ],
    )
    values.update(overrides)
    return FakeGpu(**values)


def others(unavailable) -> dict[str, str]:
    """What is unavailable besides GPM, NVLink and the fabric (these scenarios' GPUs have none: tests/test_gpm.py
    and tests/test_fabric.py cover them)."""
    return {k: v for k, v in unavailable.items() if k not in ("gpm", "nvlinks", "fabric")}


@pytest.fixture
def probes():
    """Make probes that are closed after the test, so pynvml's global state never leaks between tests."""
    made: list[NvmlProbe] = []

    def make(library_path: str | None, deadline_s: float = 2.0, kmsg_path: str = "") -> NvmlProbe:
        probe = NvmlProbe(library_path, deadline_s=deadline_s, kmsg_path=kmsg_path)
        made.append(probe)
        return probe

    yield make
    for probe in made:
        probe.close()


def test_healthy_gpu_gives_values_throttle_names_and_processes(nvml_scenario, probes):
    lib = nvml_scenario(FakeScenario(gpus=[busy_gpu()], driver_version="550.54.15", cuda_version=12040))
    status, gpus = probes(lib).sample()

    assert status.status == NvmlState.OK and status.ok and status.error is None
    assert (status.driver_version, status.cuda_driver_version) == ("550.54.15", "12.4")
    assert status.library_path == lib
    (gpu,) = gpus
    assert (gpu.index, gpu.uuid, gpu.name) == (0, "GPU-8f6a1c2e-0000-4000-8000-000000000000", "NVIDIA H100 80GB HBM3")
    assert (gpu.utilization_percent, gpu.memory_utilization_percent) == (87.0, 41.0)
    assert (gpu.memory_used_bytes, gpu.memory_total_bytes) == (61 * GiB, 80 * GiB)
    assert gpu.temperature_c == 71.0
    assert (gpu.power_w, gpu.power_limit_w) == (612.5, 700.0)
    assert gpu.throttle_reasons == ("sw_power_cap", "hw_thermal_slowdown")
    assert gpu.persistence_mode is True
    assert gpu.pci_bus_id == "00000000:3B:00.0"
    assert others(gpu.unavailable) == {}

    by_pid = {p.host_pid: p for p in gpu.processes}
    assert set(by_pid) == {OWN_PID, OTHER_PID, OTHER_PID + 1}
    mine = by_pid[OWN_PID]
    # The newest utilisation sample wins over the older one (12 %).
    assert (mine.type, mine.gpu_memory_bytes, mine.sm_percent, mine.name) == ("compute", 40 * GiB, 63.0, _own_comm())
    # On the GPU but absent from the samples: idle, 0 %. No /proc entry: no name.
    idle = by_pid[OTHER_PID]
    assert (idle.sm_percent, idle.name, idle.gpu_memory_bytes) == (0.0, None, 20 * GiB)
    graphics = by_pid[OTHER_PID + 1]
    assert (graphics.type, graphics.gpu_memory_bytes, graphics.sm_percent) == ("graphics", None, 5.0)
    assert all(p.container_id is None and p.container_name is None and p.runtime is None for p in gpu.processes)


def test_sm_percent_counts_only_samples_newer_than_the_last_seen(nvml_scenario, probes):
    # The fake stamps every process sample with this fixed time, as if the processes went idle after it.
    stamp_us = 1_700_000_000_000_000
    gpu = busy_gpu(util_ts=stamp_us, processes=[FakeProcess(OWN_PID, sm=55, sm_prev=20)])
    probe = probes(nvml_scenario(gpus=[gpu]))

    first = probe.sample()[1][0].processes[0]
    second = probe.sample()[1][0].processes[0]

    assert first.sm_percent == 55.0
    # NVML answers NOT_FOUND when nothing is newer than the timestamp the probe passes back: idle, 0 %.
    assert second.sm_percent == 0.0


def test_version_mismatch_says_reboot_or_reload(nvml_scenario, probes):
    lib = nvml_scenario(init_error=LIB_RM_VERSION_MISMATCH, gpus=[busy_gpu()])
    status, gpus = probes(lib).sample()

    assert status.status == NvmlState.VERSION_MISMATCH and not status.ok
    assert "the driver was upgraded without a reboot: reboot, or reload the nvidia kernel modules" in status.error
    assert gpus == ()


def test_driver_not_loaded_says_modprobe_or_dkms(nvml_scenario, probes):
    status, gpus = probes(nvml_scenario(init_error=DRIVER_NOT_LOADED)).sample()

    assert status.status == NvmlState.DRIVER_NOT_LOADED
    assert "modprobe nvidia" in status.error and "dkms" in status.error
    assert gpus == ()


@pytest.mark.parametrize(
    ("code", "state", "words"),
    [
        (NO_PERMISSION, NvmlState.NO_PERMISSION, "/dev/nvidiactl"),
        (UNKNOWN, NvmlState.ERROR, "systemctl daemon-reload"),
    ],
)
def test_other_init_failures_are_named(nvml_scenario, probes, code, state, words):
    status, _ = probes(nvml_scenario(init_error=code)).sample()

    assert status.status == state
    assert words in status.error


def test_missing_library_names_the_path(tmp_path, probes):
    bogus = str(tmp_path / "nowhere" / "libnvidia-ml.so.1")
    status, gpus = probes(bogus).sample()

    assert status.status == NvmlState.LIBRARY_NOT_FOUND
    assert bogus in status.error and "--nvml-lib" in status.error
    assert gpus == ()


def test_old_driver_falls_back_to_v2_calls_and_marks_what_it_lacks(nvml_scenario, probes):
    lib = nvml_scenario(gpus=[busy_gpu()], old_driver=True)
    status, (gpu,) = probes(lib).sample()

    assert status.ok
    # _v3 process calls are missing: the _v2 ones still list processes with their memory.
    by_pid = {p.host_pid: p for p in gpu.processes}
    assert by_pid[OWN_PID].gpu_memory_bytes == 40 * GiB and by_pid[OTHER_PID + 1].type == "graphics"
    # No process utilisation on this driver: SM % unknown, not 0, and said why.
    assert all(p.sm_percent is None for p in gpu.processes)
    assert "nvmlDeviceGetProcessUtilization" in gpu.unavailable["sm_percent"]
    # ClocksEventReasons is missing: the older ThrottleReasons name answers.
    assert gpu.throttle_reasons == ("sw_power_cap", "hw_thermal_slowdown")
    # nvmlDeviceGetMemoryInfo_v2 is missing: the first version answers.
    assert gpu.memory_used_bytes == 61 * GiB
    assert set(others(gpu.unavailable)) == {"sm_percent"}


def test_not_supported_field_alone_is_unavailable(nvml_scenario, probes):
    lib = nvml_scenario(gpus=[busy_gpu()], directives=[fail("nvmlDeviceGetPowerUsage", NOT_SUPPORTED)])
    status, (gpu,) = probes(lib).sample()

    assert status.ok
    assert gpu.power_w is None
    assert others(gpu.unavailable) == {"power_w": "not supported by this GPU or driver"}
    assert gpu.power_limit_w == 700.0 and gpu.temperature_c == 71.0 and len(gpu.processes) == 3


def test_throttle_reasons_unavailable_under_both_names(nvml_scenario, probes):
    lib = nvml_scenario(
        gpus=[busy_gpu()],
        directives=[
            fail("nvmlDeviceGetCurrentClocksEventReasons", NOT_SUPPORTED),
            fail("nvmlDeviceGetCurrentClocksThrottleReasons", NOT_SUPPORTED),
        ],
    )
    _, (gpu,) = probes(lib).sample()

    assert gpu.throttle_reasons == ()
    assert gpu.unavailable["throttle_reasons"] == "not supported by this GPU or driver"


def test_lost_gpu_is_reported_and_the_others_kept(nvml_scenario, probes):
    healthy = busy_gpu()
    lost = busy_gpu(uuid="GPU-dead0000-0000-4000-8000-000000000001", pci="00000000:5E:00.0", processes=[])
    lib = nvml_scenario(gpus=[healthy, lost], directives=[fail("nvmlDeviceGetUtilizationRates", GPU_IS_LOST, gpu=1)])
    status, gpus = probes(lib).sample()

    assert status.status == NvmlState.GPU_LOST
    assert "GPU 1" in status.error and lost.uuid in status.error and "Xid 79" in status.error
    assert len(gpus) == 2
    assert gpus[0].utilization_percent == 87.0 and others(gpus[0].unavailable) == {} and len(gpus[0].processes) == 3
    assert gpus[1].uuid == lost.uuid
    assert gpus[1].utilization_percent is None and gpus[1].memory_used_bytes is None
    assert "lost" in gpus[1].unavailable["utilization_percent"]


def test_hung_driver_call_times_out_without_queueing_and_recovers(nvml_scenario, probes):
    lib = nvml_scenario(gpus=[busy_gpu()], directives=[hang("nvmlDeviceGetPowerUsage", 1.5, times=1)])
    probe = probes(lib, deadline_s=0.3)

    started = time.monotonic()
    status, gpus = probe.sample()
    took = time.monotonic() - started
    assert status.status == NvmlState.TIMEOUT and gpus == ()
    assert "did not answer within 0.3 s" in status.error and "D state" in status.error
    assert 0.25 <= took < 1.0

    # The call is still stuck: answer at once instead of queueing another sweep behind it.
    started = time.monotonic()
    status, _ = probe.sample()
    assert status.status == NvmlState.TIMEOUT
    assert time.monotonic() - started < 0.1

    # Once the driver answers, sampling works again.
    deadline = time.monotonic() + 5
    while status.status == NvmlState.TIMEOUT and time.monotonic() < deadline:
        time.sleep(0.1)
        status, gpus = probe.sample()
    assert status.ok and gpus[0].power_w == 612.5


def test_init_is_retried_with_backoff_and_recovers_when_fixed(nvml_scenario, probes):
    lib = nvml_scenario(init_error=LIB_RM_VERSION_MISMATCH, gpus=[busy_gpu()])
    probe = probes(lib)
    probe.retry_min_s = 0.3
    assert probe.sample()[0].status == NvmlState.VERSION_MISMATCH

    nvml_scenario(gpus=[busy_gpu()])  # the host was rebooted
    # Within the backoff the probe does not hammer init: the old answer stands.
    assert probe.sample()[0].status == NvmlState.VERSION_MISMATCH
    time.sleep(0.4)
    status, gpus = probe.sample()
    assert status.ok and len(gpus) == 1


def test_driver_lost_mid_session_reinitialises(nvml_scenario, probes):
    lib = nvml_scenario(gpus=[busy_gpu()], directives=[fail("nvmlDeviceGetCount_v2", DRIVER_NOT_LOADED)])
    probe = probes(lib)

    status, gpus = probe.sample()
    assert status.status == NvmlState.DRIVER_NOT_LOADED and gpus == ()
    nvml_scenario(gpus=[busy_gpu()])  # `modprobe nvidia`: the fake reads this at the next init only
    # The session is dropped, so the next sample inits again and answers.
    status, gpus = probe.sample()
    assert status.ok and len(gpus) == 1


def test_closed_probe_is_disabled_and_frees_pynvml(nvml_scenario, probes):
    import pynvml

    probe = probes(nvml_scenario(gpus=[busy_gpu()]))
    assert probe.sample()[0].ok
    assert pynvml.nvmlLib is not None
    probe.close()

    assert pynvml.nvmlLib is None  # another probe, another library, starts clean
    assert probe.sample()[0].status == NvmlState.DISABLED


def test_two_libraries_one_after_the_other(nvml_scenario, probes):
    first = probes(nvml_scenario(gpus=[busy_gpu()], old_driver=True))
    assert first.sample()[1][0].processes[0].sm_percent is None
    first.close()

    second = probes(nvml_scenario(gpus=[busy_gpu()]))
    assert second.sample()[1][0].processes[0].sm_percent == 63.0


def test_resolve_library_path_prefers_flag_then_environment(monkeypatch):
    monkeypatch.setenv(ENV_LIBRARY, "/from/env/libnvidia-ml.so.1")
    assert resolve_library_path("/from/flag/libnvidia-ml.so.1") == "/from/flag/libnvidia-ml.so.1"
    assert resolve_library_path(None) == "/from/env/libnvidia-ml.so.1"
    monkeypatch.delenv(ENV_LIBRARY)
    assert resolve_library_path(None) is None


# --------------------------------------------------------------------------- health


def test_health_fields_from_every_call(nvml_scenario, probes):
    sick = dict(sm_clock=1410, sm_clock_max=1980, mem_clock=2619, mem_clock_max=2619, pstate=2, fan=87, ecc_mode=1,
                ecc_vol_corr=12, ecc_vol_unc=1, ecc_agg_corr=340, ecc_agg_unc=2, retired_pending=1, remap_corr=3,
                remap_unc=1, remap_pending=1, remap_failed=0, pcie_gen=3, pcie_gen_max=5, pcie_width=8,
                pcie_width_max=16, pcie_tx_kbs=1000, pcie_rx_kbs=2000, enc=15, dec=40, compute_mode=3, mig_mode=1)
    lib = nvml_scenario(FakeScenario(gpus=[busy_gpu(health=sick)]))
    _, (gpu,) = probes(lib).sample()
    assert (gpu.sm_clock_mhz, gpu.sm_clock_max_mhz, gpu.memory_clock_mhz, gpu.memory_clock_max_mhz) == \
        (1410, 1980, 2619, 2619)
    assert (gpu.performance_state, gpu.fan_percent) == (2, 87.0)
    assert gpu.ecc_enabled is True
    assert (gpu.ecc_volatile_corrected, gpu.ecc_volatile_uncorrected, gpu.ecc_aggregate_corrected,
            gpu.ecc_aggregate_uncorrected) == (12, 1, 340, 2)
    assert gpu.retired_pages_pending is True
    assert (gpu.remapped_rows_correctable, gpu.remapped_rows_uncorrectable, gpu.remapped_rows_pending,
            gpu.remapped_rows_failed) == (3, 1, True, False)
    assert (gpu.pcie_generation, gpu.pcie_generation_max, gpu.pcie_width, gpu.pcie_width_max) == (3, 5, 8, 16)
    assert (gpu.pcie_tx_bytes_per_s, gpu.pcie_rx_bytes_per_s) == (1000 * 1024.0, 2000 * 1024.0)
    assert (gpu.encoder_percent, gpu.decoder_percent) == (15.0, 40.0)
    assert gpu.compute_mode == "exclusive_process" and gpu.mig_enabled is True
    assert others(gpu.unavailable) == {}


def test_health_calls_a_gpu_lacks_are_unavailable_and_the_rest_still_comes(nvml_scenario, probes):
    lib = nvml_scenario(FakeScenario(gpus=[busy_gpu(health={"fan": 30})],
                                     directives=[fail("nvmlDeviceGetPerformanceState", NO_PERMISSION)]))
    _, (gpu,) = probes(lib).sample()
    assert gpu.fan_percent == 30.0 and gpu.utilization_percent == 87.0
    assert gpu.sm_clock_mhz is None and gpu.unavailable["sm_clock_mhz"] == "not supported by this GPU or driver"
    assert gpu.unavailable["performance_state"] == "no permission"
    assert gpu.ecc_enabled is None and gpu.ecc_volatile_uncorrected is None
    assert gpu.remapped_rows_failed is None and "remapped_rows_pending" in gpu.unavailable


def test_values_follow_their_sequence_over_time(nvml_scenario, probes):
    lib = nvml_scenario(FakeScenario(gpus=[busy_gpu(util=[10, 90], temp=[40, 80], step_ms=300,
                                                    health={"fan": [20, 70]})]))
    probe = probes(lib)
    seen = set()
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        _, (gpu,) = probe.sample()
        seen.add((gpu.utilization_percent, gpu.temperature_c, gpu.fan_percent))
        time.sleep(0.1)
    assert seen == {(10.0, 40.0, 20.0), (90.0, 80.0, 70.0)}


def test_xid_events_from_nvml_are_kept_with_their_time(nvml_scenario, probes):
    second = busy_gpu(uuid="GPU-bbbbbbbb-0000-4000-8000-000000000000", pci="00000000:86:00.0", processes=[])
    lib = nvml_scenario(FakeScenario(gpus=[busy_gpu(), second], xids=[FakeXid(gpu=1, code=79),
                                                                       FakeXid(gpu=1, code=48, at=0.5)]))
    probe = probes(lib)
    before = time.time()
    _, (g0, g1) = probe.sample()
    assert g0.xid_events == ()
    assert [(e.xid, e.source) for e in g1.xid_events] == [(79, "NVML events")]
    assert before - 1 <= g1.xid_events[0].time <= time.time()
    time.sleep(0.6)
    _, (g0, g1) = probe.sample()
    assert [e.xid for e in g1.xid_events] == [79, 48]  # kept across sweeps, delivered once each


def test_xids_from_the_kernel_log_match_a_gpu_by_pci_id(nvml_scenario, probes, tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text(
        "6,100,1000000,-;nvidia-modeset: Loading NVIDIA Kernel Mode Setting Driver\n"
        "4,101,2500000,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python3, GPU has fallen off the bus.\n"
        "4,102,2600000,-;NVRM: Xid (PCI:0000:aa:00): 13, pid=99, Graphics Exception on another GPU\n")
    lib = nvml_scenario(FakeScenario(gpus=[busy_gpu()]))
    probe = probes(lib, kmsg_path=str(kmsg))
    _, (gpu,) = probe.sample()
    (event,) = gpu.xid_events
    assert (event.xid, event.source, event.pci_bus_id) == (79, "/dev/kmsg", "0000:3b:00")
    assert "GPU has fallen off the bus" in event.text and event.time < time.time()
    with kmsg.open("a") as f:
        f.write("4,103,3000000,-;NVRM: Xid (PCI:0000:3b:00.0): 94, pid=1234, Contained ECC error\n")
    _, (gpu,) = probe.sample()
    assert [e.xid for e in gpu.xid_events] == [79, 94]  # only new records read, the old one kept once


def test_mig_devices_with_their_memory_and_processes(nvml_scenario, probes):
    gpu = busy_gpu(health={"mig_mode": 1}, processes=[
        FakeProcess(OWN_PID, "compute", used_memory=5 * GiB, sm=0, mig=0),
        FakeProcess(OTHER_PID, "compute", used_memory=2 * GiB, sm=0, mig=2),
    ])
    migs = [FakeMig(0, 0, "MIG-aaaaaaaa-0000-0000-0000-000000000000", mem_total=10 * GiB, mem_used=5 * GiB, gi=1),
            FakeMig(0, 2, "MIG-bbbbbbbb-0000-0000-0000-000000000000", mem_total=20 * GiB, mem_used=2 * GiB, gi=3)]
    lib = nvml_scenario(FakeScenario(gpus=[gpu], migs=migs))
    _, (g,) = probes(lib).sample()
    assert g.mig_enabled is True
    assert [(m.index, m.uuid[:12], m.gpu_instance_id, m.memory_used_bytes, m.memory_total_bytes, m.host_pids)
            for m in g.mig_devices] == [(0, "MIG-aaaaaaaa", 1, 5 * GiB, 10 * GiB, (OWN_PID,)),
                                        (2, "MIG-bbbbbbbb", 3, 2 * GiB, 20 * GiB, (OTHER_PID,))]
    # Their processes are on the parent GPU's list too, where the sampler attributes them to containers.
    assert [p.host_pid for p in g.mig_processes(g.mig_devices[0])] == [OWN_PID]


def test_no_mig_devices_when_mig_is_off(nvml_scenario, probes):
    lib = nvml_scenario(FakeScenario(gpus=[busy_gpu()]))
    _, (g,) = probes(lib).sample()
    assert g.mig_enabled is False and g.mig_devices == ()


def test_unreadable_kernel_log_is_said_not_hidden(nvml_scenario, probes, tmp_path):
    lib = nvml_scenario(FakeScenario(gpus=[busy_gpu()]))
    _, (gpu,) = probes(lib, kmsg_path=str(tmp_path / "no-such-kmsg")).sample()
    assert "cannot read" in gpu.unavailable["xid_events"] and gpu.utilization_percent == 87.0


def test_init_delay_makes_every_nvml_init_slow(nvml_scenario):
    """The scenario's init_delay: nvmlInit takes that long (a host without persistence mode); the calls after
    it do not, and the probe's slowest call names it."""
    probe = NvmlProbe(nvml_scenario(FakeScenario(gpus=[busy_gpu()], init_delay_s=0.6)), deadline_s=5.0)
    try:
        started = time.monotonic()
        status, gpus = probe.sample()
        took = time.monotonic() - started
        assert status.ok and len(gpus) == 1 and took >= 0.6
        name, seconds = probe.slowest_call
        assert name.startswith("nvmlInit") and seconds >= 0.6
        started = time.monotonic()
        assert probe.sample()[0].ok
        assert time.monotonic() - started < 0.5  # initialised once: the next sample does not wait again
    finally:
        probe.close()
