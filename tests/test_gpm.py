"""GPU Performance Metrics through the real pynvml bindings on the simulated libnvidia-ml.so.1."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import time

import pytest

from fakenvml import (
    GPM_DRAM, GPM_FP16, GPM_FP32, GPM_FP64, GPM_GRAPHICS, GPM_NVLINK_RX, GPM_NVLINK_TX, GPM_OCCUPANCY,
    GPM_PCIE_RX, GPM_PCIE_TX, GPM_SM, GPM_TENSOR, NO_PERMISSION, FakeGpu, FakeMig, FakeScenario, fail,
)
from mltop.probes.nvml import gpm as gpm_module
from mltop.probes.nvml import NvmlProbe, NvmlState

MIB = 1 << 20

# An H100 running an FP32 matmul without TF32: the SMs busy, the tensor pipes idle.
H100_FP32 = {GPM_GRAPHICS: 97.0, GPM_SM: 88.5, GPM_OCCUPANCY: 41.25, GPM_TENSOR: 0.5, GPM_DRAM: 35.0,
             GPM_FP64: 0.0, GPM_FP32: 72.0, GPM_FP16: 0.25, GPM_PCIE_TX: 120.0, GPM_PCIE_RX: 2400.0,
             GPM_NVLINK_RX: 15000.0, GPM_NVLINK_TX: 14000.0}


@pytest.fixture
def probes():
    made: list[NvmlProbe] = []

    def make(library_path: str, deadline_s: float = 2.0) -> NvmlProbe:
        probe = NvmlProbe(library_path, deadline_s=deadline_s, kmsg_path="")
        made.append(probe)
        return probe

    yield make
    for probe in made:
        probe.close()


def live_samples(lib: str) -> int:
    """GPM samples allocated and not freed in the simulated library (the same loaded copy pynvml uses)."""
    return ctypes.CDLL(lib).fakenvmlGpmLiveSamples()


def two_sweeps(probe: NvmlProbe):
    status, first = probe.sample()
    assert status.status == NvmlState.OK, status.error
    time.sleep(0.05)
    status, second = probe.sample()
    assert status.status == NvmlState.OK, status.error
    return first, second


def test_gpm_figures_come_from_two_samples_a_sweep_apart_and_an_older_gpu_says_why_not(nvml_scenario, probes):
    lib = nvml_scenario(FakeScenario(gpus=[
        FakeGpu(uuid="GPU-h100", gpm=H100_FP32),
        FakeGpu(uuid="GPU-a100", name="NVIDIA A100-SXM4-80GB"),  # Ampere: no GPM
    ]))
    first, second = two_sweeps(probes(lib))

    # One sample is no interval: nothing made up, and the reason says when figures come.
    assert first[0].gpm is None and first[0].unavailable["gpm"] == gpm_module.FIRST_SAMPLE_REASON
    g = second[0].gpm
    assert g is not None and "gpm" not in second[0].unavailable
    assert 0.04 < g.interval_s < 2.0
    assert (g.graphics_active_percent, g.sm_active_percent, g.sm_occupancy_percent) == (97.0, 88.5, 41.25)
    assert (g.tensor_active_percent, g.fp64_active_percent, g.fp32_active_percent, g.fp16_active_percent) == \
        (0.5, 0.0, 72.0, 0.25)
    assert g.dram_active_percent == 35.0
    # NVML gives MiB/s; the sample holds bytes/s.
    assert (g.pcie_tx_bytes_per_s, g.pcie_rx_bytes_per_s) == (120 * MIB, 2400 * MIB)
    assert (g.nvlink_rx_bytes_per_s, g.nvlink_tx_bytes_per_s) == (15000 * MIB, 14000 * MIB)

    a100 = second[1]
    assert a100.gpm is None and "Hopper" in a100.unavailable["gpm"]
    assert a100.utilization_percent is not None  # the rest of the GPU is unaffected


def test_a_metric_this_gpu_lacks_is_none_and_the_rest_still_come(nvml_scenario, probes):
    lib = nvml_scenario(gpus=[FakeGpu(gpm={GPM_SM: 12.0, GPM_TENSOR: 3.0})])
    _, second = two_sweeps(probes(lib))
    g = second[0].gpm
    assert (g.sm_active_percent, g.tensor_active_percent) == (12.0, 3.0)
    assert g.fp16_active_percent is None and g.nvlink_tx_bytes_per_s is None


def test_metrics_are_between_the_last_two_samples_not_since_the_first(nvml_scenario, probes):
    # SM active is 10 % for the first 2 s, then 90 %: a reader that kept its first sample would average them.
    lib = nvml_scenario(gpus=[FakeGpu(gpm={GPM_SM: [10.0] * 2 + [90.0] * 30}, step_ms=1000)])
    probe = probes(lib)
    probe.sample()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.2)
        _, gpus = probe.sample()
        if gpus[0].gpm is not None and gpus[0].gpm.sm_active_percent == pytest.approx(90.0):
            break
    assert gpus[0].gpm.sm_active_percent == pytest.approx(90.0)


def test_old_driver_and_no_permission_are_named(nvml_scenario, probes):
    lib = nvml_scenario(gpus=[FakeGpu(gpm=H100_FP32)], old_driver=True)
    _, second = two_sweeps(probes(lib))
    assert second[0].gpm is None
    assert "nvmlGpmQueryDeviceSupport not found" in second[0].unavailable["gpm"]
    assert "update the NVIDIA driver" in second[0].unavailable["gpm"]


def test_no_permission_says_run_as_root(nvml_scenario, probes):
    lib = nvml_scenario(gpus=[FakeGpu(gpm=H100_FP32)], directives=[fail("nvmlGpmSampleGet", NO_PERMISSION)])
    _, second = two_sweeps(probes(lib))
    assert second[0].gpm is None and "root" in second[0].unavailable["gpm"]
    assert second[0].utilization_percent is not None


def test_each_mig_instance_has_its_own_figures(nvml_scenario, probes):
    health = dict(FakeGpu().health, mig_mode=1)
    lib = nvml_scenario(FakeScenario(
        gpus=[FakeGpu(health=health, gpm={GPM_SM: 50.0}, gpm_mig={1: {GPM_SM: 70.0, GPM_TENSOR: 60.0},
                                                                     2: {GPM_SM: 30.0}})],
        migs=[FakeMig(gpu=0, index=0, uuid="MIG-a", gi=1), FakeMig(gpu=0, index=1, uuid="MIG-b", gi=2, profile="3g.40gb")],
    ))
    _, second = two_sweeps(probes(lib))
    g = second[0]
    assert g.gpm.sm_active_percent == 50.0
    by_uuid = {m.uuid: m for m in g.mig_devices}
    assert by_uuid["MIG-a"].gpm.sm_active_percent == 70.0 and by_uuid["MIG-a"].gpm.tensor_active_percent == 60.0
    assert by_uuid["MIG-b"].gpm.sm_active_percent == 30.0 and by_uuid["MIG-b"].gpm.tensor_active_percent is None
    assert (by_uuid["MIG-a"].profile, by_uuid["MIG-b"].profile) == ("1g.10gb", "3g.40gb")  # from their names


def test_two_samples_per_gpu_are_kept_and_all_freed_at_close(nvml_scenario, probes):
    lib = nvml_scenario(gpus=[FakeGpu(uuid="GPU-0", gpm=H100_FP32), FakeGpu(uuid="GPU-1", gpm=H100_FP32)])
    probe = probes(lib)
    for _ in range(5):
        probe.sample()
    assert live_samples(lib) == 4  # the newest and a spare per GPU: no allocation per sweep, no leak
    probe.close()
    assert live_samples(lib) == 0


def test_snapshot_json_has_gpm_per_gpu_and_null_with_a_reason(nvml_scenario):
    lib = nvml_scenario(gpus=[FakeGpu(uuid="GPU-h100", gpm=H100_FP32), FakeGpu(uuid="GPU-a100")])
    result = subprocess.run(
        [sys.executable, "-m", "mltop.tui.cli", "snapshot", "--json", "--interval", "0.25",
         "--nvml-lib", lib],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    gpus = json.loads(result.stdout)["gpus"]
    assert gpus[0]["gpm"]["sm_active_percent"] == 88.5 and gpus[0]["gpm"]["tensor_active_percent"] == 0.5
    assert gpus[1]["gpm"] is None and "Hopper" in gpus[1]["unavailable"]["gpm"]
