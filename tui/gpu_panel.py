"""The GPU panel: per GPU, utilisation and memory bars with history, temperature, power, bad throttling,
and which containers use it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, VerticalScroll
from textual.widgets import Static

from mltop.probes.model import GpuSample, Snapshot

from . import format as fmt
from .gauges import HistoryGraph, Meter
from .history import History
from .sanitize import literal

# Clock-event reasons that mean the GPU is slowed by something wrong (heat, power brake, an external
# slowdown signal); the others (idle, power cap under load, application clocks) are normal operation.
BAD_THROTTLE = {
    "hw_slowdown": "HW slowdown",
    "sw_thermal_slowdown": "thermal slowdown",
    "hw_thermal_slowdown": "HW thermal slowdown",
    "hw_power_brake_slowdown": "power brake",
}


def bad_throttle_reasons(gpu: GpuSample) -> list[str]:
    return [BAD_THROTTLE[r] for r in gpu.throttle_reasons if r in BAD_THROTTLE]


def short_gpu_name(name: str) -> str:
    return name.removeprefix("NVIDIA ").removeprefix("Tesla ")


def gpu_title(gpu: GpuSample) -> Text:
    out = Text(f"{gpu.index} ", style="bold", no_wrap=True, end="")
    out.append_text(literal(short_gpu_name(gpu.name)))
    if gpu.temperature_c is not None:
        hot = gpu.temperature_c >= 85
        out.append(f" {gpu.temperature_c:.0f}°C", style="bold red" if hot else "")
    if gpu.power_w is not None:
        power = f" {gpu.power_w:.0f}"
        power += f"/{gpu.power_limit_w:.0f}W" if gpu.power_limit_w else "W"
        out.append(power)
    if bad_throttle_reasons(gpu):
        # the reasons are spelled out on the card's second line; this mark survives the one-line layout
        out.append(" ⚠", style="bold red")
    return out


def gpu_users(gpu: GpuSample) -> Text:
    """Bad throttling first, then who uses the GPU: containers by name with their memory, host PIDs."""
    out = Text(no_wrap=True, end="")
    for reason in bad_throttle_reasons(gpu):
        out.append(f"⚠ {reason} ", style="bold red")
    per_container: dict[str, int] = {}
    host_pids: list[int] = []
    for p in gpu.processes:
        if p.container_name is None:
            host_pids.append(p.host_pid)
            continue
        per_container[p.container_name] = per_container.get(p.container_name, 0) + (p.gpu_memory_bytes or 0)
    parts: list[Text] = []
    for name, memory in sorted(per_container.items(), key=lambda kv: -kv[1]):
        part = literal(name)
        if memory:
            part.append(f" {fmt.size(memory)}", style="dim")
        parts.append(part)
    if host_pids:
        parts.append(Text("host pid " + ",".join(str(p) for p in host_pids[:3]), style="dim"))
    if not parts and not gpu.processes:
        parts.append(Text("idle", style="dim"))
    out.append_text(Text(", ").join(parts))
    if "processes" in gpu.unavailable:
        out.append(f" processes: {gpu.unavailable['processes']}", style="dim")
    return out


class GpuCard(Grid):
    """One GPU in two lines: name/temperature/power with meters, then users with the history graphs."""

    def __init__(self, gpu: GpuSample):
        super().__init__(classes="gpu-card")
        self.uuid = gpu.uuid

    def compose(self) -> ComposeResult:
        yield Static(classes="gpu-title")
        yield Meter("util", classes="gpu-util")
        yield Meter("mem", classes="gpu-mem")
        yield Static(classes="gpu-users")
        yield HistoryGraph(classes="gpu-util-history")
        yield HistoryGraph(classes="gpu-mem-history")

    def show(self, gpu: GpuSample, history: History) -> None:
        if not self.children:
            # Mounted but not composed yet: the second sweep comes 0.2 s after the first, which on a busy
            # host can be before the card's children exist. Show it once they do.
            self.call_after_refresh(self.show, gpu, history)
            return
        _update_static(self.query_one(".gpu-title", Static), gpu_title(gpu))
        _update_static(self.query_one(".gpu-users", Static), gpu_users(gpu))
        util = gpu.utilization_percent
        self.query_one(".gpu-util", Meter).set_value(
            util / 100 if util is not None else None, f"{fmt.percent(util)}%"
        )
        used, total = gpu.memory_used_bytes, gpu.memory_total_bytes
        self.query_one(".gpu-mem", Meter).set_value(
            used / total if used is not None and total else None, fmt.used_of(used, total)
        )
        self.query_one(".gpu-util-history", HistoryGraph).set_samples(
            history.gpu(gpu.uuid, "utilization_percent"), 100.0
        )
        self.query_one(".gpu-mem-history", HistoryGraph).set_samples(
            history.gpu(gpu.uuid, "memory_used_bytes"), float(total) if total else None
        )


def _update_static(widget: Static, content: Text) -> None:
    if getattr(widget, "_shown_text", None) != (content.plain, tuple(content.spans)):
        widget._shown_text = (content.plain, tuple(content.spans))  # type: ignore[attr-defined]
        widget.update(content)


class GpuPanel(VerticalScroll):
    """All GPUs, one card each, keyed by uuid; hidden when there are none.

    When two lines a GPU do not fit in the panel's share of the screen (8 GPUs at 80x24), each card keeps
    its first line only: name, temperature, power, bad throttling and the meters. `g` shows them in full.
    """

    can_focus = False
    ALLOW_MAXIMIZE = True  # `g`: the GPUs full screen, with taller history graphs
    SHARE = 0.4  # of the screen's height, as max-height in mltop.tcss
    _count = 0

    def on_resize(self) -> None:
        self.fit()

    def fit(self) -> None:
        rows = int(self.screen.size.height * self.SHARE) - 1  # the border line
        self.set_class(self._count * 2 > rows and not self.has_class("-maximized"), "-compact")

    def show(self, snapshot: Snapshot, history: History) -> None:
        self.display = bool(snapshot.gpus)
        self._count = len(snapshot.gpus)
        self.fit()
        cards = {card.uuid: card for card in self.query(GpuCard)}
        wanted = [g.uuid for g in snapshot.gpus]
        for uuid, card in cards.items():
            if uuid not in wanted:
                card.remove()
        title = f"GPUs ({len(snapshot.gpus)})"
        if self.border_title != title:
            self.border_title = title
        for gpu in snapshot.gpus:
            card = cards.get(gpu.uuid)
            if card is None:
                card = GpuCard(gpu)
                self.mount(card)
                # its children exist once mounted; show it then
                self.call_after_refresh(card.show, gpu, history)
            else:
                card.show(gpu, history)
