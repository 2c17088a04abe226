"""The dashboard against the real engine: pilot-driven, asserting what a user would see."""

from __future__ import annotations

import os
import select
import socket
import socketserver
import threading
import types
import uuid

import pytest

from conftest import ContainerFactory, until, wait_for
from fakenvml import FakeGpu, FakeProcess, FakeScenario

from mltop.tui import app as app_module
from mltop.tui.app import ContainerScreenSpec, MltopApp
from mltop.tui.screens.dashboard import DashboardScreen
from mltop.tui.screens.detail import ContainerDetailScreen
from mltop.tui.widgets.gpu_panel import GpuCard, GpuPanel
from mltop.tui.screens.help import HelpScreen
from mltop.tui.screens.logs import LogPane, LogsScreen

PREFIX = f"mltop-tui-{uuid.uuid4().hex[:6]}"
HOSTILE_LABEL = "[bold red]x[/]"
# A log line with markup and terminal escapes: clear screen, set the window title, a colour.
HOSTILE_LOG = r"[/bold] boom \033[2J\033]0;pwned\007\033[31m tail"
SIZE = (140, 40)


# --------------------------------------------------------------------------- containers


@pytest.fixture(scope="module")
def demo(docker_client, test_images):
    """Three containers for the whole module: a busy one (30 % of a CPU), a quiet one with hostile text
    in its label, environment and log, and one the OOM killer stopped."""
    factory = ContainerFactory(docker_client, test_images)
    busy = factory.run("sh -c 'while :; do :; done'", name=f"{PREFIX}-busy", nano_cpus=300_000_000)
    quiet = factory.run(
        ["sh", "-c", f"i=0; while :; do i=$((i+1)); printf '{HOSTILE_LOG}\\n'; printf 'needle %s\\n' $i; sleep 0.3; done"],
        name=f"{PREFIX}-quiet",
        labels={"hostile": HOSTILE_LABEL},
        environment={"MSG": "[bold]hi[/]", "API_TOKEN": "hunter2hunter2"},
    )
    oom = factory.run(
        ["python3", "-c", "b = bytearray(512 * 1024 * 1024)"],
        image="python", name=f"{PREFIX}-oom", mem_limit="48m", memswap_limit="48m", wait_running=False,
    )
    wait_for(lambda: (oom.reload() or oom.status) == "exited", what="the OOM container to exit")
    for c in (busy, quiet):
        c.reload()
    yield types.SimpleNamespace(busy=busy, quiet=quiet, oom=oom, factory=factory)
    factory.cleanup()


def make_app(**kwargs) -> MltopApp:
    kwargs.setdefault("nvml", False)
    kwargs.setdefault("interval", 0.5)
    return MltopApp(**kwargs)


def dashboard(app: MltopApp) -> DashboardScreen:
    screen = app.screen
    assert isinstance(screen, DashboardScreen), f"expected the dashboard, got {type(screen).__name__}"
    return screen


def row_of(app: MltopApp, container) -> dict[str, str]:
    table = dashboard(app).table
    return {col: table.cell_text(container.id, col) for col in table.visible_columns}


def demo_order(app: MltopApp, demo) -> list[str]:
    names = {demo.busy.id: "busy", demo.quiet.id: "quiet", demo.oom.id: "oom"}
    return [names[k] for k in dashboard(app).table.keys_in_order if k in names]


async def filter_to(pilot, text: str) -> None:
    await pilot.press("slash")
    for ch in text:
        await pilot.press(ch if ch != "-" else "minus")
    await pilot.press("enter")


def rendered_lines(log_pane: LogPane) -> list[str]:
    from textual.widgets import RichLog

    rich_log = log_pane.query_one(RichLog)
    return ["".join(segment.text for segment in strip) for strip in rich_log.lines]


# --------------------------------------------------------------------------- the table


async def test_table_lists_containers_with_live_values(demo):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: float(row_of(app, demo.busy)["cpu"]) > 10, what="the busy container's CPU")
        busy, quiet, oom = row_of(app, demo.busy), row_of(app, demo.quiet), row_of(app, demo.oom)
        assert busy["name"] == f"{PREFIX}-busy" and busy["status"] == "running"
        assert busy["image"] == "mltop-test/busybox:1"
        assert 10 < float(busy["cpu"]) < 60  # limited to 0.3 CPUs
        assert float(quiet["cpu"]) < float(busy["cpu"])
        assert quiet["mem"][-1] in "BKMG" and quiet["pids"].isdigit()
        # stopped: dimmed, with the exit code and why
        assert oom["status"] == "exit 137 OOM" and oom["cpu"] == ""
        cell = dashboard(app).table.cell(demo.oom.id, "name")
        assert "dim" in str(cell.style)
        # every row of the engine is there
        ids = set(dashboard(app).table.keys_in_order)
        assert {demo.busy.id, demo.quiet.id, demo.oom.id} <= ids


async def test_sort_cycles_and_reverses_keeping_stopped_last(demo):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: row_of(app, demo.busy)["cpu"] not in ("", "–"), what="CPU values")
        await filter_to(pilot, PREFIX)
        assert demo_order(app, demo) == ["busy", "oom", "quiet"]  # by name
        await pilot.press("s", "s")  # name -> status -> CPU%
        screen = dashboard(app)
        assert screen.sort_column == "cpu"
        await pilot.pause()
        assert demo_order(app, demo) == ["busy", "quiet", "oom"]  # busiest first, no value last
        assert "sort CPU% ↓" in str(screen.table.border_title)
        await pilot.press("S")
        await pilot.pause()
        assert demo_order(app, demo) == ["quiet", "busy", "oom"]
        assert "sort CPU% ↑" in str(screen.table.border_title)


async def test_filter_applies_on_enter_and_escape_clears(demo):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: demo.quiet.id in dashboard(app).table.keys_in_order, what="the rows")
        await filter_to(pilot, f"{PREFIX}-qu")
        screen = dashboard(app)
        assert screen.table.keys_in_order == [demo.quiet.id]
        assert app.focused is screen.table  # enter gave focus back to the table
        assert screen.selected_container_id == demo.quiet.id
        await until(pilot, lambda: screen.table.keys_in_order == [demo.quiet.id] and app.sweeps > 3,
                    what="the filter to hold across refreshes")
        await pilot.press("escape")
        await pilot.pause()
        assert screen.needle == ""
        assert {demo.busy.id, demo.quiet.id, demo.oom.id} <= set(screen.table.keys_in_order)


async def test_cursor_stays_on_its_container_as_rows_come_go_and_sort(demo):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: demo.quiet.id in dashboard(app).table.keys_in_order, what="the rows")
        await filter_to(pilot, PREFIX)  # other tests' containers may come and go meanwhile
        screen = dashboard(app)
        table = screen.table
        assert table.move_to_key(demo.quiet.id)
        start_row = table.cursor_row
        # A container whose name sorts first appears while the app runs: the cursor follows quiet down.
        newcomer = demo.factory.run("sleep 600", name=f"{PREFIX}-aaa-new")
        await until(pilot, lambda: newcomer.id in table.keys_in_order, what="the new container to appear")
        assert table.cursor_key == demo.quiet.id and table.cursor_row == start_row + 1
        sweeps = app.sweeps
        await until(pilot, lambda: app.sweeps >= sweeps + 2, what="two more refreshes")
        assert table.cursor_key == demo.quiet.id
        await pilot.press("s", "s")  # sort by CPU: rows move, the cursor moves with quiet
        await pilot.pause()
        assert table.cursor_key == demo.quiet.id
        assert app.selected_container_id == demo.quiet.id
        # ...and disappears when removed.
        newcomer.remove(force=True)
        await until(pilot, lambda: newcomer.id not in table.keys_in_order, what="the removed container to go")
        assert table.cursor_key == demo.quiet.id


# --------------------------------------------------------------------------- detail and logs


async def test_detail_shows_graphs_config_and_log_literally(demo):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: dashboard(app).table.move_to_key(demo.busy.id), what="the busy row")
        await until(pilot, lambda: len(app.history.container(demo.busy.id, "cpu_percent")) >= 3,
                    what="some history")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, ContainerDetailScreen) and screen.container_id == demo.busy.id
        from mltop.tui.screens.detail import GraphBox
        from mltop.tui.widgets.gauges import HistoryGraph

        cpu_graph = [b for b in screen.query(GraphBox) if b.metric == "cpu"][0].query_one(HistoryGraph)
        assert len(cpu_graph.samples) >= 3 and max(s or 0 for s in cpu_graph.samples) > 10
        config = str(screen.query_one("#config").render())
        assert "cpu       0.3 CPUs" in config
        await pilot.press("escape")

        # the quiet container: hostile label, environment and log lines show as text
        dashboard(app).table.move_to_key(demo.quiet.id)
        await pilot.press("enter")
        screen = app.screen
        config = str(screen.query_one("#config").render())
        assert f"hostile={HOSTILE_LABEL}" in config
        assert "MSG=[bold]hi[/]" in config
        assert "hunter2" not in config and "API_TOKEN=[REDACTED]" in config  # redacted by the probe
        pane = screen.query_one(LogPane)
        await until(pilot, lambda: any("boom" in line for line in rendered_lines(pane)), what="the log tail")
        line = next(line for line in rendered_lines(pane) if "boom" in line)
        assert line.startswith("[/bold] boom ") and line.rstrip().endswith(" tail")
        assert "\x1b" not in line and "\x07" not in line and "pwned" not in line
        assert app.title == "mltop"  # the OSC title sequence never reached the terminal
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_logs_follow_and_search(demo):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: dashboard(app).table.move_to_key(demo.quiet.id), what="the quiet row")
        await pilot.press("l")
        screen = app.screen
        assert isinstance(screen, LogsScreen)
        pane = screen.query_one(LogPane)
        await until(pilot, lambda: len(pane.lines) > 0, what="the tail")
        count = len(pane.lines)
        await until(pilot, lambda: len(pane.lines) >= count + 4, what="followed lines")
        counted = [line.text for line in pane.lines if line.text.startswith("needle")]
        assert len(counted) == len(set(counted)), "a followed line was shown twice"
        numbers = [int(text.split()[1]) for text in counted]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "a followed line was lost"
        await pilot.press("slash", "n", "e", "e", "d", "l", "e", "enter")
        assert pane.needle == "needle"
        shown = rendered_lines(pane)
        assert shown and all("needle" in line for line in shown)
        assert "matching" in str(screen.query_one(".log-status").render())
        await pilot.press("escape")  # clears the search first
        assert pane.needle == "" and any("boom" in line for line in rendered_lines(pane))
        await pilot.press("escape")  # then goes back
        assert isinstance(app.screen, DashboardScreen)


# --------------------------------------------------------------------------- sources unavailable


async def test_engine_unreachable_shows_why():
    app = make_app(docker_host="unix:///nonexistent.sock")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="the first sweep")
        screen = dashboard(app)
        header = screen.query_one("#header").plain
        assert "engine unix:///nonexistent.sock DOWN" in header
        assert "⚠ engine: No Docker engine at unix:///nonexistent.sock" in header
        assert screen.table.row_count == 0
        assert "engine down" in str(screen.table.border_title)
        await pilot.press("q")
    assert app.return_code in (0, None)


async def test_nvml_missing_shows_why(demo):
    app = make_app(nvml=True, nvml_lib="/nonexistent/libnvidia-ml.so.1")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="the first sweep")
        header = dashboard(app).query_one("#header").plain
        assert "GPU unavailable" in header
        nvml = app.snapshot.host.nvml
        assert nvml.status == "library_not_found" and "/nonexistent/libnvidia-ml.so.1" in nvml.error
        assert f"⚠ GPU: {nvml.error}" in header  # the probe's words, in full
        assert not app.screen.query_one(GpuPanel).display
        assert demo.busy.id in dashboard(app).table.keys_in_order  # containers still shown


class _EngineProxy:
    """A unix socket in front of the real engine that can be switched off and on, to take the engine
    away from the app and give it back without touching the daemon other tests use."""

    def __init__(self, path: str, target: str = "/var/run/docker.sock"):
        self.path, self.target = path, target
        self.server = None
        self.connections: list[socket.socket] = []

    def start(self) -> None:
        proxy = self

        class Pump(socketserver.BaseRequestHandler):
            def handle(self):
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(proxy.target)
                proxy.connections += [self.request, upstream]
                peers = {self.request: upstream, upstream: self.request}
                try:
                    while True:
                        readable, _, _ = select.select(list(peers), [], [], 0.5)
                        for s in readable:
                            data = s.recv(65536)
                            if not data:
                                return
                            peers[s].sendall(data)
                except OSError:
                    return
                finally:
                    upstream.close()

        socketserver.ThreadingUnixStreamServer.daemon_threads = True
        self.server = socketserver.ThreadingUnixStreamServer(self.path, Pump)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        for s in self.connections:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.connections.clear()
        if os.path.exists(self.path):
            os.unlink(self.path)


async def test_engine_down_then_back(demo, tmp_path):
    proxy = _EngineProxy(str(tmp_path / "docker.sock"))
    app = make_app(docker_host=f"unix://{proxy.path}")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot is not None, what="the first sweep")
            header = dashboard(app).query_one("#header")
            assert "⚠ engine: No Docker engine at" in header.plain
            proxy.start()
            await until(pilot, lambda: demo.busy.id in dashboard(app).table.keys_in_order,
                        what="the containers once the engine is back")
            assert "⚠ engine" not in header.plain and "DOWN" not in header.plain
            proxy.stop()
            await until(pilot, lambda: "⚠ engine" in header.plain, what="the engine to be reported down")
            assert dashboard(app).table.row_count == 0
    finally:
        proxy.stop()


# --------------------------------------------------------------------------- the simulated GPU


async def test_gpu_panel_and_columns_with_simulated_gpu(demo, nvml_scenario):
    busy_pid = demo.busy.attrs["State"]["Pid"]
    lib = nvml_scenario(FakeScenario(gpus=[
        FakeGpu(uuid="GPU-aaaa", util=78, mem_used=60 << 30, temp=71, power_mw=310_000,
                processes=[FakeProcess(busy_pid, used_memory=40 << 30, sm=61)]),
        FakeGpu(uuid="GPU-bbbb", util=3, mem_used=1 << 30, temp=90, clocks_event=0x40),
    ]))
    app = make_app(nvml=True, nvml_lib=lib)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: row_of(app, demo.busy)["gpu"] == "0", what="the busy container on GPU 0")
        busy = row_of(app, demo.busy)
        assert busy["gpu_mem"] == "40G" and busy["sm"] == "61.0"
        header = dashboard(app).query_one("#header").plain
        assert "driver 550.54.15" in header and "CUDA 12.4" in header
        panel = app.screen.query_one(GpuPanel)
        assert panel.display
        cards = list(panel.query(GpuCard))
        assert [c.uuid for c in cards] == ["GPU-aaaa", "GPU-bbbb"]
        await until(pilot, lambda: f"{PREFIX}-busy 40G" in str(cards[0].query_one(".gpu-users").render()),
                    what="the container named on its GPU")
        assert "HW thermal slowdown" in str(cards[1].query_one(".gpu-users").render())
        assert "78.0%" in cards[0].query_one(".gpu-util").value_text
        # the processes pane of the busy container carries the GPU process
        table = dashboard(app).table
        table.move_to_key(demo.busy.id)
        await pilot.pause()
        processes = app.screen.query_one("#processes")
        await until(pilot, lambda: processes.cell_text(str(busy_pid), "gpu_mem") == "40G",
                    what="the GPU process in the processes pane")


async def test_eight_gpus_at_80x24_take_one_line_each(nvml_scenario):
    lib = nvml_scenario(FakeScenario(gpus=[
        FakeGpu(uuid=f"GPU-{i}", util=10 * i, clocks_event=0x40 if i == 7 else 0x1) for i in range(8)]))
    app = make_app(nvml=True, nvml_lib=lib)
    async with app.run_test(size=(80, 24)) as pilot:
        panel = app.screen.query_one(GpuPanel)
        await until(pilot, lambda: len(panel.query(GpuCard)) == 8, what="eight GPU cards")
        await pilot.pause()
        assert panel.has_class("-compact")
        assert panel.size.height == 8  # 8 one-line cards, every GPU in sight (the border is outside)
        cards = list(panel.query(GpuCard))
        assert all(card.size.height == 1 for card in cards)
        title = cards[7].query_one(".gpu-title")
        await until(pilot, lambda: str(title.render()).endswith("⚠"), what="throttling marked on one line")
        await pilot.press("g")  # full screen: two lines a GPU again
        await pilot.pause()
        assert not panel.has_class("-compact")


# --------------------------------------------------------------------------- keys and small terminals


async def test_80x24_keeps_the_columns_that_matter(demo):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: demo.busy.id in dashboard(app).table.keys_in_order, what="the rows")
        table = dashboard(app).table
        assert table.visible_columns[:4] == ["name", "status", "cpu", "mem"]
        # no GPU on this host and no container asking for one: the GPU columns give their width back
        assert not {"gpu", "gpu_mem", "sm"} & set(table.visible_columns)
        assert "net" not in table.visible_columns and table.column_widths["name"] >= 18
        processes = dashboard(app).query_one("#processes")
        await until(pilot, lambda: processes.visible_columns, what="the processes pane laid out")
        assert "command" in processes.visible_columns and "gpu_mem" not in processes.visible_columns
        widths = sum(width + 2 for width in table.column_widths.values())
        assert widths <= table.scrollable_content_region.width, "columns overflow an 80-column terminal"
        # every row and the column headers, or at least four rows when there are more (how many containers
        # the engine holds besides the demo's depends on what ran before)
        assert table.size.height >= min(len(table.keys_in_order) + 1, 5)


async def test_pause_stops_sampling_and_resumes():
    app = make_app(interval=0.25)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.sweeps >= 2, what="two sweeps")
        await pilot.press("space")
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        paused_at = app.sweeps
        await pilot.pause(1.0)
        assert app.sweeps == paused_at
        assert "PAUSED" in dashboard(app).query_one("#header").plain
        await pilot.press("space")
        await until(pilot, lambda: app.sweeps >= paused_at + 2, what="sampling to resume")


async def test_help_palette_and_action_keys(demo, monkeypatch):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: dashboard(app).table.move_to_key(demo.quiet.id), what="the rows")
        # every key has a palette entry
        titles = {command.title for command in app.get_system_commands(app.screen)}
        for description in ("Quit", "Help", "Pause", "Diagnose", "nvidia-smi", "py-spy", "Framework check",
                            "Report", "Filter", "Sort", "Reverse", "Logs", "Detail"):
            assert description in titles
        # help lists the keys of this screen and the global ones
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-text").render())
        assert "Filter" in text and "py-spy" in text and "command palette" in text
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)

        # the key imports its screen's module and pushes the screen for the selected container
        from textual.screen import Screen

        class FakeReportScreen(Screen):
            def __init__(self, kind, container_id):
                super().__init__()
                self.kind, self.container_id = kind, container_id

        module = types.ModuleType("mltop.tui.screen_fake_report")
        module.ReportScreen = FakeReportScreen
        monkeypatch.setitem(__import__("sys").modules, "mltop.tui.screen_fake_report", module)
        monkeypatch.setitem(app_module.CONTAINER_SCREENS, "report",
                            ContainerScreenSpec("screen_fake_report", "ReportScreen", "Report"))
        await pilot.press("r")
        assert isinstance(app.screen, FakeReportScreen)
        assert app.screen.kind == "report" and app.screen.container_id == demo.quiet.id


def test_cli_output_shows_terminal_controls_as_inert_text():
    from mltop.tui.sanitize import escaped

    hostile = "loss 0.1\x1b[2J\x1b]0;pwned\x07 \u202eevil\tok"
    shown = escaped(hostile)
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert shown == r"loss 0.1\x1b[2J\x1b]0;pwned\x07 \u202eevil" + "\tok"


# --------------------------------------------------------------------------- a cold start on a dense host


async def test_a_cold_start_with_many_new_containers_fills_their_configurations(containers):
    """More containers than the catalog inspects before answering: the first frame comes from the engine's
    list, the inspections held over it start after it, and every row gets its configuration and processes."""
    from mltop.probes.catalog import BACKGROUND_INSPECT_MIN

    started = [containers.run(["sleep", "300"], name=f"{PREFIX}-cold-{i}") for i in range(BACKGROUND_INSPECT_MIN + 2)]
    ids = {c.id for c in started}
    app = make_app(interval=0.5)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: ids <= {c.id for c in app.snapshot.containers}, what="every row")
        await until(pilot, lambda: all(not c.config_pending and c.processes
                                       for c in app.snapshot.containers if c.id in ids),
                    timeout=20, what="every configuration and process list")
        catalog = app.sampler.catalog
        assert not catalog._inspections_held
