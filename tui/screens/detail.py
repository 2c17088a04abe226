"""Container detail (`enter`): history graphs, the configuration that matters for ML, and the log tail."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from mltop.diagnostics.checks.pod_restarts import exits as pod_exits
from mltop.diagnostics.workload import classify as classify_workload
from mltop.probes.model import ContainerConfig, ContainerSample, Snapshot

from .. import format as fmt
from ..app_api import mltop_app
from ..widgets.containers_table import status_text
from ..widgets.gauges import LabelledGraph
from .logs import LogPane, LogsScreen
from ..sanitize import literal, one_line
from ..widgets.key_bar import KeyBar


def _cpu_limit(cfg: ContainerConfig, c: ContainerSample) -> str:
    parts = []
    if c.cpu_limit_cores:
        parts.append(f"{c.cpu_limit_cores:g} CPUs")
    if cfg.cpuset_cpus:
        parts.append(f"cpuset {cfg.cpuset_cpus}")
    return ", ".join(parts) or "none"


def _device_requests(cfg: ContainerConfig) -> str:
    out = []
    for r in cfg.device_requests:
        what = "all" if r.count == -1 else (",".join(r.device_ids) or str(r.count))
        caps = "+".join(",".join(c) for c in r.capabilities)
        out.append(f"{r.driver or 'nvidia'}: {what}" + (f" [{caps}]" if caps else ""))
    return "; ".join(out) or "none"


def config_text(c: ContainerSample) -> Text:
    """What `docker inspect` says that matters for ML, one fact a line. All values shown literally."""
    cfg = c.config
    out = Text(no_wrap=False, end="")

    def line(label: str, value: object, style: str = "") -> None:
        if out.plain:
            out.append("\n")
        out.append(f"{label:<10}", style="bold")
        out.append_text(literal(value, style))

    def section(title: str) -> None:
        out.append("\n\n" if out.plain else "")
        out.append(title, style="bold underline")

    line("image", c.image)
    status = status_text(c)
    line("status", status + ("  (killed by the OOM killer)" if cfg.oom_killed else ""),
         "bold red" if cfg.oom_killed else "")
    if cfg.error:
        line("error", cfg.error, "red")
    line("started", cfg.started_at or fmt.MISSING)
    if cfg.finished_at:
        line("finished", cfg.finished_at)
    if c.kubernetes is not None:  # the kubelet restarts it (the pod's restartPolicy, which CRI does not say)
        line("restarts", str(cfg.restart_count), "yellow" if cfg.restart_count else "")
        exits = last_exits(c)
        if exits:
            line("exits", exits)
    else:
        line("restarts", f"{cfg.restart_count} (policy {cfg.restart_policy or 'no'})")
    if cfg.entrypoint:
        line("entrypoint", one_line(" ".join(cfg.entrypoint)))
    line("command", one_line(" ".join(cfg.command)) or fmt.MISSING)

    section("Limits")
    line("cpu", _cpu_limit(cfg, c))
    line("memory", fmt.size(c.memory_limit_bytes or cfg.memory_limit_bytes, missing="none"))
    for u in cfg.ulimits:
        line("ulimit", f"{u.get('Name')}={u.get('Soft')}:{u.get('Hard')}")
    for kind, throttles in cfg.blkio_throttles.items():
        for t in throttles:
            line("blkio", f"{kind} {t.get('Path')} {t.get('Rate')}")

    section("GPU and IPC")
    line("requests", _device_requests(cfg))
    if c.gpus:  # what NVML says its processes use, whatever was requested
        line("in use", ", ".join(f"GPU {g.index} {fmt.size(g.memory_bytes, missing='?')}" for g in c.gpus))
    line("runtime", cfg.runtime or "default")
    shm = fmt.size(cfg.shm_size_bytes, missing="default (64M)")
    if c.shm_bytes is not None:
        shm += f", {fmt.size(c.shm_bytes)} in use"
    line("shm", shm)
    line("ipc", cfg.ipc_mode or fmt.MISSING)
    line("pid", cfg.pid_mode or "private")
    line("network", cfg.network_mode or fmt.MISSING)
    if cfg.privileged:
        line("privileged", "yes", "bold yellow")
    if cfg.cap_add:
        line("cap add", ", ".join(cfg.cap_add))

    section("Mounts")
    for m in cfg.mounts:
        line(m.type, f"{m.source} → {m.destination}" + (" (ro)" if m.read_only else ""))
    if not cfg.mounts:
        line("", "none")

    section("Environment")
    for name, value in cfg.env:
        line("", f"{name}={value}")

    section("Labels")
    for name, value in sorted(cfg.labels.items()):
        line("", f"{name}={value}")
    if c.kubernetes is not None:
        pod_text(c, line, section)
    return out


def last_exits(c: ContainerSample, shown: int = 3) -> str:
    """How a pod container's last attempts ended, newest first, in one line: `#4 exit 3 Error 07:21:58, …`."""
    ended = pod_exits(c)
    words = [f"#{a.attempt} exit {a.exit_code}" + (f" {a.reason}" if a.reason else "")
             + (f" {a.finished_at[11:19]}" if a.finished_at and len(a.finished_at) >= 19 else "")
             for a in ended[:shown]]
    return ", ".join(words) + (f" (+{len(ended) - shown} earlier)" if len(ended) > shown else "")


def pod_text(c: ContainerSample, line, section) -> None:
    """The pod a container belongs to: namespace, pod, UID, QoS class, its labels and annotations."""
    k, cfg = c.kubernetes, c.config
    section("Pod")
    line("namespace", k.namespace)
    line("pod", k.pod)
    line("container", k.container)
    line("uid", k.pod_uid)
    line("qos", k.qos or "–")
    line("runtime", c.runtime or "–")
    if cfg.log_path:
        line("log", cfg.log_path)
    section("Pod labels")
    for name, value in sorted(cfg.pod_labels.items()):
        line("", f"{name}={value}")
    section("Pod annotations")
    for name, value in sorted({**cfg.pod_annotations, **cfg.annotations}.items()):
        line("", f"{name}={value}")


def _percent_scale(ceiling: float) -> str:
    return f"{ceiling:.0f}%"


def _size_scale(ceiling: float) -> str:
    return fmt.size(ceiling)


class GraphBox(LabelledGraph):
    """One metric's history graph, its caption saying the current value, the scale and the time span."""

    def __init__(self, metric: str):
        super().__init__(classes="graph-box")
        self.metric = metric


class ContainerDetailScreen(Screen):
    """One container: graphs over the last minutes, its ML-relevant configuration, its log."""

    BINDINGS = [
        Binding("escape", "back", "Back", id="mltop.detail.back"),
        Binding("l", "logs", "Full log", id="mltop.detail.logs"),
        Binding("slash", "search_log", "Search log", id="mltop.detail.search"),
    ]
    mltop = mltop_app()

    def __init__(self, container_id: str):
        super().__init__()
        self.container_id = container_id
        self._config_signature: str | None = None
        self._events_shown: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(classes="screen-title")
        with Grid(id="detail-graphs"):
            for metric in ("cpu", "memory", "gpu", "gpu_memory"):
                yield GraphBox(metric)
        yield Static(id="detail-events")  # the recorded events of this container, when there is a recording
        with Horizontal(id="detail-body"):
            with VerticalScroll(id="detail-config"):
                yield Static(id="config")
            yield LogPane(self.container_id, poll_s=self.mltop.interval, id="detail-log")
        yield KeyBar()

    def on_mount(self) -> None:
        if not self.mltop.source.live:  # replay: logs are not recorded
            self.query_one(LogPane).border_title = "log as it is now (logs are not recorded)"
        self.show_snapshot(self.mltop.snapshot)
        self.query_one("#detail-config").focus()

    def on_resize(self) -> None:
        # Config and log side by side when there is room, stacked on a narrow terminal.
        self.query_one("#detail-body").set_class(self.size.width < 110, "-stacked")

    def show_snapshot(self, snapshot: Snapshot | None) -> None:
        try:
            title_widget = self.query_one(".screen-title", Static)
        except NoMatches:
            return  # a sweep landed between push_screen and compose: on_mount shows the newest snapshot
        container = snapshot.container(self.container_id) if snapshot is not None else None
        title = Text(no_wrap=True, end="")
        if container is None:
            title.append(self.container_id[:12], style="bold")
            title.append("  ").append("gone: the container was removed", style="dim")
            title_widget.update(title)
            return
        title.append_text(literal(container.name, "bold"))
        # Spaces between styled runs go in plain runs of their own: a styled run that begins with spaces loses
        # them in some SVG renderers (rsvg drew `memory 640Kno limit`).
        title.append("  ").append(container.short_id, style="dim").append("  ")
        title.append(status_text(container), style="" if container.running else "bold red")
        title_widget.update(title)
        self._show_graphs(snapshot, container)
        self._show_events(snapshot)
        config = config_text(container)
        if config.plain != self._config_signature:
            self._config_signature = config.plain
            self.query_one("#config", Static).update(config)

    def _show_graphs(self, snapshot: Snapshot, c: ContainerSample) -> None:
        history = self.mltop.history
        span = dict(interval_s=self.mltop.interval, capacity=history.length)
        boxes = {box.metric: box for box in self.query(GraphBox)}
        # 100% is one core (as `docker stats` counts); without a limit the scale grows to the busiest sample.
        cpu_samples = history.container(c.id, "cpu_percent")
        cpu_ceiling = max(100.0, (c.cpu_limit_cores or 0) * 100, *(s for s in cpu_samples if s is not None))
        label = Text(f"CPU {fmt.percent(c.cpu_percent)}%", style="bold", end="")
        label.append("  ").append(f"of {c.cpu_limit_cores:g} CPUs" if c.cpu_limit_cores else "no limit", style="dim")
        boxes["cpu"].show(label, cpu_samples, cpu_ceiling, _percent_scale, **span)

        label = Text(f"memory {fmt.used_of(c.memory_bytes, c.memory_limit_bytes)}", style="bold", end="")
        if c.memory_limit_bytes is None:
            label.append("  ").append("no limit", style="dim")
        boxes["memory"].show(label, history.container(c.id, "memory_bytes"),
                             float(c.memory_limit_bytes) if c.memory_limit_bytes else None, _size_scale, **span)

        # No GPU on the host and none in use: the GPU graphs would only take room.
        for metric in ("gpu", "gpu_memory"):
            boxes[metric].display = bool(snapshot.gpus or c.gpus)
        gpu_totals = {g.index: g.memory_total_bytes for g in snapshot.gpus}
        if c.gpus:
            used = ",".join(str(g.index) for g in c.gpus)
            sm = fmt.percent(c.gpu_sm_percent)
            label = Text(f"GPU {used}  SM {sm}%", style="bold", end="")
            workload = classify_workload(c, snapshot, previous=self.mltop.previous_snapshot)
            if workload is not None:  # what holds the job back, and why (thresholds named)
                # separating spaces in unstyled runs: some SVG renderers drop a styled run's leading spaces
                label.append("  ").append(workload.kind, style="bold yellow" if workload.kind != "gpu" else "green")
                label.append("  ").append("; ".join(workload.reasons[1:] or workload.reasons), style="dim")
        else:
            label = Text("GPU", style="bold", end="")
            label.append("  ").append("none in use" + ("  (requests GPUs)" if c.config.requests_gpus else ""),
                                      style="dim")
        boxes["gpu"].show(label, history.container(c.id, "gpu_percent"), 100.0, _percent_scale, **span)

        total = sum(gpu_totals.get(g.index) or 0 for g in c.gpus) or None
        label = Text(f"GPU memory {fmt.used_of(c.gpu_memory_bytes, total)}" if c.gpus else "GPU memory",
                     style="bold", end="")
        boxes["gpu_memory"].show(label, history.container(c.id, "gpu_memory_bytes"),
                                 float(total) if total else None, _size_scale, **span)

    def _show_events(self, snapshot: Snapshot) -> None:
        from .timeline import container_events_text

        text = container_events_text(self.mltop, self.container_id, snapshot)
        widget = self.query_one("#detail-events", Static)
        widget.display = text is not None
        if text is not None and text.plain != self._events_shown:
            self._events_shown = text.plain
            widget.update(text)

    def action_back(self) -> None:
        if not self.query_one(LogPane).clear_search():
            self.app.pop_screen()

    def action_logs(self) -> None:
        self.app.push_screen(LogsScreen(self.container_id))

    def action_search_log(self) -> None:
        self.query_one(LogPane).action_search()
