"""The dashboard on a node with pods (a private containerd beside the Docker engine), under pilot at 80x24
and 160x50: pod names, NAMESPACE and POD columns when wide, grouping by pod with totals, the filter, the
header naming each source, and the detail screen's pod facts and CRI log."""

from __future__ import annotations

import pytest
from conftest import until
from cri_harness import run_scenario

from mltop.tui.app import MltopApp
from mltop.tui.screens.dashboard import DashboardScreen
from mltop.tui.screens.detail import ContainerDetailScreen
from mltop.tui.screens.logs import LogPane


@pytest.fixture(scope="module")
def pods(cri_node):
    made = run_scenario(cri_node.run_pod)
    yield made
    for pod in made.values():
        cri_node.remove_pod(pod)


@pytest.fixture
def app(cri_node, pods, monkeypatch):
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", cri_node.endpoint)
    return MltopApp(nvml=False, interval=0.5)


def _dash(app) -> DashboardScreen:
    assert isinstance(app.screen, DashboardScreen)
    return app.screen


def _pod_rows_ready(app, pods, cpu_of: str | None = None):
    table = _dash(app).table
    keys = set(table.keys_in_order)
    if not all(cid in keys for pod in pods.values() for cid in pod.containers.values()):
        return False
    if cpu_of is not None:
        return table.cell_text(cpu_of, "cpu").strip() not in ("", "–")
    return True


async def test_wide_dashboard_splits_pods_into_columns_and_groups_them(app, pods):
    trainer, api = pods["trainer"], pods["api"]
    server = api.containers["server"]
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: _pod_rows_ready(app, pods, cpu_of=server), timeout=30, what="the pods")
        table = _dash(app).table
        assert {"namespace", "pod"} <= set(table.visible_columns)
        main = trainer.containers["main"]
        await until(pilot, lambda: table.cell_text(main, "name").strip() == "main", what="split names")
        assert table.cell_text(main, "namespace").strip() == "ml-team"
        assert table.cell_text(main, "pod").strip() == "trainer"
        header = app.screen.query_one("#header").plain
        assert "containerd 1.6" in header and "(CRI)" in header and "docker" in header
        assert "engine down" not in str(table.border_title)

        await pilot.press("P")  # group by pod: a totals row above each pod's containers
        await until(pilot, lambda: f"pod/{trainer.uid}" in table.keys_in_order, what="pod rows")
        order = table.keys_in_order
        start = order.index(f"pod/{trainer.uid}")
        assert set(order[start + 1:start + 3]) == set(trainer.containers.values())
        assert table.cell_text(f"pod/{trainer.uid}", "name").strip() == "▾ trainer (2)"
        assert table.cell_text(f"pod/{trainer.uid}", "status").strip() == "pod Burstable"
        assert table.cell_text(f"pod/{pods['sizer'].uid}", "status").strip() == "pod Guaranteed"
        api_cpu = table.cell_text(f"pod/{api.uid}", "cpu").strip()
        assert api_cpu and float(api_cpu) > 5  # the CPU burner's pod total
        assert "by pod" in str(table.border_title)

        await pilot.press("slash", *"serving", "enter")  # the filter matches the namespace
        await until(pilot, lambda: server in table.keys_in_order and main not in table.keys_in_order,
                    what="the filter")
        assert [k for k in table.keys_in_order if not k.startswith("pod/")] == [server]


async def test_narrow_dashboard_names_pod_containers_in_full(app, pods):
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: _pod_rows_ready(app, pods), timeout=30, what="the pods")
        table = _dash(app).table
        assert "namespace" not in table.visible_columns
        main = pods["trainer"].containers["main"]
        assert table.cell_text(main, "name").strip() == "ml-team/trainer/main"
        # (the 80-column header gives sources their short form; nothing wraps into an alarm)
        assert "DOWN" not in app.screen.query_one("#header").plain
        containers = len(table.keys_in_order)
        await pilot.press("P")  # grouped, the pod's row names the pod: each container row its own name
        await until(pilot, lambda: f"pod/{pods['trainer'].uid}" in table.keys_in_order, what="pod rows")
        await until(pilot, lambda: table.cell_text(main, "name").strip() == "main", what="the short name")
        assert table.cell_text(f"pod/{pods['trainer'].uid}", "name").strip() == "▾ trainer (2) · ml-team"
        # the title counts containers, not the pods' totals rows: "Containers 5 · 3 pods", never "7 of 5"
        title = str(table.border_title)
        assert title.startswith(f"Containers {containers}") and f" of {containers}" not in title, title
        assert f"· {len(table.keys_in_order) - containers} pods" in title, title


async def test_detail_shows_the_pod_and_its_cri_log(app, pods):
    trainer = pods["trainer"]
    main = trainer.containers["main"]
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: _pod_rows_ready(app, pods), timeout=30, what="the pods")
        await until(pilot, lambda: _dash(app).table.move_to_key(main), what="the trainer's row")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), what="the detail screen")
        config = app.screen.query_one("#config").render()
        text = str(config)
        for expected in ("Pod labels", "app=trainer", "Pod annotations", "team=vision", f"uid       {trainer.uid}",
                         "qos       Burstable"):
            assert expected in text, expected
        pane = app.screen.query_one(LogPane)
        await until(pilot, lambda: "epoch 1 loss [bold]0.5" in pane.shown_lines, what="the CRI log line")
