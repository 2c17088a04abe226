"""A shared GPU in words: one compact line for the GPU panel, and a table of every sharer with its memory and SM
and the sum for the container detail (the records: probes/gpu_sharing.py)."""

from __future__ import annotations

from rich.text import Text

from mltop.probes.model import GpuSharing

from .. import format as fmt
from ..sanitize import clip, literal, printable

SHARED_MARK = "⇄"
NAME_WIDTH = 30  # a sharer's name in the detail table (a pod's namespace/pod/container is long)


def device_label(s: GpuSharing) -> str:
    """"GPU 0", or "GPU 3 MIG 1" for a MIG device."""
    return f"GPU {s.index}" + (f" MIG {s.mig_index}" if s.mig_index is not None else "")


def sharing_line(sharing: tuple[GpuSharing, ...] | list[GpuSharing]) -> Text:
    """"⇄ time-sliced ×3 6.0G SM 70%" per shared device (a MIG device named first): the mode, how many
    share it, their memory together and their SM together. Empty when the GPU is not shared."""
    out = Text(no_wrap=True, end="")
    for s in sharing:
        if out.plain:
            out.append("  ")
        out.append(f"{SHARED_MARK} ", style="bold yellow")
        if s.mig_index is not None:
            out.append(f"MIG {s.mig_index} ")
        out.append(f"{s.mode} ×{len(s.sharers)}", style="bold")
        out.append(f" {fmt.size(s.memory_used_sum)}")
        if s.sm_sum is not None:
            out.append(f" SM {s.sm_sum:.0f}%")
    return out


def sharing_rows(s: GpuSharing) -> list[Text]:
    """Every sharer of one device (name, memory, SM, its allocated device ids, PIDs), then the sum against the
    device's total. Names and ids shown literally."""
    head = Text(f"{device_label(s)} {s.mode}, {len(s.sharers)} sharers", style="bold", no_wrap=True, end="")
    if s.mps_server_pid is not None:
        head.append(f"  (MPS server pid {s.mps_server_pid})", style="dim")
    rows = [head]
    for sharer in s.sharers:
        row = literal(clip(printable(sharer.name), NAME_WIDTH).ljust(NAME_WIDTH))
        row.append(f" {fmt.size(sharer.memory_bytes):>5}  SM {_sm(sharer.sm_percent):>4}")
        extra = []
        if sharer.device_ids:
            extra.append(",".join(_device_id(s, d) for d in sharer.device_ids))
        if sharer.pids:
            extra.append("pid " + ",".join(str(p) for p in sharer.pids[:4]) + ("…" if len(sharer.pids) > 4 else ""))
        else:
            extra.append("no process")
        row.append("  ").append_text(literal("  ".join(extra), "dim"))
        rows.append(row)
    total = Text("sum".ljust(NAME_WIDTH), style="bold", no_wrap=True, end="")
    total.append(f" {fmt.size(s.memory_used_sum):>5}  SM {_sm(s.sm_sum):>4}")
    total.append("  ").append(f"of {fmt.size(s.memory_total_bytes)}", style="dim")
    rows.append(total)
    return rows


def _device_id(s: GpuSharing, device_id: str) -> str:
    """The kubelet's device id, short where it names this device: "replica 1" for `GPU-…::1`."""
    base, sep, replica = device_id.partition("::")
    if base == s.uuid:
        return f"replica {replica}" if sep else "allocated"
    return device_id


def _sm(value: float | None) -> str:
    return fmt.MISSING if value is None else f"{value:.0f}%"
