"""A command that holds a whole script (`python3 -c "<several lines>"`) shows on one line in every table:
the CLI's host view, the action panel, the processes pane, the container detail, the Markdown and HTML
reports. Line breaks show as ↵, tabs as ⇥, and a long command is cut with … to its column."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from builders import GIB, config, container, gpu, gpu_process, process, snapshot
from test_tui import until

from mltop.diagnostics.actions import ActionResult
from mltop.diagnostics.one_line import one_line
from mltop.diagnostics.report import build_report, render_markdown
from mltop.diagnostics.report import render_html
from mltop.probes.source import StaticSource
from mltop.tui.app import MltopApp
from mltop.tui.screens.actions import ActionScreen

SCRIPT = "import time\nwhile True:\n\ttime.sleep(1)  # mltop-multiline\n"
SCRIPT_SHOWN = "import time↵while True:↵time.sleep(1)  # mltop-multiline"


def test_one_line_marks_breaks_and_tabs_and_cuts_to_the_column():
    assert one_line("python3 -c " + SCRIPT) == "python3 -c " + SCRIPT_SHOWN
    assert one_line("a\r\nb\rc\u2028d\te") == "a↵b↵c↵d⇥e"
    assert one_line("plain text") == "plain text"
    assert one_line("abcdef", 4) == "abc…" and one_line("abcd", 4) == "abcd" and one_line("abc", 0) == ""


def _table_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith(("|", "+"))]


def _assert_whole_tables(lines: list[str]) -> None:
    """Each ASCII table's lines all have the same width: no cell broke its row."""
    tables: list[list[str]] = [[]]
    for line in lines:
        if line.startswith(("|", "+")):
            tables[-1].append(line)
        elif tables[-1]:
            tables.append([])
    for table in filter(None, tables):
        assert len({len(line) for line in table}) == 1, "\n".join(table)


# --------------------------------------------------------------------------- engine-backed: `mltop run`, `n`


@pytest.fixture
def multiline_gpu_job(containers, nvml_scenario):
    """A Python container started with a several-line `-c` script, its process on a simulated GPU."""
    from fakenvml import FakeGpu, FakeProcess

    c = containers.run(["python3", "-c", SCRIPT], image="python", name=f"mltop-test-ml-{uuid.uuid4().hex[:6]}")
    c.reload()
    lib = nvml_scenario(gpus=[FakeGpu(uuid="GPU-ml", name="NVIDIA A100-SXM4-80GB", util=50, mem_used=9 << 30,
                                      processes=[FakeProcess(pid=c.attrs["State"]["Pid"], used_memory=8 << 30,
                                                             sm=40)])])
    return c, lib


def test_mltop_run_nvidia_smi_host_view_keeps_its_table_whole(multiline_gpu_job, capsys):
    from mltop.tui import cli

    c, lib = multiline_gpu_job
    cli.main(["--nvml-lib", lib, "run", "nvidia-smi", c.name, "--timeout", "20"])
    lines = capsys.readouterr().out.splitlines()
    (row,) = [line for line in lines if "mltop-multiline" in line or "while True" in line]
    assert row.startswith("|") and row.endswith("|") and "↵" in row
    assert "python3 -c import time↵while True:↵" in row
    _assert_whole_tables(lines)
    assert len(_table_lines(lines)) >= 10  # both tables: the GPUs and the processes


async def test_action_panel_shows_the_host_view_table_whole(multiline_gpu_job):
    c, lib = multiline_gpu_job
    app = MltopApp(nvml_lib=lib, interval=0.5)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.screen.table.move_to_key(c.id), what="the container's row")
        await pilot.pause()
        await pilot.press("n")
        screen = app.screen
        assert isinstance(screen, ActionScreen)
        await until(pilot, lambda: screen.result is not None, timeout=30, what="nvidia-smi")
        (row,) = [line for line in screen.lines if "while True" in line]
        assert "↵" in row and row.endswith("|")
        _assert_whole_tables(screen.lines)


# --------------------------------------------------------------------------- built snapshots: screens, reports


def _job_snapshot():
    cmd = "python3 -c " + SCRIPT
    job = container("ml-job", config=config(command=("python3", "-c", SCRIPT)),
                    processes=(process(4242, cmdline=cmd, gpu_memory_bytes=4 * GIB, gpu_indices=(0,)),))
    return snapshot([job], [gpu(0, processes=[gpu_process(4242, container=job, name=cmd)])])


async def test_processes_pane_and_detail_show_the_command_on_one_line():
    snap = _job_snapshot()
    app = MltopApp(source=StaticSource([snap]), interval=0.25)
    async with app.run_test(size=(80, 24)) as pilot:
        processes = app.screen.query_one("#processes")
        await until(pilot, lambda: "4242" in processes.keys_in_order, what="the process row")
        cell = processes.cell_text("4242", "command")
        assert "\n" not in cell and cell.startswith("python3 -c import time↵while True:↵")
        shown = processes.shown_text("4242", "command")
        assert shown.endswith("…") and len(shown) == processes.column_widths["command"]  # cut to the column
        await pilot.press("enter")
        await pilot.pause(0.3)
        config_text = str(app.screen.query_one("#config").render())
        (line,) = [line for line in config_text.splitlines() if line.startswith("command")]
        assert "python3 -c import time↵while True:↵" in line


async def test_action_panel_status_shows_a_multiline_command_on_one_line():
    app = MltopApp(source=StaticSource([_job_snapshot()]), interval=0.25)
    async with app.run_test(size=(200, 30)) as pilot:
        screen = ActionScreen("py-spy", None)
        await app.push_screen(screen)
        await pilot.pause()
        result = ActionResult("py-spy", "ml-job", ("py-spy", "dump", "--pid", "4242", "#", SCRIPT), time.time(),
                              0.5, 0, "ok", "Thread 1\n  loop (<string>:3)")
        screen.post_message(ActionScreen.Finished(result))
        await until(pilot, lambda: screen.result is not None, what="the result shown")
        await pilot.pause()
        assert "# import time↵while True:↵time.sleep(1)" in screen.status_text
        assert "command: py-spy dump --pid 4242 # import time↵while True:↵" in screen._file_text()


def test_markdown_and_html_reports_show_commands_on_one_line():
    doc = build_report(_job_snapshot())
    md = render_markdown(doc)
    (row,) = [line for line in md.splitlines() if line.startswith("| 4242 |")]
    assert "python3 -c import time↵while True:↵time.sleep(1)" in row and row.endswith("|")
    (command,) = [line for line in md.splitlines() if line.startswith("| **Command** |")]
    assert "↵while True:↵" in command
    gpu_row = next(line for line in md.splitlines() if "| 4242 |" in line and "ml-job" in line)
    assert "↵" in gpu_row

    html = render_html(doc)
    cells = re.findall(r"<td><code>(python3 -c [^<]*)</code></td>", html)
    assert cells and all("\n" not in cell and "↵while True:↵" in cell for cell in cells)


def test_py_spy_panel_header_shows_the_command_on_one_line(containers, sampler):
    from mltop.diagnostics.actions import ActionRun

    c = containers.run(["python3", "-c", SCRIPT], image="python")
    sampler.sweep()
    time.sleep(0.3)
    lines: list[str] = []
    result = ActionRun("py-spy", sampler.sweep(), c.id, sampler.engine, on_line=lines.append).run()
    assert result.status == "ok", result.explanation
    assert lines[0].startswith("== py-spy dump of host PID") and "python3 -c import time↵while True:↵" in lines[0]
