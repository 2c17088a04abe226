"""perf.launch_bound, perf.tensor_cores_idle and perf.memory_bound on the real engine: containers' real host
PIDs run on simulated GPUs whose GPM figures come from the scenario; a healthy busy GPU stays silent."""

from __future__ import annotations

import time

import pytest

from builders import gpu, gpu_process, snapshot
from fakenvml import (
    GPM_DRAM, GPM_FP32, GPM_GRAPHICS, GPM_SM, GPM_TENSOR, FakeGpu, FakeProcess, FakeScenario,
)
from mltop.diagnostics.checks import CheckContext, HostFacts, Thresholds
from mltop.diagnostics.doctor import judge, run_doctor
from mltop.probes.model import GpmMetrics
from mltop.probes.sampler import ProbeOptions, Sampler

HEALTHY = {GPM_GRAPHICS: 98.0, GPM_SM: 86.0, GPM_TENSOR: 55.0, GPM_DRAM: 42.0, GPM_FP32: 10.0}
LAUNCH_BOUND = {GPM_GRAPHICS: 97.0, GPM_SM: 14.0, GPM_TENSOR: 9.0, GPM_DRAM: 6.0}
TENSOR_IDLE = {GPM_GRAPHICS: 96.0, GPM_SM: 85.0, GPM_TENSOR: 0.4, GPM_DRAM: 30.0, GPM_FP32: 78.0}
MEMORY_BOUND = {GPM_GRAPHICS: 99.0, GPM_SM: 33.0, GPM_TENSOR: 12.0, GPM_DRAM: 88.0}


def _findings(result, code):
    return [f for f in result.findings if f.code == code]


@pytest.fixture
def gpm_run(containers, nvml_scenario):
    names = {}
    pids = {}
    for role in ("launch", "fp32", "mem-a", "mem-b", "healthy"):
        c = containers.run(["sleep", "300"])
        names[role], pids[role] = c.name, c.attrs["State"]["Pid"] or c.reload() or c.attrs["State"]["Pid"]

    def on(role: str) -> FakeProcess:
        return FakeProcess(pids[role], used_memory=8 << 30, sm=60)

    lib = nvml_scenario(FakeScenario(gpus=[
        FakeGpu(uuid="GPU-launch", util=97, gpm=LAUNCH_BOUND, processes=[on("launch")]),
        FakeGpu(uuid="GPU-fp32", util=96, gpm=TENSOR_IDLE, processes=[on("fp32")]),
        FakeGpu(uuid="GPU-mem", util=99, gpm=MEMORY_BOUND, processes=[on("mem-a"), on("mem-b")]),
        FakeGpu(uuid="GPU-healthy", util=98, gpm=HEALTHY, processes=[on("healthy")]),
    ]))
    sampler = Sampler(ProbeOptions(nvml=True, nvml_lib=lib))
    try:
        previous = sampler.sweep()
        time.sleep(0.1)
        snap = sampler.sweep()
        result = run_doctor(snap, sampler.engine, containers=list(names.values()), previous=previous)
    finally:
        sampler.close()
    return names, result


def test_launch_bound_is_the_owning_containers_and_names_its_thresholds(gpm_run):
    names, result = gpm_run
    (f,) = _findings(result, "perf.launch_bound")
    assert f.container == names["launch"] and f.severity == "warning"
    assert f"used by {names['launch']} alone: these are its figures" in f.title
    text = "\n".join(f.evidence)
    assert "utilisation 97.0% >= threshold launch_bound_util_percent=90.0" in text
    assert "SM active 14.0%" in text and "< threshold launch_bound_sm_active_percent=30.0" in text
    assert "CUDA graphs" in f.fix and "reduce-overhead" in f.fix


def test_tensor_cores_idle_fires_on_fp32_work_and_suggests_tf32_or_autocast(gpm_run):
    names, result = gpm_run
    (f,) = _findings(result, "perf.tensor_cores_idle")
    assert f.container == names["fp32"]
    text = "\n".join(f.evidence)
    assert "tensor pipes active 0.4%" in text and "threshold tensor_idle_percent=5.0" in text
    assert "FP32 78.0%" in text
    assert "allow_tf32 = True" in f.fix and "torch.autocast" in f.fix


def test_memory_bound_on_a_shared_gpu_stays_the_gpus(gpm_run):
    names, result = gpm_run
    (f,) = _findings(result, "perf.memory_bound")
    assert f.container is None  # two containers share the GPU: the figures are the GPU's, not either's
    assert names["mem-a"] in f.title and names["mem-b"] in f.title and "whole GPU" in f.title
    text = "\n".join(f.evidence)
    assert "DRAM active 88.0%" in text and "threshold memory_bound_dram_active_percent=60.0" in text
    assert "threshold memory_bound_sm_active_percent=40.0" in text


def test_a_healthy_busy_gpu_is_silent(gpm_run):
    names, result = gpm_run
    assert not [f for f in result.findings if f.code.startswith("perf.") and (
        f.container == names["healthy"] or "GPU 3" in f.title)]


def _gpm(**values) -> GpmMetrics:
    fields = dict(interval_s=1.0, graphics_active_percent=None, sm_active_percent=None, sm_occupancy_percent=None,
                  tensor_active_percent=None, fp64_active_percent=None, fp32_active_percent=None,
                  fp16_active_percent=None, dram_active_percent=None, pcie_tx_bytes_per_s=None,
                  pcie_rx_bytes_per_s=None, nvlink_tx_bytes_per_s=None, nvlink_rx_bytes_per_s=None)
    return GpmMetrics(**{**fields, **values})


def test_no_tensor_finding_where_the_gpu_cannot_say_or_no_container_runs():
    # A GPU whose NVML gives no tensor metric, and one busy with host processes only: nothing to tell a container.
    snap = snapshot(gpus=[
        gpu(0, utilization_percent=96.0, gpm=_gpm(sm_active_percent=80.0), processes=(gpu_process(10),)),
        gpu(1, utilization_percent=96.0, gpm=_gpm(sm_active_percent=80.0, tensor_active_percent=0.0)),
    ])
    ctx = CheckContext(snapshot=snap, containers=(), logs={}, host=HostFacts(), thresholds=Thresholds())
    assert not [f for f in judge(ctx).findings if f.code.startswith("perf.")]
