"""The GPU panel: per GPU, utilisation and memory bars with history, temperature, power, bad throttling,
health problems (Xid, ECC, remap, PCIe link, NVLink, fabric), the NVLinks up (`NVL 17/18 ✗1`), whether it is shared (MPS, time-sliced) and which containers use
it; where the GPU has GPU Performance Metrics, SM active and tensor active beside utilisation (and their graphs
in the GPUs full screen, `g`)."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, VerticalScroll
from textual.widgets import Static

from mltop.probes.model import GpuSample, Snapshot

from .. import format as fmt
from mltop.probes.history import History

from .gauges import LabelledGraph, Meter
from .gpu_sharing import SHARED_MARK, sharing_line
from ..sanitize import literal

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


XID_SHOWN_S = 3600.0  # Xids this recent are marked on the card (the doctor explains older ones too)


def health_problems(gpu: GpuSample, now: float | None = None) -> list[str]:
    """Short words for what is wrong with a GPU's health: recent Xid, ECC, pending/failed remap, PCIe link."""
    now = time.time() if now is None else now
    out = []
    recent = [e for e in gpu.xid_events if now - e.time <= XID_SHOWN_S]
    if recent:
        out.append(f"Xid {recent[-1].xid}" + (f" x{len(recent)}" if len(recent) > 1 else ""))
    if gpu.ecc_volatile_uncorrected:
        out.append(f"ECC {gpu.ecc_volatile_uncorrected} uncorrectable")
    if gpu.remapped_rows_failed:
        out.append("row remap failed")
    elif gpu.remapped_rows_pending or gpu.retired_pages_pending:
        out.append("reset pending")
    gen, gen_max, width, width_max = gpu.pcie_generation, gpu.pcie_generation_max, gpu.pcie_width, gpu.pcie_width_max
    busy = (gpu.utilization_percent or 0) >= 10
    if busy and gen and gen_max and width and width_max and (gen < gen_max or width < width_max):
        out.append(f"PCIe Gen{gen} x{width} of Gen{gen_max} x{width_max}")
    down = [link.link for link in gpu.nvlinks if not link.active]
    if down and len(down) < len(gpu.nvlinks):  # all down is the fabric's matter: the fabric word says it
        out.append("NVLink " + ",".join(map(str, down[:4])) + ("…" if len(down) > 4 else "") + " down")
    if gpu.nvlink_errors is not None and gpu.nvlink_errors.rises:
        out.append("NVLink errors rising")
    fabric = gpu.fabric
    if fabric is not None and fabric.state in ("not_started", "in_progress"):
        out.append(f"fabric {fabric.state.replace('_', ' ')}")
    elif fabric is not None and fabric.state == "completed" and fabric.status:
        out.append(f"fabric failed ({fabric.status_text})")
    return out


def nvlink_text(gpu: GpuSample, tight: bool = False) -> Text:
    """" NVL 17/18 ✗1": links up of the GPU's links, and how many are down (" NVL17/18✗1" when `tight`);
    empty without NVLink."""
    out = Text(no_wrap=True, end="")
    if not gpu.nvlinks:
        return out
    down = len(gpu.nvlinks) - gpu.nvlinks_active
    gap = "" if tight else " "
    out.append(f" NVL{gap}{gpu.nvlinks_active}/{len(gpu.nvlinks)}", style="dim" if not down else "")
    if down:
        out.append(f"{gap}✗{down}", style="bold red")
    return out


def short_gpu_name(name: str) -> str:
    return name.removeprefix("NVIDIA ").removeprefix("Tesla ")


def gpu_title(gpu: GpuSample, width: int | None = None) -> Text:
    """Index, name, temperature, power, NVLinks up and the marks. Given the `width` it has (one line of a card at
    80 columns is ~34), it sheds what matters least until it fits: the power limit, the name's last word (the
    memory type), the spaces of the NVLink count, the temperature."""
    for step in range(5):
        out = _title(gpu, limit=step < 1, full_name=step < 2, tight=step >= 3, temperature=step < 4)
        if width is None or width <= 0 or out.cell_len <= width or not gpu.nvlinks:
            break  # (a GPU without NVLink keeps the title it always had: the Static crops its end)
    return out


def _title(gpu: GpuSample, limit: bool, full_name: bool, tight: bool, temperature: bool) -> Text:
    out = Text(f"{gpu.index} ", style="bold", no_wrap=True, end="")
    name = short_gpu_name(gpu.name)
    if not full_name and name.count(" ") >= 2:
        name = name.rsplit(" ", 1)[0]
    out.append_text(literal(name))
    if gpu.temperature_c is not None and temperature:
        hot = gpu.temperature_c >= 85
        out.append(f" {gpu.temperature_c:.0f}°C", style="bold red" if hot else "")
    if gpu.power_w is not None:
        power = f" {gpu.power_w:.0f}"
        power += f"/{gpu.power_limit_w:.0f}W" if gpu.power_limit_w and limit else "W"
        out.append(power)
    out.append_text(nvlink_text(gpu, tight))
    if gpu.mig_devices:
        out.append(f" MIG×{len(gpu.mig_devices)}", style="dim")
    if bad_throttle_reasons(gpu):
        # the reasons are spelled out on the card's second line; this mark survives the one-line layout
        out.append(" ⚠", style="bold red")
    if health_problems(gpu):
        out.append(" ✖", style="bold red")  # likewise for health: Xid, ECC, remap, PCIe, NVLink, fabric
    if gpu.sharing:  # the users line says how; this mark survives the one-line layout
        out.append(f" {SHARED_MARK}{max(len(s.sharers) for s in gpu.sharing)}", style="bold yellow")
    return out


def util_text(gpu: GpuSample) -> str:
    """Utilisation, and beside it what GPM says the SMs and tensor cores did: "97% SM 14% TC 0%"."""
    out = f"{fmt.percent(gpu.utilization_percent)}%"
    gpm = gpu.gpm
    if gpm is not None:
        if gpm.sm_active_percent is not None:
            out += f" SM {gpm.sm_active_percent:.0f}%"
        if gpm.tensor_active_percent is not None:
            out += f" TC {gpm.tensor_active_percent:.0f}%"
    return out


def gpu_users(gpu: GpuSample) -> Text:
    """Bad throttling first, then who uses the GPU: containers by name with their memory, host PIDs."""
    out = Text(no_wrap=True, end="")
    for problem in health_problems(gpu):
        out.append(f"✖ {problem} ", style="bold red")
    for reason in bad_throttle_reasons(gpu):
        out.append(f"⚠ {reason} ", style="bold red")
    if gpu.sharing:  # shared: the mode, how many, their memory and SM together (who: the container detail)
        out.append_text(sharing_line(gpu.sharing)).append("  ")
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
            part.append(" ").append(fmt.size(memory), style="dim")
        parts.append(part)
    if host_pids:
        parts.append(Text("host pid " + ",".join(str(p) for p in host_pids[:3]), style="dim"))
    if not parts and not gpu.processes:
        parts.append(Text("idle", style="dim"))
    out.append_text(Text(", ").join(parts))
    if "processes" in gpu.unavailable:
        out.append(" ").append(f"processes: {gpu.unavailable['processes']}", style="dim")
    return out


class GpuCard(Grid):
    """One GPU in two lines: name/temperature/power with meters, then users with the history graphs.

    In the GPUs full screen (`g`) each card takes an equal share of the height and its graphs grow to
    fill it, each under a caption with its scale and time span."""

    def __init__(self, gpu: GpuSample):
        super().__init__(classes="gpu-card")
        self.uuid = gpu.uuid

    def compose(self) -> ComposeResult:
        yield Static(classes="gpu-title")
        yield Meter("util", classes="gpu-util")
        yield Meter("mem", classes="gpu-mem")
        yield Static(classes="gpu-users")
        yield LabelledGraph(classes="gpu-util-history")
        yield LabelledGraph(classes="gpu-mem-history")

    def show(self, gpu: GpuSample, history: History, interval_s: float | None = None) -> None:
        if not self.children:
            # Mounted but not composed yet: the second sweep comes 0.2 s after the first, which on a busy
            # host can be before the card's children exist. Show it once they do.
            self.call_after_refresh(self.show, gpu, history, interval_s)
            return
        title = self.query_one(".gpu-title", Static)
        _update_static(title, gpu_title(gpu, title.size.width))
        _update_static(self.query_one(".gpu-users", Static), gpu_users(gpu))
        util = gpu.utilization_percent
        self.query_one(".gpu-util", Meter).set_value(util / 100 if util is not None else None, util_text(gpu))
        used, total = gpu.memory_used_bytes, gpu.memory_total_bytes
        self.query_one(".gpu-mem", Meter).set_value(
            used / total if used is not None and total else None, fmt.used_of(used, total)
        )
        span = dict(interval_s=interval_s, capacity=history.length)
        self.query_one(".gpu-util-history", LabelledGraph).show(
            Text("util", end=""), history.gpu(gpu.uuid, "utilization_percent"), 100.0,
            lambda top: f"{top:.0f}%", **span)
        self.query_one(".gpu-mem-history", LabelledGraph).show(
            Text("mem used", end=""), history.gpu(gpu.uuid, "memory_used_bytes"),
            float(total) if total else None, fmt.size, **span)
        self.set_class(gpu.gpm is not None, "-gpm")
        if gpu.gpm is not None:
            if not self.query(".gpu-sm-history"):
                # GPM graphs, mounted for a GPU that has GPM: a third row in the GPUs full screen only (mltop.tcss)
                self.mount(Static(classes="gpu-gpm-gap"), LabelledGraph(classes="gpu-sm-history"),
                           LabelledGraph(classes="gpu-tensor-history"))
            for metric, label in (("sm_active_percent", "SM active"), ("tensor_active_percent", "tensor active")):
                graph = self.query_one(f".gpu-{metric.split('_')[0]}-history", LabelledGraph)
                graph.show(Text(label, end=""), history.gpu(gpu.uuid, metric), 100.0, lambda top: f"{top:.0f}%",
                           **span)


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
    FULL_SCREEN_MIN = 5  # lines a GPU in the full screen: title, caption, two graph lines, a gap; else it scrolls
    _count = 0

    def on_resize(self) -> None:
        self.fit()

    def fit(self) -> None:
        maximized = self.has_class("-maximized")
        rows = int(self.screen.size.height * self.SHARE) - 1  # the border line
        self.set_class(self._count * 2 > rows and not maximized, "-compact")
        # Full screen: each GPU an equal share of the height, the first ones a line more when it does not
        # divide. Set here rather than as `1fr` in the stylesheet, which gives every card the whole height
        # once the cards' minimum no longer fits.
        cards = list(self.query(GpuCard))
        height = self.scrollable_content_region.height
        for i, card in enumerate(cards):
            share = None  # the stylesheet's two lines
            if maximized and height > 0:
                base, extra = divmod(height, len(cards))
                least = self.FULL_SCREEN_MIN + (3 if card.has_class("-gpm") else 0)  # + a GPM caption and graph
                share = max(base + (1 if i < extra else 0), least)
            if getattr(card, "_share", None) != share:
                card._share = share  # type: ignore[attr-defined]
                card.styles.height = share

    def show(self, snapshot: Snapshot, history: History, interval_s: float | None = None) -> None:
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
                self.call_after_refresh(card.show, gpu, history, interval_s)
            else:
                card.show(gpu, history, interval_s)
