"""The containers table: one row per container, its columns, how each sorts, the text filter, and the
marker of the worst doctor finding in each row's left margin."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.strip import Strip

from mltop.diagnostics.workload import classify, classify_all
from mltop.probes.model import ContainerSample, Snapshot

from .. import format as fmt
from .keyed_table import ColumnSpec, KeyedTable
from ..sanitize import literal

COLUMNS = (
    ColumnSpec("name", "NAME", 18, 0, flexible=True, max_width=32),
    ColumnSpec("status", "STATUS", 12, 1),
    ColumnSpec("cpu", "CPU%", 5, 2, "right"),
    ColumnSpec("mem", "MEM USED/LIM", 12, 3, "right"),
    ColumnSpec("gpu", "GPU", 4, 4),
    # Pod containers given GPUs by the kubelet (pod-resources API): the GPUs allocated, beside GPU (used)
    ColumnSpec("gpu_alloc", "GPU ALLOC", 9, 4.5),
    ColumnSpec("gpu_mem", "GPU MEM", 7, 5, "right"),
    ColumnSpec("sm", "SM%", 5, 6, "right"),
    ColumnSpec("image", "IMAGE", 18, 7),
    # Pod containers on a wide screen: NAME then shows the container's own name (7.5: after IMAGE, before PIDS)
    ColumnSpec("namespace", "NAMESPACE", 12, 7.5),
    ColumnSpec("pod", "POD", 16, 7.5),
    ColumnSpec("pids", "PIDS", 5, 8, "right"),
    ColumnSpec("io", "I/O R/W /s", 11, 9, "right"),
    ColumnSpec("net", "NET RX/TX /s", 12, 10, "right"),
    ColumnSpec("work", "BOUND", 9, 11),  # what holds a GPU job back (diagnostics.workload); first to go
)
GPU_COLUMNS = frozenset({"gpu", "gpu_mem", "sm", "work"})  # left out on a host with no GPU and no GPU requests
POD_COLUMNS = frozenset({"namespace", "pod"})  # left out where no container is in a pod
ALLOC_COLUMNS = frozenset({"gpu_alloc"})  # left out where the kubelet allocated no GPU to any container
POD_ROW_PREFIX = "pod/"  # the key of a pod's totals row when grouping by pod: pod/<uid>
LABELS = {spec.key: spec.label for spec in COLUMNS}
SORT_ORDER = [spec.key for spec in COLUMNS]

# The worst finding of a container, drawn in the blank cell left of its name (no column is given up for it).
# Info findings are not marked: a marker asks the user to press `d`.
MARKERS: dict[str, tuple[str, Style]] = {
    severity: (glyph, Style.parse(style)) for severity, (glyph, style) in fmt.SEVERITY_GLYPH.items() if severity != "info"
}

_STATUS_RANK = {"running": 0, "restarting": 1, "paused": 2, "created": 3, "exited": 4, "dead": 5}


def _sum(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


# How each column sorts: a value (None sorts last either way) and whether it starts descending.
SORT_VALUES: dict[str, tuple[Callable[[ContainerSample], Any], bool]] = {
    "name": (lambda c: c.name.lower(), False),
    "status": (lambda c: (_STATUS_RANK.get(c.status, 9), c.config.exit_code or 0), False),
    "cpu": (lambda c: c.cpu_percent, True),
    "mem": (lambda c: c.memory_bytes, True),
    "gpu": (lambda c: tuple(g.index for g in c.gpus) or None, False),
    "gpu_alloc": (lambda c: gpu_allocated(c) or None, False),
    "gpu_mem": (lambda c: c.gpu_memory_bytes, True),
    "sm": (lambda c: c.gpu_sm_percent, True),
    "image": (lambda c: c.image.lower(), False),
    "pids": (lambda c: c.pids, True),
    "io": (lambda c: _sum(c.io_read_bytes_per_s, c.io_write_bytes_per_s), True),
    "net": (lambda c: _sum(c.net_rx_bytes_per_s, c.net_tx_bytes_per_s), True),
    "work": (lambda c: None, False),  # by the snapshot's classes: sorted_ids(..., kinds=)
    "namespace": (lambda c: c.kubernetes.namespace.lower() if c.kubernetes else None, False),
    "pod": (lambda c: c.kubernetes.pod.lower() if c.kubernetes else None, False),
}


def shows_gpus(snapshot: Snapshot) -> bool:
    """Whether GPU columns mean anything: the host has GPUs, or a container asks for them."""
    return bool(snapshot.gpus) or any(c.config.requests_gpus for c in snapshot.containers)


def status_text(c: ContainerSample) -> str:
    """"running", or for a stopped container its exit code and whether the OOM killer stopped it."""
    if c.status in ("exited", "dead"):
        code = c.config.exit_code
        text = f"exit {code}" if code is not None else c.status
        return f"{text} OOM" if c.config.oom_killed else text
    return c.status


def gpu_indices(c: ContainerSample) -> str:
    if c.gpus:
        return ",".join(str(g.index) for g in c.gpus)
    return "req" if c.config.requests_gpus and c.running else ""


def gpu_allocated(c: ContainerSample) -> str:
    """The GPUs the kubelet gave a pod container, by NVML index (`?` for a device NVML does not show), each
    once; time-sliced replicas as `0×2` (two replicas of GPU 0)."""
    if c.kubernetes is None or not c.kubernetes.gpus_allocated:
        return ""
    counts: dict[str, int] = {}
    for a in c.kubernetes.gpus_allocated:
        label = str(a.index) if a.index is not None else "?"
        counts[label] = counts.get(label, 0) + 1
    return ",".join(label if n == 1 else f"{label}×{n}" for label, n in counts.items())


def row_values(c: ContainerSample, kind: str = "", split: bool = False, indent: str = "") -> tuple:
    """What one container's row shows, as plain strings and style names: equal values, equal row. Cheap to
    build and compare, so a row whose values did not change is not rebuilt (most rows, most ticks).
    `split`: the NAMESPACE and POD columns show, so NAME is the pod container's own name; `indent`: put before
    the name, under its pod's totals row, which names the pod: NAME is the container's own name there too
    (`ns/pod/container` cut to the column's width showed only the pod's name, the same on every row)."""
    k = c.kubernetes
    style = "" if c.running else "dim"
    status_style = style
    if c.config.oom_killed and not c.running:
        status_style = "dim bold red"
    elif c.status == "restarting":
        status_style = "yellow"
    running = c.running
    return (
        style,
        status_style,
        indent + (k.container if (split or indent) and k is not None else c.name),
        c.image,
        status_text(c),
        fmt.percent(c.cpu_percent) if running else "",
        fmt.used_of(c.memory_bytes, c.memory_limit_bytes) if running else "",
        gpu_indices(c),
        gpu_allocated(c),
        fmt.size(c.gpu_memory_bytes, missing="") if c.gpus else "",
        fmt.percent(c.gpu_sm_percent, missing="") if c.gpus else "",
        kind,
        str(c.pids) if c.pids is not None else "",
        fmt.pair(fmt.rate(c.io_read_bytes_per_s), fmt.rate(c.io_write_bytes_per_s)) if running else "",
        fmt.pair(fmt.rate(c.net_rx_bytes_per_s), fmt.rate(c.net_tx_bytes_per_s)) if running else "",
        k.namespace if k is not None else "",
        k.pod if k is not None else "",
    )


def pod_key(c: ContainerSample) -> str | None:
    return POD_ROW_PREFIX + c.kubernetes.pod_uid if c.kubernetes is not None else None


def pod_row_values(members: list[ContainerSample], split: bool) -> tuple:
    """A pod's totals row: CPU, memory, GPU memory and SM of its containers together (its sandbox's own few
    hundred KiB are not counted: CRI does not list the pause container as a workload)."""
    k = members[0].kubernetes
    running = [c for c in members if c.running]
    cpu = _sum(*(c.cpu_percent for c in running))
    mem = _sum(*(c.memory_bytes for c in running))
    gpu_mem = _sum(*(c.gpu_memory_bytes for c in members))
    sm = _sum(*(c.gpu_sm_percent for c in members))
    gpus = sorted({g.index for c in members for g in c.gpus})
    # the pod's own name first: where NAMESPACE does not show, `namespace/pod` cut to the column's width left
    # only the namespace and the start of the pod's name, the same on every row of a Deployment's pods
    label = f"▾ {k.pod} ({len(members)})" if split else f"▾ {k.pod} ({len(members)}) · {k.namespace}"
    return (
        "bold",
        "bold",
        label,
        "",
        f"pod {k.qos or ''}".strip(),
        fmt.percent(cpu) if cpu is not None else "",
        fmt.size(mem, missing="") if mem is not None else "",
        ",".join(str(i) for i in gpus),
        ",".join(filter(None, (gpu_allocated(c) for c in members))),
        fmt.size(gpu_mem, missing="") if gpu_mem is not None else "",
        fmt.percent(sm, missing="") if sm is not None else "",
        "",
        str(sum(c.pids or 0 for c in running)) if running else "",
        "",
        "",
        k.namespace,
        k.pod,
    )


_VALUE_COLUMNS = ("cpu", "mem", "gpu", "gpu_alloc", "gpu_mem", "sm", "work", "pids", "io", "net", "namespace", "pod")


_COLUMN_OF_VALUE = ("", "", "name", "image", "status", *_VALUE_COLUMNS)  # row_values index -> column key


def cells_from_values(values: tuple, previous: tuple[tuple, dict[str, Text]] | None = None) -> dict[str, Text]:
    """The row's cells; with the previous (values, cells) of the row, the cells of unchanged columns are
    the same objects (so the table fits only what changed)."""
    style, status_style, name, image, status = values[:5]
    if previous is not None and previous[0][:2] == values[:2]:
        old_values, old_cells = previous
        cells = dict(old_cells)
        for index in range(2, len(values)):
            if values[index] != old_values[index]:
                key = _COLUMN_OF_VALUE[index]
                cells[key] = _cell(key, values[index], style, status_style)
        return cells
    return {key: _cell(key, value, style, status_style) for key, value in zip(_COLUMN_OF_VALUE[2:], values[2:])}


def _cell(key: str, value: str, style: str, status_style: str) -> Text:
    if key in ("name", "image"):
        return literal(value, style)
    return Text(value, style=status_style if key == "status" else style, no_wrap=True, end="")


def workload_kinds(snapshot: Snapshot, previous: Snapshot | None = None) -> dict[str, str]:
    """{container id: workload class}, judged as the doctor and the detail judge it (this sweep and the last)."""
    return {cid: w.kind for cid, w in classify_all(snapshot, previous=previous).items()}


def container_cells(c: ContainerSample, snapshot: Snapshot | None = None,
                    previous: Snapshot | None = None) -> dict[str, Text]:
    """Every column of one container's row, as Text (container text is never parsed as markup)."""
    return cells_from_values(row_values(c, workload_kinds(snapshot, previous).get(c.id, "") if snapshot else
                                         getattr(classify(c), "kind", "")))


def matches(c: ContainerSample, needle: str) -> bool:
    """The filter: a case-insensitive substring of name (a pod container's is namespace/pod/container), image,
    status or id, or of its pod's namespace, name or UID."""
    if not needle:
        return True
    needle = needle.lower()
    texts = [c.name, c.image, status_text(c), c.id[:12]]
    if c.kubernetes is not None:
        texts += [c.kubernetes.namespace, c.kubernetes.pod, c.kubernetes.pod_uid]
    return any(needle in text.lower() for text in texts)


def sorted_ids(containers: tuple[ContainerSample, ...] | list[ContainerSample], column: str,
               reverse: bool, kinds: Mapping[str, str] | None = None) -> list[str]:
    """Container ids ordered by `column`; `reverse` flips the column's natural direction. Ties by name.
    `kinds`: the workload classes shown (workload_kinds), for the BOUND column."""
    value_of, descending = SORT_VALUES[column]
    if column == "work":
        shown_kinds = kinds or {}

        def value_of(c: ContainerSample) -> str | None:
            return shown_kinds.get(c.id)
    by_name = sorted(containers, key=lambda c: c.name.lower())
    known = [c for c in by_name if value_of(c) is not None]
    missing = [c for c in by_name if value_of(c) is None]
    known.sort(key=value_of, reverse=descending != reverse)
    return [c.id for c in known + missing]


class ContainersTable(KeyedTable):
    """All containers, keyed by id; enter opens the selected one; a marker left of the name for findings."""

    COLUMNS = COLUMNS
    BINDINGS = [Binding("enter", "select", "Detail", id="mltop.table.detail")]

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self._marks: dict[str, str] = {}  # row key -> severity shown by its marker
        # row key -> (the sample, its workload class, row_values, cells given)
        self._built: dict[str, tuple[ContainerSample, str, tuple, dict[str, Text]]] = {}

    def show(self, snapshot: Snapshot, needle: str, sort_column: str, reverse: bool,
             severities: Mapping[str | None, str] | None = None, previous: Snapshot | None = None,
             group_pods: bool = False) -> None:
        """`severities`: {container name: worst severity} from the doctor (worst_by_container). `group_pods`:
        each pod's containers under a row of the pod's totals."""
        # The class as the doctor and the detail judge it (this sweep and the one before), once per snapshot.
        kinds = workload_kinds(snapshot, previous)
        shown = [c for c in snapshot.containers if matches(c, needle)]
        has_pods = any(c.kubernetes is not None for c in snapshot.containers)
        self.hide_columns((frozenset() if shows_gpus(snapshot) else GPU_COLUMNS)
                          | (frozenset() if has_pods else POD_COLUMNS)
                          | (frozenset() if any(c.kubernetes is not None and c.kubernetes.gpus_allocated
                                                for c in snapshot.containers) else ALLOC_COLUMNS))
        split = self._split_names()
        self._split = split
        grouped = group_pods and has_pods
        rows: dict[str, dict[str, Text]] = {}
        built: dict[str, tuple[ContainerSample, str, tuple, dict[str, Text]]] = {}
        order = sorted_ids(shown, sort_column, reverse, kinds)
        if grouped:
            order = self._group(shown, order, split, rows, built)
        for c in shown:
            kind = kinds.get(c.id, "")
            previous = self._built.get(c.id)
            indent = "  " if grouped and c.kubernetes is not None else ""
            if previous is not None and previous[0] is c and previous[1] == kind and previous[2][2] == (
                    indent + (c.kubernetes.container if (split or indent) and c.kubernetes else c.name)):
                # the sampler hands back the very same sample for a container at rest: nothing to format
                rows[c.id] = previous[3]
                built[c.id] = previous
                continue
            values = row_values(c, kind, split, indent)
            # the same cells object as last time tells sync() the row did not change (no refit, no repaint)
            cells = previous[3] if previous is not None and previous[2] == values else \
                cells_from_values(values, previous[2:] if previous is not None else None)
            rows[c.id] = cells
            built[c.id] = (c, kind, values, cells)
        self._built = built
        self.sync(rows, order)
        severities = severities or {}
        marks = {c.id: severities[c.name] for c in shown if severities.get(c.name) in MARKERS}
        if marks != self._marks:
            changed = {key for key in marks.keys() | self._marks.keys() if marks.get(key) != self._marks.get(key)}
            self._marks = marks
            index = {key: i for i, key in enumerate(self._order)}
            for key in changed & index.keys():
                self.refresh_line(index[key] + 1)

    def _split_names(self) -> bool:
        """Whether NAMESPACE and POD show at this width (not before the width is known)."""
        width = self.scrollable_content_region.width
        return bool(width) and POD_COLUMNS <= {spec.key for spec, _ in self._plan_for(width)}

    def on_resize(self, event) -> None:
        super().on_resize(event)
        if self._split_names() != getattr(self, "_split", False):
            reshow = getattr(self.screen, "_reshow", None)  # the names change with the columns: now, not next tick
            if reshow is not None:
                self.call_after_refresh(reshow)

    def _group(self, shown: list[ContainerSample], order: list[str], split: bool, rows: dict, built: dict) -> list[str]:
        """The order with each pod's totals row first where its first container would be, its containers
        (in the sorted order) under it; the totals rows go into `rows` and `built`."""
        by_id = {c.id: c for c in shown}
        members: dict[str, list[ContainerSample]] = {}
        for cid in order:
            key = pod_key(by_id[cid])
            if key is not None:
                members.setdefault(key, []).append(by_id[cid])
        grouped: list[str] = []
        for cid in order:
            key = pod_key(by_id[cid])
            if key is None:
                grouped.append(cid)
            elif key not in rows:
                values = pod_row_values(members[key], split)
                previous = self._built.get(key)
                cells = previous[3] if previous is not None and previous[2] == values else cells_from_values(
                    values, previous[2:] if previous is not None else None)
                rows[key] = cells
                built[key] = (members[key][0], "", values, cells)
                grouped += [key, *(c.id for c in members[key])]
        return grouped

    def marker(self, row_key: str) -> str | None:
        """The severity marked on a row (critical or warning), or None."""
        return self._marks.get(row_key)

    def render_line(self, y: int) -> Strip:
        # The marker replaces the first column's left padding cell on top of the cached row strip, so a
        # marker that changes never re-renders the row's cells.
        strip = super().render_line(y)
        index = int(self.scroll_y) + y - 1
        if y == 0 or not self._marks or index >= len(self._order):
            return strip
        severity = self._marks.get(self._order[index])
        if severity is None or strip.cell_length < 2:
            return strip
        glyph, style = MARKERS[severity]
        first = next(iter(strip), None)
        base = first.style if first is not None and first.style is not None else Style()
        return Strip.join([Strip([Segment(glyph, base + style)], 1), strip.crop(1, strip.cell_length)])
