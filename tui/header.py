"""The header: which host and engine we watch, driver and CUDA, and each unavailable source with why."""

from __future__ import annotations

import textwrap

from rich.text import Text
from textual.widgets import Static

from mltop.probes.model import Snapshot

from .sanitize import literal


def problems(snapshot: Snapshot, extra: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(source, reason) for every source that is not giving data, in the probes' own words."""
    host = snapshot.host
    out = []
    if not host.engine.ok:
        out.append(("engine", host.engine.error or host.engine.status))
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


def header_parts(snapshot: Snapshot | None, docker_host: str, interval: float, paused: bool,
                 extra: tuple[str, ...] = (), replay: bool = False) -> tuple[list[Text], list[Text]]:
    """The facts of the first line(s), each kept whole when wrapping, and one line per problem."""
    facts: list[Text] = [Text("mltop", style="bold")]
    if replay and snapshot is not None:  # recorded data: say so, and when it is from
        from .replay import replay_time_text

        facts.append(Text(f"REPLAY {replay_time_text(snapshot.taken_at)}", style="bold reverse magenta"))
    if paused:
        facts.append(Text("PAUSED", style="bold reverse"))
    if snapshot is None:
        facts.append(Text(f"engine {docker_host}"))
        facts.append(Text("sampling…", style="dim"))
        return facts, []
    host = snapshot.host
    facts.append(literal(host.hostname, "bold"))
    engine = Text("engine ")
    engine.append_text(literal(host.engine.docker_host))
    if not host.engine.ok:
        engine.append(" DOWN", style="bold red")
    elif host.docker_version:
        engine.append(f" (docker {host.docker_version})", style="dim")
    facts.append(engine)
    nvml = host.nvml
    if nvml.ok:
        facts.append(Text(f"driver {nvml.driver_version or '?'}"))
        facts.append(Text(f"CUDA {nvml.cuda_driver_version or '?'}"))
    elif nvml.status == "disabled":
        facts.append(Text("GPU off", style="dim"))
    else:
        facts.append(Text("GPU unavailable", style="bold yellow"))
    running = sum(1 for c in snapshot.containers if c.running)
    facts.append(Text(f"{running}/{len(snapshot.containers)} running", style="dim"))
    facts.append(Text(f"every {interval:g}s", style="dim"))
    lines = []
    for source, reason in problems(snapshot, extra):
        line = Text(f"⚠ {source}: ", style="bold red" if source == "engine" else "bold yellow")
        line.append_text(literal(reason))
        lines.append(line)
    return facts, lines


def pack(facts: list[Text], problem_lines: list[Text], width: int) -> Text:
    """Facts two spaces apart, wrapped between facts (never inside one), then the problems, wrapped."""
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
             extra: tuple[str, ...] = (), replay: bool = False) -> None:
        self._parts = header_parts(snapshot, docker_host, interval, paused, extra, replay)
        self._repack()

    def on_resize(self) -> None:
        self._repack()

    def _repack(self) -> None:
        parts = getattr(self, "_parts", None)
        if parts is None:
            return
        text = pack(*parts, self.size.width - 2 if self.size.width else 78)
        signature = (text.plain, tuple(text.spans))
        if signature != getattr(self, "_signature", None):
            self._signature = signature
            self.update(text)

    @property
    def plain(self) -> str:
        """The header's text as shown (tests read it)."""
        return getattr(self, "_signature", ("",))[0]
