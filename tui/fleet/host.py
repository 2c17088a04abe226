"""One host of the fleet, as Prometheus last saw it: its GPUs, the containers holding GPU memory, its findings.
Nothing here reaches the host: what needs it (actions, logs, a live doctor) says the command to run there."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from mltop.probes.fleet import FleetHost, FleetSnapshot

from .. import format as fmt
from ..sanitize import literal
from ..widgets.key_bar import KeyBar
from .document import severity_counts


def ssh_hint(host: FleetHost) -> str:
    return f"ssh -t {host.hostname} mltop"


def host_text(host: FleetHost, snapshot: FleetSnapshot) -> Text:
    out = Text()
    out.append_text(literal(host.hostname, style="bold"))
    out.append(f"  {host.instance} (job {host.job})", style="dim")
    out.append("\n")
    if host.up:
        age = f", last sweep {snapshot.taken_at - host.last_sweep:.0f} s ago" if host.last_sweep else ""
        out.append(f"agent up{age}", style="green")
    else:
        seen = (f", last seen {fmt_time(host.last_sweep)}" if host.last_sweep is not None else ", never seen")
        out.append(f"agent down{seen}", style="bold red")
    counts = severity_counts(host)
    out.append(f" · {host.containers_running} containers running · findings: "
               f"{counts['critical']} critical, {counts['warning']} warning, {counts['info']} info\n\n")

    out.append("GPUs\n", style="bold")
    if not host.gpus:
        out.append("  none reported\n", style="dim")
    for g in host.gpus:
        sm = f"  SM active {g.sm_active * 100:.0f}%" if g.sm_active is not None else ""
        out.append(f"  {g.index:>2} ")
        out.append_text(literal(g.model or "GPU"))
        out.append(f"  util {fmt.percent(g.utilization_percent)}%{sm}  mem "
                   f"{fmt.used_of(g.memory_used_bytes, g.memory_total_bytes)}  ")
        out.append(g.uuid + "\n", style="dim")

    consumers = [c for c in snapshot.consumers if (c.job, c.instance) == host.key]
    out.append("\nContainers on GPUs\n", style="bold")
    if not consumers:
        out.append("  none\n", style="dim")
    for c in consumers:
        name = f"{c.namespace}/{c.pod}/{c.container}" if c.pod else c.container
        out.append("  ")
        out.append_text(literal(name))
        out.append(f"  GPU mem {fmt.size(c.gpu_memory_bytes)}  SM {fmt.percent(c.sm_percent)}%  on {c.gpus} GPU(s)\n")

    out.append("\nFindings\n", style="bold")
    if not host.findings:
        out.append("  none\n" if host.up else "  unknown while the agent is down\n", style="dim")
    for f in host.findings:
        glyph, style = fmt.SEVERITY_GLYPH.get(f.severity, ("?", ""))
        out.append(f"  {glyph} {f.severity:<8} ", style=style)
        out.append_text(literal(f.code))
        if f.container:
            out.append("  ")
            out.append_text(literal(f.container, style="dim"))
        out.append("\n")
    out.append("\nRead from Prometheus: actions, logs and the doctor's evidence need the host itself: ", style="dim")
    out.append_text(literal(ssh_hint(host), style="bold"))
    return out


def fmt_time(t: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


class FleetHostScreen(Screen):
    """A host's figures from the last fleet read; refreshed with the fleet."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="mltop.fleet.host_back"),
        *(Binding(key, "refused", show=False, id=f"mltop.fleet.host_refuse_{key}") for key in "npfdl"),
    ]

    def __init__(self, host: FleetHost, snapshot: FleetSnapshot):
        super().__init__()
        self.host = host
        self.snapshot = snapshot

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(host_text(self.host, self.snapshot), id="fleet-host")
        yield KeyBar()

    def show_fleet(self, snapshot: FleetSnapshot | None, error: str | None) -> None:
        if snapshot is None:
            return
        host = snapshot.host(self.host.key)
        if host is not None:
            self.host, self.snapshot = host, snapshot
            self.query_one("#fleet-host", Static).update(host_text(host, snapshot))

    def action_refused(self) -> None:
        self.notify(f"The fleet view reads Prometheus and never acts on a host: run `{ssh_hint(self.host)}` "
                    "for actions, logs and the doctor", severity="warning", timeout=6)
