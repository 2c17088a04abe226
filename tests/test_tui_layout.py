"""How the dashboard uses the terminal, from built snapshots (no engine): at 80x24 and 200x60 the panes leave
no gap, the GPUs full screen gives each GPU an equal share, and graph captions never run into each other."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from builders import GIB, container, gpu_workload, process, replace, snapshot
from test_tui import until

from mltop.probes.source import StaticSource
from mltop.tui.app import MltopApp
from mltop.tui.screens.dashboard import split_panes
from mltop.tui.screens.detail import ContainerDetailScreen, GraphBox
from mltop.tui.widgets.gauges import GraphCaption, HistoryGraph, LabelledGraph, span_text
from mltop.tui.widgets.gpu_panel import GpuCard, GpuPanel

SIZES = [(80, 24), (200, 60)]


def screen_text(app) -> list[str]:
    """The screen as plain text lines, the way a user sees it."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system=None,
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text().splitlines()


def _snapshots(containers, gpus=(), count: int = 30):
    """The same containers over `count` sweeps, so the graphs have a history."""
    return [snapshot(containers, gpus, taken_at=1_000_000.0 + i) for i in range(count)]


async def _settle(pilot, app):
    await until(pilot, lambda: app.snapshot is not None, what="the first snapshot")
    await pilot.pause(0.3)


# --------------------------------------------------------------------------- dashboard panes


def test_split_panes_gives_the_room_to_the_pane_with_rows():
    assert split_panes(20, 3, 1) == (5, 15)  # short table: just its rows, the processes pane the rest
    assert split_panes(20, 40, 1) == (17, 3)  # long table, one process: the table takes what is left
    assert split_panes(30, 40, 40) == (21, 9)  # both long: the processes pane keeps its 30 %
    assert split_panes(60, 80, 40) == (48, 12)  # ... at most 12 lines
    assert split_panes(6, 40, 40) == (3, 3)  # tiny: the table still shows a row


@pytest.mark.parametrize("size", SIZES)
async def test_short_containers_table_leaves_no_gap(size):
    containers = [container(f"job-{i}", processes=[process(100 * i + j) for j in range(3)]) for i in range(3)]
    app = MltopApp(source=StaticSource(_snapshots(containers)), interval=0.25)
    async with app.run_test(size=size) as pilot:
        await _settle(pilot, app)
        table, processes = app.screen.query_one("#containers"), app.screen.query_one("#processes")
        footer = app.screen.query_one("KeyBar")
        assert table.outer_size.height == 3 + 2  # the border line, the column headers, three rows
        assert processes.region.y == table.region.y + table.outer_size.height  # right under it
        assert processes.region.y + processes.outer_size.height == footer.region.y  # and down to the footer
        text = screen_text(app)
        rows = [i for i, line in enumerate(text) if line.lstrip().startswith("job-")]
        assert rows and text[rows[-1] + 1].startswith("─Processes")  # no blank line between the panes


@pytest.mark.parametrize("size", SIZES)
async def test_long_containers_table_gets_the_room_a_short_processes_pane_leaves(size):
    containers = [container(f"job-{i:02d}", processes=[process(1000 + i)]) for i in range(60)]
    app = MltopApp(source=StaticSource(_snapshots(containers)), interval=0.25)
    async with app.run_test(size=size) as pilot:
        await _settle(pilot, app)
        table, processes = app.screen.query_one("#containers"), app.screen.query_one("#processes")
        footer = app.screen.query_one("KeyBar")
        await until(pilot, lambda: processes.outer_size.height == 1 + 2,  # one process: row, headers, border
                    what="the processes pane sized to its one row")
        assert table.outer_size.height == footer.region.y - table.region.y - 3


# --------------------------------------------------------------------------- GPUs full screen


@pytest.mark.parametrize("size", SIZES)
async def test_gpu_full_screen_gives_each_gpu_an_equal_share(size):
    (c0, g0), (c1, g1) = gpu_workload("train", 0), gpu_workload("serve", 1, pid=5151)
    app = MltopApp(source=StaticSource(_snapshots([c0, c1], [g0, g1])), interval=0.5)
    async with app.run_test(size=size) as pilot:
        await _settle(pilot, app)
        panel = app.screen.query_one(GpuPanel)
        await until(pilot, lambda: len(panel.query(GpuCard)) == 2, what="two GPU cards")
        await pilot.press("g")
        await pilot.pause(0.3)
        footer = app.screen.query_one("KeyBar")
        assert panel.region.y + panel.outer_size.height == footer.region.y  # the panel fills the screen
        cards = list(panel.query(GpuCard))
        heights = [card.outer_size.height for card in cards]
        assert max(heights) - min(heights) <= 1 and sum(heights) >= panel.size.height - 1
        for card in cards:
            for graph in card.query(HistoryGraph):
                assert graph.size.height >= card.outer_size.height - 4  # all but the title, caption, gap
            graph = card.query_one(HistoryGraph)
            span = span_text(graph.size.width * 0.5)  # one column a sample, a sample each 0.5 s
            (util, mem) = [str(c.render()) for c in card.query(GraphCaption)]
            assert util.startswith("util ") and util.endswith((f"0–100% · last {span}", f"0–100% · {span}"))
            assert mem.startswith("mem used ") and mem.endswith((f"0–80G · last {span}", f"0–80G · {span}"))
        await pilot.press("g")
        await pilot.pause(0.3)
        assert all(card.outer_size.height <= 2 for card in panel.query(GpuCard))  # back to two lines a GPU


@pytest.mark.parametrize("size, count", [((80, 24), 8), ((200, 60), 3), ((200, 60), 8)])
async def test_gpu_full_screen_shares_fill_or_scroll(size, count):
    gpus = [gpu_workload(f"job-{i}", i, pid=4000 + i) for i in range(count)]
    app = MltopApp(source=StaticSource(_snapshots([c for c, _ in gpus], [g for _, g in gpus])), interval=0.5)
    async with app.run_test(size=size) as pilot:
        await _settle(pilot, app)
        panel = app.screen.query_one(GpuPanel)
        await until(pilot, lambda: len(panel.query(GpuCard)) == count, what="the GPU cards")
        await pilot.press("g")
        await pilot.pause(0.3)
        heights = [card.outer_size.height for card in panel.query(GpuCard)]
        room = panel.scrollable_content_region.height
        if room >= count * GpuPanel.FULL_SCREEN_MIN:
            assert sum(heights) == room and max(heights) - min(heights) <= 1  # the whole height, shared
        else:
            assert heights == [GpuPanel.FULL_SCREEN_MIN] * count  # each readable; the panel scrolls
            assert panel.max_scroll_y > 0


# --------------------------------------------------------------------------- container detail


@pytest.mark.parametrize("size", SIZES)
async def test_detail_graph_captions_never_run_into_each_other(size):
    c, g = gpu_workload("a-container-with-a-rather-long-name", 0, memory_bytes=3 * GIB)
    c = replace(c, memory_bytes=640 * 1024, memory_limit_bytes=None, cpu_limit_cores=None)
    app = MltopApp(source=StaticSource(_snapshots([c], [g])), interval=1.0)
    async with app.run_test(size=size) as pilot:
        await _settle(pilot, app)
        app.open_detail(c.id)
        await until(pilot, lambda: isinstance(app.screen, ContainerDetailScreen), what="the detail")

        def captions_laid_out() -> bool:  # shown and sized: on a loaded host the first layout can come late
            shown = [box.query_one(GraphCaption) for box in app.screen.query(GraphBox) if box.display]
            return bool(shown) and all(c.size.width > 0 and c.render().plain.strip() for c in shown)

        await until(pilot, captions_laid_out, what="the graph captions laid out")
        boxes = {box.metric: box for box in app.screen.query(GraphBox)}
        for box in boxes.values():
            caption = box.query_one(GraphCaption)
            rendered = caption.render()
            assert len(rendered.plain) <= caption.size.width
            # no styled run starts with its separating spaces (some SVG renderers drop them: `640Kno limit`)
            assert not [s for s in rendered.spans if rendered.plain[s.start:s.end].startswith(" ")
                        and rendered.plain[s.start:s.end].strip()], rendered.spans
        cpu, memory = boxes["cpu"], boxes["memory"]
        assert cpu.region.right < memory.region.x  # a gutter between the two columns
        line = screen_text(app)[memory.region.y]
        assert "640Kno" not in line and "memory 640K" in line
        left, right = line[: memory.region.x], line[memory.region.x:]
        span = span_text(cpu.size.width * 1.0)  # a sample a second
        assert left.rstrip().endswith(f"0–100% · last {span}") and left.startswith(" CPU 95.0%")
        assert right.lstrip().startswith("memory 640K") and right.rstrip().endswith(f"0–640K · last {span}")
        assert boxes["gpu"].caption_text.endswith(f"0–100% · last {span}")
        assert boxes["gpu_memory"].caption_text.endswith(f"0–80G · last {span}")  # the GPU's memory
        assert isinstance(boxes["cpu"], LabelledGraph)
        assert boxes["cpu"].query_one(HistoryGraph).size.height >= 3


# --------------------------------------------------------------------------- the key bar


@pytest.mark.parametrize("size", SIZES)
async def test_key_bar_shows_whole_hints_and_the_palette_key_at_the_right(size):
    app = MltopApp(source=StaticSource(_snapshots([container("job-1", processes=[process(101)])])), interval=0.25)
    async with app.run_test(size=size) as pilot:
        await _settle(pilot, app)
        line = screen_text(app)[-1]
        assert line.startswith(" ⏎ Detail  / Filter  s Sort  l Logs  q Quit  ? Help  d Diagnose ")
        assert line.rstrip().endswith("▏^p palette") and len(line) == size[0]
        keys = line.split("▏")[0]
        if size[0] == 80:  # no room for "space Pause": left out whole, never cut mid-word
            assert "space" not in keys and "spa" not in keys
        else:
            assert "space Pause  e Events" in keys
        await pilot.press("enter")  # another screen, other keys
        await until(pilot, lambda: screen_text(app)[-1].startswith(" esc Back  l Full log "),
                    what="the detail screen's keys")


async def test_key_bar_follows_the_bindings_and_a_click_presses_the_key():
    app = MltopApp(source=StaticSource(_snapshots([container("job-1", processes=[process(101)])])), interval=0.25)
    async with app.run_test(size=(120, 30)) as pilot:
        await _settle(pilot, app)
        keys = screen_text(app)[-1]
        await pilot.press("slash")  # the filter box takes the focus: its keys replace the table's
        await until(pilot, lambda: screen_text(app)[-1] != keys, what="the filter box's keys")
        assert "⏎ Detail" not in screen_text(app)[-1]
        await pilot.press("escape")
        await until(pilot, lambda: screen_text(app)[-1] == keys, what="the table's keys again")
        bar = app.screen.query_one("KeyBar")
        x = screen_text(app)[-1].index("? Help")
        await pilot.click(bar, offset=(x + 2, 0))
        await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="the help screen, by a click")
