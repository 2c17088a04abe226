"""scripts/gpu-smoke end to end against the simulated libnvidia-ml.so.1, with short durations: every step runs
(the nvidia-smi comparison says it is not found), and the report (markdown and JSON) holds what a lent GPU
machine's run would: each step's result, every NVML call mltop makes timed by group, the dashboard's frame."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakenvml import FakeFabric, FakeGpu, FakeProcess, FakeScenario, nvlinks

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu-smoke"


def test_gpu_smoke_runs_end_to_end_on_the_simulated_library(nvml_scenario, tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("a real nvidia-smi is here: this test is for the simulated library")
    lib = nvml_scenario(FakeScenario(gpus=[
        FakeGpu(uuid=f"GPU-{i:08d}-0000-4000-8000-000000000000", pci=f"00000000:{0x18 + i:02X}:00.0",
                nvlinks=nvlinks(18, down=(3,) if i == 1 else ()), fabric=FakeFabric(),
                processes=[FakeProcess(pid=os.getpid())] if i == 0 else [])
        for i in range(2)]))
    out = tmp_path / "out"
    env = {**os.environ, "MLTOP_KMSG": "", "OUT": str(out)}  # $OUT names the report folder, as on the device
    done = subprocess.run([sys.executable, str(SCRIPT), "--nvml-lib", lib, "--no-install", "--docker-host", "none",
                           "--serve-seconds", "3", "--dashboard-seconds", "20", "--sweeps", "3"],
                          capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    report = json.loads((out / "gpu-smoke.json").read_text())
    steps = {s["step"]: s for s in report["steps"]}
    assert done.returncode == 0, (done.stdout, [s for s in report["steps"] if s["status"] == "failed"])
    assert steps["nvidia-smi comparison"]["status"] == "skipped"
    assert steps["nvidia-smi comparison"]["detail"] == "nvidia-smi not found"
    assert steps["snapshot --json"]["gpus"] == 2
    assert "nvlink.down" in steps["doctor --json"]["findings"]  # GPU 1's link 3
    assert "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL" in steps["serve"]["metric_names"]
    groups = steps["nvml timings"]["groups"]
    assert {"init", "per-device reads", "processes", "NVLink", "fabric"} <= set(groups)
    # two reads of 2 GPUs x 18 links (state + 4 counters), and the 19th state call that ends each list
    assert groups["NVLink"]["calls"] == 2 * 2 * (18 * 5 + 1)
    assert "nvmlDeviceGetNvLinkErrorCounter" in steps["nvml timings"]["functions"]
    assert "NVL 17/18" in steps["dashboard"]["frame"].replace("NVL17/18", "NVL 17/18")
    md = (out / "gpu-smoke.md").read_text()
    assert "| nvidia-smi comparison | skipped | 0 | nvidia-smi not found |" in md and "## NVML calls" in md
