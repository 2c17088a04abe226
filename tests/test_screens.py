"""Every screen from built snapshots (tests/builders.py through a StaticSource): no engine, no GPU.

Pilot tests assert on what the widgets hold at 80x24 and with NO_COLOR; a few `snap_compare` tests compare
whole screens with the SVG baselines in tests/__snapshots__/test_screens/, so a visual regression fails.
After an intended change of look, regenerate the baselines and review the diff:

    .venv/bin/python -m pytest tests/test_screens.py --snapshot-update
"""

from __future__ import annotations

from builders import GIB, container, gpu, gpu_workload, process, snapshot
from conftest import until

from mltop.probes.source import StaticSource
from mltop.tui.app import MltopApp
from mltop.tui.widgets.containers_table import ContainersTable
from mltop.tui.screens.dashboard import DashboardScreen
from mltop.tui.screens.detail import ContainerDetailScreen
from mltop.tui.widgets.gpu_panel import GpuCard, GpuPanel
from mltop.tui.screens.logs import LogPane
from mltop.tui.screens.actions import ActionScreen
from mltop.tui.screens.diagnostics import DiagnosticsScreen

NO_ENGINE = "unix:///nonexistent/mltop-test.sock"  # actions and the doctor find no engine here, and say so
TAKEN_AT = 1_796_000_000.0  # fixed, so screens that show a time or an age show the same one every run
SMALL = (80, 24)


def scene():
    """Two snapshots a second apart: a GPU trainer, a CPU-only ETL job, and a job the OOM killer stopped."""
    trainer, gpu0 = gpu_workload("trainer", memory_bytes=6 * GIB, sm_percent=87.0)
    etl = container("etl", cpu_percent=140.0, memory_bytes=3 * GIB, processes=(process(5100, "python3 etl.py"),))
    oom = container("oom-job", status="exited", cpu_percent=None, memory_bytes=None, processes=(),
                    config_overrides={"oom_killed": True, "exit_code": 137, "memory_limit_bytes": 1 * GIB})
    gpu1 = gpu(1, utilization_percent=0.0, memory_used_bytes=0, processes=())
    return [snapshot([trainer, etl, oom], [gpu0, gpu1], taken_at=TAKEN_AT + i) for i in (0, 1)]


def make_app(snapshots=None, interval: float = 1.0) -> MltopApp:
    return MltopApp(source=StaticSource(snapshots or scene()), docker_host=NO_ENGINE, nvml=False, interval=interval)


def names_in_table(app: MltopApp) -> list[str]:
    table = app.screen.query_one(ContainersTable)
    by_id = {c.id: c.name for c in app.snapshot.containers}
    return [by_id[key] for key in table.keys_in_order]


async def test_dashboard_lists_built_containers_at_80x24():
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: app.sweeps >= 2, what="two sweeps")
        assert isinstance(app.screen, DashboardScreen)
        assert sorted(names_in_table(app)) == ["etl", "oom-job", "trainer"]
        assert app.screen.selected_container_id == app.snapshot.container(names_in_table(app)[0]).id


async def test_gpu_panel_shows_one_card_per_built_gpu():
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.sweeps >= 2, what="two sweeps")
        panel = app.screen.query_one(GpuPanel)
        assert panel.display
        cards = list(panel.query(GpuCard))
        assert len(cards) == 2


async def test_detail_screen_opens_on_the_selected_container():
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: app.sweeps >= 2, what="two sweeps")
        wanted = app.screen.selected_container_id
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), what="the detail screen")
        assert app.screen.container_id == wanted


async def test_diagnostics_screen_judges_the_built_snapshot():
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: app.sweeps >= 2, what="two sweeps")
        oom = app.snapshot.container("oom-job")
        await pilot.press(*["down"] * names_in_table(app).index("oom-job"))
        await until(pilot, lambda: app.screen.selected_container_id == oom.id, what="the cursor on oom-job")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DiagnosticsScreen) and app.screen.result is not None,
                    what="the doctor's result")
        codes = {(f.code, f.container) for f in app.screen.result.findings}
        assert ("oom.killed", "oom-job") in codes


async def test_action_screen_fails_closed_without_the_containers_secrets():
    """No engine answers, so the container's environment (its secrets) cannot be read: nothing is run or shown."""
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: app.sweeps >= 2, what="two sweeps")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, ActionScreen) and app.screen.result is not None,
                    timeout=20, what="the action's result")
        result = app.screen.result
        assert (result.action, result.status, result.output) == ("nvidia-smi", "unavailable", "")
        assert "not shown: secrets could not be read" in result.explanation
        assert app.action_log.latest() is result


async def test_no_color_keeps_meaning_in_glyphs(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app()
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: app.doctor_result is not None, timeout=20, what="the background doctor")
        assert app.no_color
        table = app.screen.query_one(ContainersTable)
        oom = app.snapshot.container("oom-job")
        assert app.finding_severities.get("oom-job") == "critical"
        await until(pilot, lambda: table.marker(oom.id) == "critical", what="the row marker")
        row = table.keys_in_order.index(oom.id) + 1  # line 0 is the header
        assert table.render_line(row).text.startswith("✖")  # a glyph, not only a colour


# --------------------------------------------------------------------------- screen snapshots


# A long interval: the two sweeps of the start happen and no third, so graphs hold the same points every run.
STILL = 600.0


def _settled(app: MltopApp):
    """Wait for both sweeps and the background doctor's row markers: what the screen shows from then on."""
    async def wait(pilot):
        await until(pilot, lambda: app.sweeps >= 2 and app.doctor_result is not None, timeout=20,
                    what="two sweeps and the doctor")
        await pilot.pause(0.2)
    return wait


def test_dashboard_looks_the_same(snap_compare):
    app = make_app(interval=STILL)
    assert snap_compare(app, terminal_size=SMALL, run_before=_settled(app))


def test_gpu_panel_and_wide_columns_look_the_same(snap_compare):
    app = make_app(interval=STILL)
    assert snap_compare(app, terminal_size=(120, 36), run_before=_settled(app))


def test_detail_screen_looks_the_same(snap_compare):
    app = make_app(interval=STILL)

    async def open_detail(pilot):
        await _settled(app)(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), what="the detail screen")
        await until(pilot, lambda: app.screen.query_one(LogPane).error is not None, what="the log pane's error")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SMALL, run_before=open_detail)
