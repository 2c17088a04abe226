"""GPU health and "why is my training slow" on screen, from built snapshots: no engine, no GPU."""

from __future__ import annotations

import time

from builders import GIB, MIB, container, gpu, gpu_process, gpu_use, replace, snapshot
from mltop.probes.model import XidEvent
from mltop.probes.source import StaticSource
from mltop.tui.app import MltopApp
from mltop.tui.widgets.containers_table import container_cells
from mltop.tui.widgets.gpu_panel import GpuCard, gpu_title, gpu_users, health_problems


def sick_gpu(c=None):
    procs = (gpu_process(4242, 8 * GIB, 15.0, container=c),) if c is not None else ()
    return gpu(0, utilization_percent=85.0, memory_used_bytes=8 * GIB + 512 * MIB, processes=procs,
               xid_events=(XidEvent(79, time.time() - 60, "NVML events"),), ecc_volatile_uncorrected=3,
               remapped_rows_pending=True, pcie_generation=3, pcie_generation_max=5, pcie_width=16,
               pcie_width_max=16)


def test_health_problems_in_words_and_marks():
    g = sick_gpu()
    assert health_problems(g) == ["Xid 79", "ECC 3 uncorrectable", "reset pending", "PCIe Gen3 x16 of Gen5 x16"]
    assert gpu_title(g).plain.endswith("✖")  # survives the one-line compact card
    assert gpu_users(g).plain.startswith("✖ Xid 79 ✖ ECC 3 uncorrectable")
    healthy = gpu(0, pcie_generation=1, pcie_generation_max=5, utilization_percent=0.0,
                  xid_events=(XidEvent(13, time.time() - 7200, "/dev/kmsg"),))  # idle downshift, an old Xid
    assert health_problems(healthy) == [] and "✖" not in gpu_title(healthy).plain


def test_bound_column_says_what_holds_a_job_back():
    starved = container("starved", gpus=(gpu_use(0, 8 * GIB, 15.0),), cpu_limit_cores=2.0, cpu_limit_percent=99.0)
    busy = container("busy", gpus=(gpu_use(1, 8 * GIB, 92.0),))
    assert container_cells(starved)["work"].plain == "input-cpu"
    assert container_cells(busy)["work"].plain == "gpu"
    assert container_cells(container("cpu-only"))["work"].plain == ""


async def test_dashboard_shows_health_and_bound(monkeypatch):
    monkeypatch.setenv("MLTOP_NO_EXEC", "1")  # built containers: nothing to exec into
    starved = container("starved", gpus=(gpu_use(0, 8 * GIB, 15.0),), cpu_limit_cores=2.0, cpu_limit_percent=99.0)
    snap = snapshot([starved], [sick_gpu(starved)])
    app = MltopApp(source=StaticSource([snap, replace(snap, taken_at=snap.taken_at + 1)]), interval=0.5)
    async with app.run_test(size=(160, 40)) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            cards = list(app.screen.query(GpuCard))
            if cards and "Xid 79" in str(cards[0].query_one(".gpu-users").render()):
                break
        users = str(app.screen.query(GpuCard).first().query_one(".gpu-users").render())
        assert "✖ Xid 79" in users and "ECC 3 uncorrectable" in users and "starved" in users
        table = app.screen.table
        assert "work" in table.visible_columns


def test_bound_column_agrees_with_the_doctor_over_two_sweeps():
    """CFS throttling is seen only across two sweeps: the column judges with the previous sweep, as
    perf.input_bound does, so the table never says "idle"/"" where the doctor says input-cpu."""
    from mltop.diagnostics.workload import INPUT_CPU, classify

    before = container("throttled", gpus=(gpu_use(0, 8 * GIB, 15.0),), cpu_throttled_periods=100,
                       config_overrides=dict(cpu_period=100_000))
    now = replace(before, cpu_throttled_periods=100 + 8)  # 8 of 10 periods in a 1 s sweep
    prev, snap = snapshot([before], [gpu(0)], interval_s=1.0), snapshot([now], [gpu(0)], interval_s=1.0)
    assert classify(now, snap, previous=prev).kind == INPUT_CPU
    assert container_cells(now, snap, prev)["work"].plain == INPUT_CPU
