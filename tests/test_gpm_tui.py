"""The dashboard's GPM figures from built snapshots: SM active and tensor active beside utilisation, and their
graphs in the GPUs full screen (`g`); a GPU without GPM shows utilisation alone."""

from __future__ import annotations

from builders import gpu_workload, replace
from test_tui import until
from test_tui_layout import _settle, _snapshots

from mltop.probes.model import GpmMetrics
from mltop.probes.source import StaticSource
from mltop.tui.app import MltopApp
from mltop.tui.widgets.gauges import GraphCaption, HistoryGraph
from mltop.tui.widgets.gpu_panel import GpuCard, GpuPanel


def gpm(sm: float, tensor: float) -> GpmMetrics:
    return GpmMetrics(interval_s=1.0, graphics_active_percent=97.0, sm_active_percent=sm, sm_occupancy_percent=30.0,
                      tensor_active_percent=tensor, fp64_active_percent=0.0, fp32_active_percent=70.0,
                      fp16_active_percent=0.0, dram_active_percent=20.0, pcie_tx_bytes_per_s=1e6,
                      pcie_rx_bytes_per_s=1e6, nvlink_tx_bytes_per_s=None, nvlink_rx_bytes_per_s=None)


async def test_sm_and_tensor_active_beside_utilisation_and_in_the_full_screen_graphs():
    (c0, g0), (c1, g1) = gpu_workload("train", 0), gpu_workload("old", 1, pid=5151)
    g0 = replace(g0, utilization_percent=97.0, gpm=gpm(14.0, 0.4))
    app = MltopApp(source=StaticSource(_snapshots([c0, c1], [g0, g1])), interval=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        await _settle(pilot, app)
        panel = app.screen.query_one(GpuPanel)
        await until(pilot, lambda: len(panel.query(GpuCard)) == 2, what="two GPU cards")
        hopper, older = list(panel.query(GpuCard))
        await until(pilot, lambda: hopper.query_one(".gpu-util").value_text == "97.0% SM 14% TC 0%",
                    what="SM and tensor active beside utilisation")
        assert "SM" not in older.query_one(".gpu-util").value_text  # no GPM: utilisation alone, nothing made up
        assert not hopper.query_one(".gpu-sm-history").display  # the dashboard keeps two lines a GPU

        await pilot.press("g")
        await pilot.pause(0.3)
        captions = [str(c.render()) for c in hopper.query(GraphCaption)]
        assert [c.startswith(label) for c, label in zip(captions, ("util", "mem used", "SM active", "tensor active"))] \
            == [True] * 4
        # the same scale and time span as the utilisation graph above them
        assert captions[2].split()[-4:] == captions[3].split()[-4:] == captions[0].split()[-4:]
        assert "0–100%" in captions[2]
        sm_graph = hopper.query_one(".gpu-sm-history").query_one(HistoryGraph)
        assert sm_graph.size.height >= 1 and any(v == 14.0 for v in sm_graph.samples if v is not None)
        assert len(list(older.query(GraphCaption))) == 2  # no GPM: no GPM graphs
        # Let the background doctor's run land before the app closes (its result is shown on the screen).
        await app.workers.wait_for_complete()
        await pilot.pause()
