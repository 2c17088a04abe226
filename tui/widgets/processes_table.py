"""The processes of the selected container: host and container PIDs, user, CPU, RSS and GPU use; `t` shows them as
a tree, each under its parent, below the container init's parents on the host."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.message import Message

from mltop.probes.model import ContainerSample, ProcessSample

from .. import format as fmt
from .keyed_table import ColumnSpec, KeyedTable
from ..sanitize import literal, one_line

COLUMNS = (
    ColumnSpec("pid", "PID", 7, 0, "right"),
    ColumnSpec("cpid", "CPID", 5, 5, "right"),
    ColumnSpec("user", "USER", 8, 6),
    ColumnSpec("cpu", "CPU%", 5, 1, "right"),
    ColumnSpec("rss", "RSS", 5, 2, "right"),
    ColumnSpec("gpu", "GPU", 3, 4),
    ColumnSpec("gpu_mem", "GPU MEM", 7, 3, "right"),
    ColumnSpec("sm", "SM%", 4, 7, "right"),
    ColumnSpec("command", "COMMAND", 16, 0, flexible=True),
)
GPU_COLUMNS = frozenset({"gpu", "gpu_mem", "sm"})


def process_cells(p: ProcessSample) -> dict[str, Text]:
    values = {
        "pid": str(p.host_pid),
        "cpid": str(p.container_pid) if p.container_pid is not None else fmt.MISSING,
        "cpu": fmt.percent(p.cpu_percent),
        "rss": fmt.size(p.rss_bytes),
        "gpu": ",".join(str(i) for i in p.gpu_indices),
        "gpu_mem": fmt.size(p.gpu_memory_bytes, missing="") if p.gpu_indices else "",
        "sm": fmt.percent(p.sm_percent, missing="") if p.gpu_indices else "",
    }
    cells = {key: Text(value, no_wrap=True, end="") for key, value in values.items()}
    cells["user"] = literal(p.user or fmt.MISSING)
    cells["command"] = literal(one_line(p.cmdline))  # the column cuts it with …
    return cells


ANCESTOR_KEY = "^"  # an ancestor's row key: "^" + its host PID (no action takes it for a container process)
NOT_VISIBLE_KEY = "^parents"
MAX_DEPTH = 8  # deeper levels are drawn at this indentation, so the command keeps room at 80 columns


def _busiest(p: ProcessSample) -> tuple:
    return (-(p.gpu_memory_bytes or 0), -(p.cpu_percent or 0.0), p.host_pid)


def tree_order(processes) -> list[tuple[ProcessSample, int, str]]:
    """(process, depth, glyphs) depth first: each process under its parent within the container; one whose parent is
    not in the container (its init; one reparented) is a root. Siblings busiest first. Linear in the processes."""
    by_pid = {p.host_pid: p for p in processes}
    children: dict[int, list[ProcessSample]] = {}
    roots = []
    for p in processes:
        if p.ppid in by_pid and p.ppid != p.host_pid:
            children.setdefault(p.ppid, []).append(p)
        else:
            roots.append(p)
    out: list[tuple[ProcessSample, int, str]] = []
    seen: set[int] = set()
    # (process, depth, prefix of the ancestors' bars, last among its siblings)
    stack = [(p, 0, "", i == len(roots) - 1) for i, p in reversed(list(enumerate(sorted(roots, key=_busiest))))]
    while stack:
        p, depth, bars, last = stack.pop()
        if p.host_pid in seen:
            continue
        seen.add(p.host_pid)
        glyph = "" if depth == 0 else bars + ("└─ " if last else "├─ ")
        out.append((p, depth, glyph))
        kids = sorted(children.get(p.host_pid, ()), key=_busiest)
        below = "" if depth == 0 else bars + ("   " if last else "│  ")
        if depth + 1 > MAX_DEPTH:
            below = bars
        for i, kid in reversed(list(enumerate(kids))):
            stack.append((kid, depth + 1, below, i == len(kids) - 1))
    # a cycle (a PID reused mid-sweep) leaves processes unvisited: shown as roots
    out += [(p, 0, "") for p in sorted(processes, key=_busiest) if p.host_pid not in seen]
    return out


def _dim(cells: dict[str, Text]) -> dict[str, Text]:
    """A host row: every column (empty where it has no value), dimmed."""
    row = {spec.key: cells.get(spec.key) or Text("", end="") for spec in COLUMNS}
    for cell in row.values():
        cell.stylize("dim")
    return row


class ProcessesTable(KeyedTable):
    """Keyed by host PID; busiest first (GPU memory, then CPU), or as a tree (`t`)."""

    COLUMNS = COLUMNS
    BINDINGS = [Binding("t", "toggle_tree", "Tree", id="mltop.processes.tree")]

    tree = False  # each process under its parent, the init's host parents above (see show)

    def action_toggle_tree(self) -> None:
        self.tree = not self.tree
        self.post_message(self.TreeToggled(self))

    class TreeToggled(Message):  # the screen shows the pane again, with the host parents it reads
        def __init__(self, table: "ProcessesTable") -> None:
            super().__init__()
            self.table = table

    def show(self, container: ContainerSample | None, gpu_columns: bool = True,
             ancestors: tuple[tuple, str | None] | None = None) -> None:
        """`gpu_columns`: False on a host without GPUs, so the command gets their width. `ancestors`: in tree mode,
        (the init's host parents nearest first, why they are not visible) as probes.processes.host_ancestors
        gives them."""
        self.hide_columns(frozenset() if gpu_columns else GPU_COLUMNS)
        processes = container.processes if container is not None else ()
        if not self.tree:
            ordered = sorted(processes, key=_busiest)
            self.sync({str(p.host_pid): process_cells(p) for p in ordered}, [str(p.host_pid) for p in ordered])
            return
        rows: dict[str, dict[str, Text]] = {}
        order: list[str] = []
        above, why = ancestors if ancestors is not None else ((), None)
        chain = list(reversed(above))  # the host's init first
        if why and container is not None:
            rows[NOT_VISIBLE_KEY] = _dim({"command": literal(one_line(why))})
            order.append(NOT_VISIBLE_KEY)
        for depth, a in enumerate(chain):
            glyph = "" if depth == 0 else "   " * (min(depth, MAX_DEPTH) - 1) + "└─ "
            cells = {"pid": Text(str(a.pid), no_wrap=True, end=""), "user": literal(a.user or fmt.MISSING),
                     "command": Text(glyph, end="")}
            cells["command"].append_text(literal(one_line(a.cmdline)))
            key = f"{ANCESTOR_KEY}{a.pid}"
            rows[key] = _dim(cells)
            order.append(key)
        base = min(len(chain), MAX_DEPTH)
        for p, depth, glyph in tree_order(processes):
            cells = process_cells(p)
            if chain:  # the container's processes hang under the nearest host parent
                lead = "   " * (base - 1) + ("└─ " if depth == 0 else "   ")
                glyph = lead + glyph
            command = Text(glyph, end="")
            command.append_text(cells["command"])
            cells["command"] = command
            rows[str(p.host_pid)] = cells
            order.append(str(p.host_pid))
        self.sync(rows, order)
