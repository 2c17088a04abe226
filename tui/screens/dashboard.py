"""The main screen: header, GPU panel, containers table with filter and sort, processes of the selection."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen

from mltop.probes.model import Snapshot

from ..app_api import mltop_app
from ..widgets.containers_table import LABELS, MARKERS, POD_ROW_PREFIX, ContainersTable, shows_gpus
from ..widgets.gpu_panel import GpuPanel
from ..widgets.header import StatusHeader
from ..widgets.key_bar import KeyBar
from ..widgets.keyed_table import KeyedTable
from ..widgets.processes_table import ProcessesTable
from ..sanitize import literal
from ..widgets.search_box import SearchBox


def split_panes(height: int, container_rows: int, process_rows: int) -> tuple[int, int]:
    """Heights of the containers and processes panes sharing `height` lines, so that neither leaves a gap.

    Each pane needs its rows plus two lines (the border with its title, the column headers). A short
    containers table takes just its rows and the processes pane the rest; a long one leaves the processes
    pane what its rows need, up to its usual share (30 %, at most 12 lines), and scrolls.
    """
    container_need, process_need = container_rows + 2, process_rows + 2
    process_share = max(PROCESSES_MIN, min(PROCESSES_MAX, int(height * 0.3)))
    if container_need + min(process_need, process_share) <= height:
        containers = container_need
    else:
        containers = height - min(process_need, process_share)
    containers = max(containers, min(CONTAINERS_MIN, height))  # the selection stays in sight
    return containers, max(height - containers, 0)


CONTAINERS_MIN = 3  # the border, the column headers and one row
PROCESSES_MIN = 4
PROCESSES_MAX = 12


class Panes(Vertical):
    """The containers and processes panes, sized together by the dashboard whenever their room changes."""

    def on_resize(self) -> None:
        screen = self.screen
        if isinstance(screen, DashboardScreen):
            screen.fit_panes()


class DashboardScreen(Screen):
    """Shows each new snapshot while it is the active screen; catches up when it becomes active again."""

    ALLOW_IN_MAXIMIZED_VIEW = "#header, KeyBar"  # `g` fills the screen with the GPUs, keeping these
    mltop = mltop_app()

    BINDINGS = [
        Binding("slash", "filter", "Filter", id="mltop.filter"),
        Binding("s", "sort_next", "Sort", id="mltop.sort"),
        Binding("S", "sort_reverse", "Reverse", show=False, id="mltop.sort_reverse"),
        Binding("l", "logs", "Logs", id="mltop.logs"),
        Binding("g", "toggle_gpus", "GPUs", show=False, id="mltop.gpus"),
        Binding("P", "group_pods", "Group by pod", show=False, id="mltop.group_pods"),
        Binding("k", "act", "Signal process / stop container", show=False, id="mltop.act"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="mltop.clear_filter"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_column = "name"
        self.sort_reverse = False
        self.needle = ""
        self.group_pods = False  # each pod's containers under a row of its totals (P)

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        yield GpuPanel(id="gpus")
        yield SearchBox(placeholder="filter by name, image, status or id (enter keeps, esc clears)",
                        id="filter")
        with Panes(id="panes"):
            yield ContainersTable(id="containers")
            yield ProcessesTable(id="processes")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#filter", SearchBox).display = False
        self.query_one("#gpus", GpuPanel).display = False
        self.query_one("#processes").border_title = "Processes"
        self.query_one("#containers", ContainersTable).focus()
        self.show_snapshot(self.mltop.snapshot)

    def on_screen_resume(self) -> None:
        self.show_snapshot(self.mltop.snapshot)

    # -- what the app and other screens read ------------------------------------------------------

    @property
    def table(self) -> ContainersTable:
        return self.query_one("#containers", ContainersTable)

    @property
    def selected_container_id(self) -> str | None:
        return self.table.cursor_key

    @property
    def selected_process_pid(self) -> int | None:
        key = self.query_one("#processes", ProcessesTable).cursor_key
        return int(key) if key and key.isdigit() else None  # (a host parent's row in the tree is no target)

    # -- showing ----------------------------------------------------------------------------------

    def show_snapshot(self, snapshot: Snapshot | None) -> None:
        app = self.mltop
        self.query_one(StatusHeader).show(snapshot, app.docker_host, app.interval, app.paused, app.notes,
                                          replay=not app.source.live,
                                          past_label=getattr(app.source, "past_label", "REPLAY"),
                                          recorder=app.recorder.status.summary() if app.recorder is not None else None)
        if snapshot is None:
            return
        self.query_one(GpuPanel).show(snapshot, app.history, app.interval)
        table = self.table
        table.show(snapshot, self.needle, self.sort_column, self.sort_reverse, self._severities(),
                   previous=app.previous_snapshot, group_pods=self.group_pods)
        self._title_table(snapshot)
        self._show_processes()
        self.fit_panes()

    def fit_panes(self) -> None:
        """Give the panes' shared height to whichever has rows to show (see `split_panes`)."""
        height = self.query_one("#panes").size.height
        if not height:
            return
        processes = self.query_one("#processes", ProcessesTable)
        heights = split_panes(height, len(self.table.keys_in_order), len(processes.keys_in_order))
        if heights != getattr(self, "_pane_heights", None):
            self._pane_heights = heights
            self.table.styles.height = heights[0]
            processes.styles.height = heights[1]

    def show_findings(self) -> None:
        """The background doctor finished: update the row markers."""
        self._reshow()

    def _severities(self) -> dict[str | None, str]:
        return self.mltop.finding_severities

    def _title_table(self, snapshot: Snapshot) -> None:
        keys = self.table.keys_in_order
        shown = sum(1 for key in keys if not key.startswith(POD_ROW_PREFIX))  # (a pod's totals row is no container)
        title = Text(f"Containers {shown}", end="")
        if shown != len(snapshot.containers):
            title.append(f" of {len(snapshot.containers)}")
        if self.group_pods and shown != len(keys):
            title.append(f" · {len(keys) - shown} pods")
        if snapshot.host.engine_down:
            title.append(" · engine down", style="bold red")
        arrow = "↑" if self.sort_ascending else "↓"
        title.append(f" · sort {LABELS[self.sort_column]} {arrow}")
        if self.group_pods:
            title.append(" · by pod")
        if self.needle:
            title.append(" · filter ")
            title.append_text(literal(self.needle, "reverse"))
        table = self.table
        marked = [table.marker(key) for key in table.keys_in_order]
        for severity, (glyph, style) in MARKERS.items():
            if severity in marked:
                title.append(" · ")
                title.append(f"{glyph} {marked.count(severity)} {severity}", style=style)
        if getattr(self, "_table_title", None) != title.plain:
            self._table_title = title.plain
            self.table.border_title = title

    @property
    def sort_ascending(self) -> bool:
        from ..widgets.containers_table import SORT_VALUES

        return SORT_VALUES[self.sort_column][1] == self.sort_reverse

    def _show_processes(self) -> None:
        snapshot = self.mltop.snapshot
        key = self.table.cursor_key
        container = snapshot.container(key) if snapshot is not None and key else None
        processes = self.query_one("#processes", ProcessesTable)
        ancestors = self._ancestors(container) if processes.tree and container is not None else None
        processes.show(container, gpu_columns=snapshot is not None and shows_gpus(snapshot), ancestors=ancestors)
        title = Text("Processes", end="")
        if container is not None:
            title.append(" of ")
            title.append_text(literal(container.name, "bold"))
            if not container.processes and container.running:
                title.append(" · none visible", style="dim")
        if processes.tree:
            title.append(" · tree", style="dim")
        if getattr(self, "_processes_title", None) != title.plain:
            self._processes_title = title.plain
            processes.border_title = title

    def _ancestors(self, container) -> tuple[tuple, str | None]:
        """The container init's parents on the host, read once per container start (probes.processes)."""
        if not self.mltop.source.live:
            return (), "parents not recorded: a replay shows what was sampled then"
        key = (container.id, container.pid)
        cached = getattr(self, "_ancestors_of", None)
        if cached is None or cached[0] != key:
            from mltop.probes.processes import host_ancestors

            cached = self._ancestors_of = (key, host_ancestors(container.pid))
        return cached[1]

    def on_processes_table_tree_toggled(self, event: ProcessesTable.TreeToggled) -> None:
        event.stop()
        self._show_processes()
        self.fit_panes()

    def on_keyed_table_row_highlighted(self, event: KeyedTable.RowHighlighted) -> None:
        if event.table.id == "containers":
            self._show_processes()
            self.fit_panes()

    def on_keyed_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        if event.table.id == "containers" and not event.key.startswith(POD_ROW_PREFIX):
            self.mltop.open_detail(event.key)

    def _reshow(self) -> None:
        snapshot = self.mltop.snapshot
        if snapshot is not None:
            self.table.show(snapshot, self.needle, self.sort_column, self.sort_reverse, self._severities(),
                            previous=self.mltop.previous_snapshot, group_pods=self.group_pods)
            self._title_table(snapshot)
            self._show_processes()
            self.fit_panes()

    # -- actions ----------------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.query_one("#filter", SearchBox).open()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", SearchBox)
        if self.needle or box.display:
            box.action_clear()

    def on_input_changed(self, event: SearchBox.Changed) -> None:
        event.stop()
        if event.value != self.needle:
            self.needle = event.value
            self._reshow()

    def on_search_box_closed(self, event: SearchBox.Closed) -> None:
        event.stop()
        self.table.focus()

    def action_sort_next(self) -> None:
        columns = self.table.visible_columns or list(LABELS)
        index = columns.index(self.sort_column) if self.sort_column in columns else -1
        self.sort_column = columns[(index + 1) % len(columns)]
        self.sort_reverse = False
        self._reshow()

    def action_sort_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._reshow()

    def action_toggle_gpus(self) -> None:
        panel = self.query_one(GpuPanel)
        if self.maximized is panel:
            self.minimize()
        elif panel.display:
            self.maximize(panel, container=False)
        else:
            self.app.notify("No GPU to show: see the header for why.", timeout=3)

    def watch_maximized(self, maximized) -> None:
        if self.is_mounted:
            self.query_one(GpuPanel).fit()  # two lines a GPU when maximized, maybe one when not
        if maximized is None and self.is_mounted:
            self.table.focus()  # back from the GPUs full screen (g or escape): keys go to the table again

    def action_group_pods(self) -> None:
        self.group_pods = not self.group_pods
        self._reshow()

    def action_logs(self) -> None:
        key = self.table.cursor_key
        if key and not key.startswith(POD_ROW_PREFIX):
            self.mltop.open_logs(key)

    def action_act(self) -> None:
        """`k`: on a process row (the processes pane focused), which signal to send it; on a container row, stop
        or restart the container. Refused, with the registry's words, where mltop may not act."""
        from mltop.diagnostics.actions.registry import SIGNAL_PROCESS, STOP_CONTAINER

        from .acts import container_screen, signal_screen

        snapshot = self.mltop.snapshot
        key = self.table.cursor_key
        container = snapshot.container(key) if snapshot is not None and key and \
            not key.startswith(POD_ROW_PREFIX) else None
        if container is None:
            self.app.notify("Select a container first (a pod's row stands for several).", timeout=3)
            return
        processes = self.query_one("#processes", ProcessesTable)
        pid = self.selected_process_pid if processes.has_focus else None
        process = next((p for p in container.processes if p.host_pid == pid), None)
        if self.mltop.refuses_action(SIGNAL_PROCESS if process is not None else STOP_CONTAINER):
            return
        source = self.mltop.source
        if process is not None:
            self.app.push_screen(signal_screen(container, process, source))
        else:
            self.app.push_screen(container_screen(container, source, self.mltop.new_engine))
