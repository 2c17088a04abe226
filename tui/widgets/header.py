"""The header: which host and engine we watch, driver and CUDA, what mltop itself costs, and each unavailable
source with why. The first line fits the width: facts take shorter forms (or go) before it wraps."""

from __future__ import annotations

import textwrap

from rich.text import Text
from textual.widgets import Static

from mltop.probes.model import Snapshot

from .. import format as fmt
from ..sanitize import clip, literal


def problems(snapshot: Snapshot, extra: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(source, reason) for every source that is not giving data, in the probes' own words."""
    host = snapshot.host
    out = []
    if host.engine_down:
        out.append(("engine", host.engine.error or host.engine.status))
    if host.no_container_source:  # --docker-host none and no CRI: nothing lists containers, by choice
        out.append(("sources", host.no_container_source))
    for source in host.sources:
        if source.kind != "docker" and not source.ok and not source.quiet:
            out.append(("kubelet" if source.kind == "pod-resources" else "CRI", source.error or source.status))
    if not host.nvml.ok and host.nvml.status != "disabled":
        out.append(("GPU", host.nvml.error or host.nvml.status))
    for gpu in snapshot.gpus:
        for field, reason in gpu.unavailable.items():
            if field in ("utilization_percent", "memory_used_bytes", "processes"):
                out.append((f"GPU {gpu.index}", f"{field.replace('_', ' ')}: {reason}"))
    for note in host.limitations:
        out.append(("view", note))
    for note in extra:
        out.append(("mltop", note))
    return out


class Fact:
    """One fact of the first line, in the forms it can take, longest first; an empty form leaves it out."""

    def __init__(self, key: str, *forms: Text):
        self.key = key
        self.forms = forms
        self.level = 0

    @property
    def text(self) -> Text:
        return self.forms[min(self.level, len(self.forms) - 1)]


# How the first line gives way on a narrow terminal, one step at a time until it fits: (fact, form). What is
# left at the end is what matters at 80 columns: host, engine state, driver/CUDA, the running count, and
# mltop's own cost in its short form.
SHRINK_STEPS = (
    ("cost", 1), ("engine", 1), ("cost", 2), ("engine", 2), ("interval", 1), ("rec", 1), ("running", 1),
    ("gpu", 1), ("engine", 3), ("host", 1), ("brand", 1), ("cost", 3), ("gpu", 2), ("rec", 2), ("host", 2),
)


def recorder_fact(summary: str) -> Fact:
    """The flight recorder's state (RecorderStatus.summary()): "rec ✓" goes on a narrow screen, a loss stays."""
    if summary == "rec ✓":
        return Fact("rec", Text(summary, style="dim green"), Text(summary, style="dim green"), Text(""))
    style = "bold red" if summary.startswith("rec ✗") else "bold yellow"
    return Fact("rec", Text(summary, style=style), Text(" ".join(summary.split()[:2]), style=style))


def cost_forms(snapshot: Snapshot) -> tuple[Text, ...]:
    """mltop's own cost: CPU, RSS, the last sweep and the slowest NVML call; shorter forms for narrow sizes."""
    cost = snapshot.self_cost
    if cost is None:
        return (Text(""),)
    cpu = f"{cost.cpu_percent:.1f}%" if cost.cpu_percent is not None else fmt.MISSING + "%"
    rss = fmt.size(cost.rss_bytes)
    sweep = _ms(cost.sweep_s)
    long = f"mltop cpu {cpu} rss {rss} sweep {sweep}"
    if cost.nvml_slowest_call_s is not None:
        long += f" nvml {_ms(cost.nvml_slowest_call_s)}"
    return (
        Text(long, style="dim"),
        Text(f"mltop cpu {cpu} rss {rss} sweep {sweep}", style="dim"),
        Text(f"mltop {cpu} {rss}", style="dim"),
        Text(f"mltop {cpu}", style="dim"),
    )


def source_forms(host) -> tuple[Text, ...]:
    """Every source that answers, with its version: `docker 24.0 · containerd 1.7 (CRI)`; shorter forms
    drop the versions, then the words."""
    answering = [s for s in host.sources if s.ok]
    long, bare = [], []
    for s in answering:
        name = s.runtime or s.kind
        suffix = " (CRI)" if s.kind == "cri" else ""
        long.append(f"{name} {s.version}{suffix}" if s.version else f"{name}{suffix}")
        bare.append(f"{name}{suffix}")
    return (literal(" · ".join(long)), literal(" · ".join(bare)), literal("+".join(bare).replace(" (CRI)", "")))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 10 else f"{seconds:.0f}s"


def header_parts(snapshot: Snapshot | None, docker_host: str, interval: float, paused: bool,
                 extra: tuple[str, ...] = (), replay: bool = False,
                 recorder: str | None = None, past_label: str = "REPLAY") -> tuple[list[Fact], list[Text]]:
    """The facts of the first line (each in its forms, see SHRINK_STEPS), and one line per problem.
    `recorder`: the flight recorder's summary when this dashboard records."""
    facts = []
    if snapshot is None or snapshot.self_cost is None:  # else mltop's own cost item carries the name
        facts.append(Fact("brand", Text("mltop", style="bold"), Text("")))
    if replay and snapshot is not None:  # recorded data: say so, and when it is from (never shrunk away)
        facts.append(Fact("replay", Text(f"{past_label} {fmt.local_time(snapshot.taken_at)}",
                                         style="bold reverse magenta")))
    if paused:
        facts.append(Fact("paused", Text("PAUSED", style="bold reverse")))
    if snapshot is None:
        facts.append(Fact("engine", Text(f"engine {docker_host}")))
        facts.append(Fact("sampling", Text("sampling…", style="dim")))
        return facts, []
    host = snapshot.host
    label = host.hostname.split(".")[0]
    facts.append(Fact("host", literal(host.hostname, "bold"), literal(label, "bold"), literal(clip(label, 16), "bold")))
    engine = Text("engine ")
    engine.append_text(literal(host.engine.docker_host))
    remote = not host.engine.docker_host.startswith(("unix://", "npipe://"))
    cri = [s for s in host.sources if s.kind == "cri" and s.ok]
    if cri and not host.engine_down:
        facts.append(Fact("engine", *source_forms(host)))
    elif not host.engine.ok and not host.engine_down:  # turned off (--docker-host none), or a node without it
        facts.append(Fact("engine", Text("docker off" if host.engine.status == "disabled" else "no docker",
                                         style="dim")))
    elif not host.engine.ok:
        engine.append(" DOWN", style="bold red")
        short = Text("engine DOWN", style="bold red")
        facts.append(Fact("engine", engine, engine, engine if remote else short))
    else:
        # a remote endpoint is worth its room (the figures are the engine's view only); the local socket is not
        bare = engine.copy()
        if host.docker_version:
            engine.append(f" (docker {host.docker_version})", style="dim")
        version = Text(f"docker {host.docker_version}") if host.docker_version else Text("engine ok")
        facts.append(Fact("engine", engine, bare, bare if remote else version, bare if remote else Text("engine ok")))
    nvml = host.nvml
    if nvml.ok:
        driver = f"driver {nvml.driver_version or '?'}"
        cuda = f"CUDA {nvml.cuda_driver_version or '?'}"
        facts.append(Fact("gpu", Text(f"{driver}  {cuda}"), Text(f"{driver} {cuda}"),
                          Text(f"drv {nvml.driver_version or '?'} {cuda}")))
    elif nvml.status == "disabled":
        facts.append(Fact("gpu", Text("GPU off", style="dim")))
    else:
        facts.append(Fact("gpu", Text("GPU unavailable", style="bold yellow")))
    running = sum(1 for c in snapshot.containers if c.running)
    total = len(snapshot.containers)
    facts.append(Fact("running", Text(f"{running}/{total} running", style="dim"),
                      Text(f"{running}/{total} up", style="dim")))
    facts.append(Fact("cost", *cost_forms(snapshot)))
    if recorder:
        facts.append(recorder_fact(recorder))
    facts.append(Fact("interval", Text(f"every {interval:g}s", style="dim"), Text("")))
    lines = []
    for source, reason in problems(snapshot, extra):
        line = Text(f"⚠ {source}: ", style="bold red" if source == "engine" else "bold yellow")
        line.append_text(literal(reason))
        lines.append(line)
    return facts, lines


def fit_facts(facts: list[Fact], width: int) -> list[Text]:
    """The facts' texts, shortened step by step (SHRINK_STEPS) until they fit on one line of `width`."""
    by_key = {fact.key: fact for fact in facts}
    for fact in facts:
        fact.level = 0

    def line_width() -> int:
        texts = [fact.text for fact in facts if fact.text.cell_len]
        return sum(t.cell_len for t in texts) + 2 * max(len(texts) - 1, 0)

    for key, level in SHRINK_STEPS:
        if line_width() <= width:
            break
        fact = by_key.get(key)
        if fact is not None:
            fact.level = max(fact.level, level)
    return [fact.text for fact in facts if fact.text.cell_len]


def pack(facts: list[Text], problem_lines: list[Text], width: int) -> Text:
    """Facts two spaces apart, wrapped between facts (never inside one) when even the shortest forms do not
    fit, then the problems, wrapped."""
    out = Text(end="")
    used = 0
    for fact in facts:
        if used and used + 2 + fact.cell_len > width:
            out.append("\n")
            used = 0
        elif used:
            out.append("  ")
            used += 2
        out.append_text(fact)
        used += fact.cell_len
    for line in problem_lines:
        # At most two lines per problem, so that a host without a GPU does not lose a third of an 80x24
        # screen to the NVML explanation (`mltop doctor` and the snapshot carry the full text).
        wrapped = textwrap.wrap(line.plain, width)
        if len(wrapped) > 2:
            line = line.copy()
            line.truncate(len(" ".join(wrapped[:2])) - 1, overflow="ellipsis")
        out.append("\n")
        out.append_text(line)
    return out


class StatusHeader(Static):
    """Repaints only when its text changes, so a still dashboard sends nothing."""

    def show(self, snapshot: Snapshot | None, docker_host: str, interval: float, paused: bool,
             extra: tuple[str, ...] = (), replay: bool = False, recorder: str | None = None,
             past_label: str = "REPLAY") -> None:
        self._parts = header_parts(snapshot, docker_host, interval, paused, extra, replay, recorder, past_label)
        self._repack()

    def on_resize(self) -> None:
        self._repack()

    def _repack(self) -> None:
        parts = getattr(self, "_parts", None)
        if parts is None:
            return
        facts, problem_lines = parts
        width = self.size.width - 2 if self.size.width else 78
        text = pack(fit_facts(facts, width), problem_lines, width)
        signature = (text.plain, tuple(text.spans))
        old = getattr(self, "_signature", None)
        if signature != old:
            self._signature = signature
            # mltop's own cost changes every sweep; a layout of the whole screen is needed only when the
            # header's height changes
            self.update(text, layout=old is None or old[0].count("\n") != text.plain.count("\n"))

    @property
    def plain(self) -> str:
        """The header's text as shown (tests read it)."""
        return getattr(self, "_signature", ("",))[0]
