"""The processes of the selected container: host and container PIDs, user, CPU, RSS and GPU use."""

from __future__ import annotations

from rich.text import Text

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


class ProcessesTable(KeyedTable):
    """Keyed by host PID; busiest first (GPU memory, then CPU)."""

    COLUMNS = COLUMNS

    def show(self, container: ContainerSample | None, gpu_columns: bool = True) -> None:
        """`gpu_columns`: False on a host without GPUs, so the command gets their width."""
        self.hide_columns(frozenset() if gpu_columns else GPU_COLUMNS)
        processes = container.processes if container is not None else ()
        ordered = sorted(
            processes,
            key=lambda p: (-(p.gpu_memory_bytes or 0), -(p.cpu_percent or 0.0), p.host_pid),
        )
        self.sync({str(p.host_pid): process_cells(p) for p in ordered}, [str(p.host_pid) for p in ordered])
