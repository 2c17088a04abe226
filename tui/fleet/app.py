"""The fleet view: a hosts table (worst first), the top GPU consumers across hosts, and every host's findings
grouped by code. Read-only: it reads Prometheus, never a host; what needs the host says how to reach it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Static

from mltop.probes.fleet import FleetHost, FleetReader, FleetSnapshot
from mltop.probes.prometheus_api import PrometheusError
from mltop.probes.recording.source import format_duration
from mltop.probes.units import local_time

from .. import format as fmt
from ..sanitize import literal, printable
from ..widgets.key_bar import KeyBar
from ..widgets.keyed_table import ColumnSpec, KeyedTable
from .document import findings_by_code, severity_counts, sorted_hosts, worst_finding

HOST_COLUMNS = (
    ColumnSpec("host", "HOST", 14, 0, flexible=True, max_width=32),
    ColumnSpec("agent", "AGENT", 9, 1),
    ColumnSpec("findings", "FINDINGS", 9, 2),
    ColumnSpec("worst", "WORST", 16, 3, flexible=True, max_width=28),
    ColumnSpec("gpus", "GPUS", 4, 4, "right"),
    ColumnSpec("util", "UTIL%", 5, 5, "right"),
    ColumnSpec("gpu_mem", "GPU MEM", 11, 6, "right"),
    ColumnSpec("sm", "SM ACT", 6, 7, "right"),
    ColumnSpec("containers", "CONT", 4, 8, "right"),
    ColumnSpec("instance", "INSTANCE", 16, 9),
)
CONSUMER_COLUMNS = (
    ColumnSpec("container", "CONTAINER", 18, 0, flexible=True, max_width=40),
    ColumnSpec("host", "HOST", 12, 1, flexible=True, max_width=24),
    ColumnSpec("gpu_mem", "GPU MEM", 7, 2, "right"),
    ColumnSpec("sm", "SM%", 5, 3, "right"),
    ColumnSpec("gpus", "GPUS", 4, 4, "right"),
    ColumnSpec("id", "ID", 12, 5),
)
FINDING_COLUMNS = (
    ColumnSpec("code", "CODE", 24, 0),
    ColumnSpec("host", "HOST", 12, 1, flexible=True, max_width=24),
    ColumnSpec("container", "CONTAINER", 14, 2, flexible=True, max_width=32),
    ColumnSpec("severity", "SEVERITY", 10, 3),
)
# How a host row can be sorted (s cycles, S reverses), like the dashboard's columns.
HOST_SORTS: dict[str, Callable[[FleetHost], object]] = {
    "worst": lambda h: 0,  # the worst-first key itself
    "host": lambda h: h.hostname.lower(),
    "util": lambda h: -(h.gpu_utilization_mean or -1.0),
    "gpu_mem": lambda h: -(h.gpu_memory_used_bytes or -1.0),
    "containers": lambda h: -h.containers_running,
}


def agent_text(host: FleetHost, now: float) -> Text:
    if host.up:
        age = f" {now - host.last_sweep:.0f}s" if host.last_sweep is not None else ""
        return Text(f"up{age}", style="green")
    if host.last_sweep is None:
        return Text("down", style="bold red")
    return Text(f"down {format_duration(now - host.last_sweep)}", style="bold red")


def findings_text(host: FleetHost) -> Text:
    counts = severity_counts(host)
    out = Text()
    for severity in ("critical", "warning"):
        if counts.get(severity):
            glyph, style = fmt.SEVERITY_GLYPH[severity]
            out.append(f"{glyph}{counts[severity]} ", style=style)
    if not out.plain and host.up:
        out.append("ok", style="green")
    return out


def host_cells(host: FleetHost, now: float) -> dict[str, Text]:
    worst = worst_finding(host)
    style = "" if host.up else "dim"
    used, total = host.gpu_memory_used_bytes, host.gpu_memory_total_bytes
    return {
        "host": literal(host.hostname, style=style),
        "agent": agent_text(host, now),
        "findings": findings_text(host),
        "worst": literal(worst.code if worst else "", style=fmt.SEVERITY_GLYPH[worst.severity][1]
                         if worst and worst.severity in fmt.SEVERITY_GLYPH else ""),
        "gpus": Text(str(len(host.gpus)) if host.gpus else "", style=style),
        "util": Text(fmt.percent(host.gpu_utilization_mean, missing="") if host.up else "", style=style),
        "gpu_mem": Text(fmt.used_of(used, total) if host.up and used is not None else "", style=style),
        "sm": Text(fmt.percent(host.sm_active_mean * 100, missing="") if host.up and host.sm_active_mean is not None
                   else "", style=style),
        "containers": Text(str(host.containers_running) if host.up else "", style=style),
        "instance": literal(host.instance, style="dim"),
    }


class HostsTable(KeyedTable):
    COLUMNS = HOST_COLUMNS


class ConsumersTable(KeyedTable):
    COLUMNS = CONSUMER_COLUMNS


class FindingsTable(KeyedTable):
    COLUMNS = FINDING_COLUMNS


class FleetHeader(Static):
    """Hosts answering and down, the Prometheus read, when; or why nothing could be read."""

    def show(self, snapshot: FleetSnapshot | None, error: str | None, prometheus: str) -> None:
        line = Text()
        line.append("mltop fleet", style="bold")
        line.append(f" · {prometheus}")
        if snapshot is not None:
            line.append(f" · {snapshot.hosts_up} hosts up", style="green" if snapshot.hosts_up else "")
            if snapshot.hosts_down:
                line.append(f" · {snapshot.hosts_down} down", style="bold red")
            line.append(f" · {local_time(snapshot.taken_at, with_date=False)}", style="dim")
        if error:  # our message with the server's text inside it: made printable, never markup
            line.append("\n")
            line.append(printable(error), style="bold red")
        elif snapshot is not None and snapshot.errors:
            line.append("\n")
            line.append(printable(f"{len(snapshot.errors)} queries failed: {snapshot.errors[0]}"), style="yellow")
        elif snapshot is not None and not snapshot.hosts:
            from mltop.probes.fleet import NO_TARGETS

            line.append("\n")
            line.append(NO_TARGETS, style="yellow")
        self.update(line)


class FleetTableScreen(Screen):
    """A header, one keyed table and the key bar; subclasses fill the table from each fleet snapshot."""

    TABLE: type[KeyedTable] = KeyedTable
    TITLE_TEXT = ""
    # Every table's row key starts with its host's job and instance: enter opens that host.
    BINDINGS = [Binding("enter", "open_host", "Host", id="mltop.fleet.open")]
    DEFAULT_CSS = """
    FleetTableScreen #fleet-table {
        height: 1fr;
        border-top: solid $primary;
        border-title-align: left;
    }
    FleetTableScreen #fleet-header {
        height: auto;
        padding: 0 1;
    }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield FleetHeader(id="fleet-header")
            yield self.TABLE(id="fleet-table")
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one(KeyedTable)
        table.border_title = self.TITLE_TEXT
        table.focus()
        fleet = self.fleet_app
        if fleet.snapshot is not None or fleet.error:
            self.show(fleet.snapshot, fleet.error)

    @property
    def fleet_app(self) -> "FleetApp":
        app = self.app
        assert isinstance(app, FleetApp)
        return app

    @property
    def table(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    def show(self, snapshot: FleetSnapshot | None, error: str | None) -> None:
        self.query_one(FleetHeader).show(snapshot, error, self.fleet_app.prometheus)
        if snapshot is not None:
            rows, order = self.rows(snapshot)
            self.table.sync(rows, order)

    def rows(self, snapshot: FleetSnapshot) -> tuple[dict[str, dict[str, Text]], list[str]]:
        raise NotImplementedError

    def action_open_host(self) -> None:
        key = self.table.cursor_key
        if key is not None:
            self.fleet_app.open_host(_key_of(key))

    def on_keyed_table_row_selected(self, message: KeyedTable.RowSelected) -> None:
        self.fleet_app.open_host(_key_of(message.key))


class HostsScreen(FleetTableScreen):
    TABLE = HostsTable
    TITLE_TEXT = "Hosts"
    BINDINGS = [
        Binding("s", "sort_next", "Sort", id="mltop.fleet.sort"),
        Binding("S", "sort_reverse", "Reverse", show=False, id="mltop.fleet.sort_reverse"),
        Binding("slash", "filter", "Filter", id="mltop.fleet.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="mltop.fleet.clear_filter"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort_key = "worst"
        self.reverse = False
        self.filter_text = ""

    def rows(self, snapshot: FleetSnapshot):
        hosts = sorted_hosts(snapshot)
        if self.sort_key != "worst":
            hosts.sort(key=HOST_SORTS[self.sort_key])
        if self.reverse:
            hosts.reverse()
        if self.filter_text:
            needle = self.filter_text.lower()
            hosts = [h for h in hosts if needle in h.hostname.lower() or needle in h.instance.lower()
                     or any(needle in f.code for f in h.findings)]
        rows = {_host_key(h): host_cells(h, snapshot.taken_at) for h in hosts}
        self.table.border_title = f"Hosts ({len(hosts)}) · sort: {self.sort_key}{' ↑' if self.reverse else ''}" + (
            f" · filter: {self.filter_text}" if self.filter_text else "")
        return rows, [_host_key(h) for h in hosts]

    def _refresh(self) -> None:
        self.show(self.fleet_app.snapshot, self.fleet_app.error)

    def action_sort_next(self) -> None:
        keys = list(HOST_SORTS)
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
        self._refresh()

    def action_sort_reverse(self) -> None:
        self.reverse = not self.reverse
        self._refresh()

    def action_filter(self) -> None:
        def done(value: str | None) -> None:
            if value is not None:
                self.filter_text = value.strip()
                self._refresh()
        self.app.push_screen(FilterScreen(self.filter_text), done)

    def action_clear_filter(self) -> None:
        if self.filter_text:
            self.filter_text = ""
            self._refresh()



def _host_key(h: FleetHost) -> str:
    return f"{h.job}\x00{h.instance}"


def _key_of(row_key: str) -> tuple[str, str]:
    """(job, instance) from a row key of any of the tables: `job\\0instance[\\0...]`."""
    job, instance = row_key.split("\x00")[:2]
    return (job, instance)


class ConsumersScreen(FleetTableScreen):
    """The containers (or pods) holding the most GPU memory anywhere in the fleet."""

    TABLE = ConsumersTable
    TITLE_TEXT = "Top GPU consumers"

    def rows(self, snapshot: FleetSnapshot):
        rows, order = {}, []
        for c in snapshot.consumers:
            key = f"{c.job}\x00{c.instance}\x00{c.container_id or c.container}"
            name = f"{c.namespace}/{c.pod}/{c.container}" if c.pod else c.container
            rows[key] = {
                "container": literal(name), "host": literal(c.hostname),
                "gpu_mem": Text(fmt.size(c.gpu_memory_bytes)), "sm": Text(fmt.percent(c.sm_percent)),
                "gpus": Text(str(c.gpus)), "id": literal(c.container_id[:12], style="dim"),
            }
            order.append(key)
        self.table.border_title = f"Top GPU consumers ({len(order)}), by GPU memory"
        return rows, order


class FindingsScreen(FleetTableScreen):
    """Every host's findings grouped by code, most severe code first."""

    TABLE = FindingsTable
    TITLE_TEXT = "Findings by code"

    def rows(self, snapshot: FleetSnapshot):
        rows, order = {}, []
        groups = findings_by_code(snapshot)
        for code, worst, items in groups:
            hosts = len({(f.job, f.instance) for f in items})
            for i, f in enumerate(items):
                key = f"{f.job}\x00{f.instance}\x00{code}\x00{f.container}"
                glyph, style = fmt.SEVERITY_GLYPH.get(f.severity, ("?", ""))
                rows[key] = {
                    "code": literal(f"{code} ({hosts} host{'s' if hosts != 1 else ''})" if i == 0 else "",
                                    style=style),
                    "host": literal(f.hostname), "container": literal(f.container or "(host)"),
                    "severity": Text(f"{glyph} {f.severity}", style=style),
                }
                order.append(key)
        self.table.border_title = f"Findings by code ({len(groups)} codes, {len(order)} findings)"
        return rows, order


class FilterScreen(Screen[str | None]):
    """Asks for the hosts filter (host name, instance or finding code)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="mltop.fleet.filter_cancel")]

    def __init__(self, current: str):
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        from textual.widgets import Input

        yield Static(Text("Filter hosts by name, instance or finding code (empty: all)"))
        yield Input(value=self.current, placeholder="filter", id="fleet-filter")

    def on_mount(self) -> None:
        from textual.widgets import Input

        self.query_one(Input).focus()

    def on_input_submitted(self, message) -> None:
        self.dismiss(message.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


@dataclass
class FleetView:
    """What the fleet view keeps while a host is open in the dashboard: which screen, sort and filter."""

    screen: str = "hosts"
    sort_key: str = "worst"
    reverse: bool = False
    filter_text: str = ""


class FleetApp(App):
    """Reads the fleet every `refresh_s` in a thread worker and shows it on whichever screen is open."""

    CSS_PATH = Path(__file__).resolve().parent.parent / "mltop.tcss"
    TITLE = "mltop fleet"
    BINDINGS = [
        Binding("q", "quit", "Quit", id="mltop.fleet.quit"),
        Binding("h", "view('hosts')", "Hosts", id="mltop.fleet.hosts"),
        Binding("t", "view('consumers')", "Top GPU", id="mltop.fleet.consumers"),
        Binding("f", "view('findings')", "Findings", id="mltop.fleet.findings"),
        Binding("r", "refresh_now", "Refresh", show=False, id="mltop.fleet.refresh"),
    ]
    SCREENS = {"hosts": HostsScreen, "consumers": ConsumersScreen, "findings": FindingsScreen}

    def __init__(self, reader: FleetReader, refresh_s: float = 5.0, view: "FleetView | None" = None,
                 snapshot: FleetSnapshot | None = None):
        super().__init__()
        self.view = view if view is not None else FleetView()
        self.reader = reader
        self.refresh_s = refresh_s
        self.prometheus = reader.client.display_url
        self.snapshot: FleetSnapshot | None = snapshot  # the last read, shown at once when coming back
        self.error: str | None = None
        self.reads = 0

    def on_mount(self) -> None:
        hosts = self.get_screen("hosts")
        assert isinstance(hosts, HostsScreen)
        hosts.sort_key, hosts.reverse, hosts.filter_text = (self.view.sort_key, self.view.reverse,
                                                            self.view.filter_text)
        self.push_screen("hosts")
        if self.view.screen != "hosts":
            self.push_screen(self.view.screen)
        self._read()

    @work(thread=True, exclusive=True, group="fleet-read")
    def _read(self) -> None:
        try:
            snapshot, error = self.reader.read(), None
        except PrometheusError as err:
            snapshot, error = None, str(err)
        self.call_from_thread(self._show, snapshot, error)

    def _show(self, snapshot: FleetSnapshot | None, error: str | None) -> None:
        self.reads += 1
        if snapshot is not None:
            self.snapshot = snapshot
        self.error = error  # the last good snapshot stays on screen under the error line
        screen = self.screen
        if isinstance(screen, FleetTableScreen):
            screen.show(self.snapshot, self.error)
        self.set_timer(self.refresh_s, self._read)

    def action_view(self, name: str) -> None:
        if isinstance(self.screen, FleetTableScreen) and self.screen is self.get_screen(name):
            return
        while len(self.screen_stack) > 2:
            self.pop_screen()
        if self.screen is not self.get_screen(name):
            self.switch_screen(name)

    def action_refresh_now(self) -> None:
        self._read()

    def open_host(self, key: tuple[str, str]) -> None:
        """Leave with the host: `mltop fleet` opens it in the dashboard, then comes back here."""
        if self.snapshot is None:
            return
        host = self.snapshot.host(key)
        if host is not None:
            self.view.sort_key, self.view.reverse, self.view.filter_text = self._hosts_state()
            self.view.screen = self.screen_name()
            self.exit(host)

    def _hosts_state(self) -> tuple[str, bool, str]:
        hosts = self.get_screen("hosts")
        assert isinstance(hosts, HostsScreen)
        return hosts.sort_key, hosts.reverse, hosts.filter_text

    def screen_name(self) -> str:
        for name in self.SCREENS:
            if self.screen is self.get_screen(name):
                return name
        return "hosts"
