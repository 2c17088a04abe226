"""Consolidating several sweeps into one, as RRD tools do when they thin old data: averages for CPU and
rates, the peak for memory (the peak before an OOM kill is what matters), the last state and counters, the last
pod facts (QoS, GPU allocations) and MIG devices; a GPU's GPM figures are averaged over the bucket's sweeps
that have them."""

from __future__ import annotations

from typing import Any, Sequence

from . import codec

# Columns whose bucket value is the peak rather than the mean; the rest of the gauges are averaged.
PEAK = {"memory_bytes"}
LAST = {"memory_limit_bytes", "pids", "oom_kills"}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def merge_containers(sweeps: Sequence[codec.ContainerColumns]) -> bytes:
    """One container blob standing for `sweeps` (oldest first): every container seen in any of them."""
    order: list[int] = []
    seen: dict[int, dict[str, list]] = {}
    status: dict[int, str] = {}
    pods: dict[int, int] = {}  # cid -> its last pod-facts id
    gpu: dict[tuple[int, int], list[tuple[float | None, float | None]]] = {}
    for cols in sweeps:
        for i, cid in enumerate(cols.cids):
            acc = seen.get(cid)
            if acc is None:
                acc = seen[cid] = {name: [] for name, _ in codec.COLUMNS}
                order.append(cid)
            status[cid] = cols.statuses[i]
            if cols.pod_ids is not None and cols.pod_ids[i] != codec.NONE:
                pods[cid] = cols.pod_ids[i]
            for name, _ in codec.COLUMNS:
                value = cols.values[name][i]
                if value is not None:
                    acc[name].append(value)
        for position, index, memory, sm in cols.gpu_uses:
            gpu.setdefault((cols.cids[position], index), []).append((memory, sm))
    columns: list[int] = list(order)
    columns.extend(codec._STATUS_CODE.get(status[cid], len(codec.STATUSES) - 1) for cid in order)
    for name, scale in codec.COLUMNS:
        for cid in order:
            values = seen[cid][name]
            if name in PEAK:
                value = max(values) if values else None
            elif name in LAST:
                value = values[-1] if values else None
            else:
                value = _mean(values)
            columns.append(codec._enc(value, scale))
    position_of = {cid: k for k, cid in enumerate(order)}
    uses: list[int] = []
    for (cid, index), samples in gpu.items():
        memories = [m for m, _ in samples if m is not None]
        sms = [s for _, s in samples if s is not None]
        uses.extend((position_of[cid], index, codec._enc(max(memories) if memories else None, codec.MIB),
                     codec._enc(_mean(sms), 0.01)))
    return codec._pack(len(order), columns, uses, [pods.get(cid, codec.NONE) for cid in order])


def merge_gpus(sweeps: Sequence[list[list[Any]]]) -> bytes | None:
    """One GPU blob for `sweeps`: mean utilisation, temperature, power and GPM figures, peak memory, the last
    processes and MIG devices."""
    by_gid: dict[int, list[list[Any]]] = {}
    for rows in sweeps:
        for row in rows:
            by_gid.setdefault(row[0], []).append(row)
    merged = []
    for gid, rows in by_gid.items():
        def mean(k: int) -> float | None:
            known = [r[k] for r in rows if r[k] is not None]
            return round(sum(known) / len(known), 1) if known else None

        used = [r[3] for r in rows if r[3] is not None]
        last = rows[-1]
        row = [gid, mean(1), mean(2), max(used) if used else None, mean(4), mean(5),
               sorted({t for r in rows for t in r[6]}), last[7]]
        gpm = _mean_gpm([g for g in map(codec.row_gpm, rows) if g])
        mig = last[8] if len(last) > 8 else None  # the last MIG devices
        if mig is not None or gpm is not None:
            row.append(mig)
        if gpm is not None:
            row.append(gpm)
        merged.append(row)
    return codec.pack_gpus(merged)


def _mean_gpm(lists: list[list[float | None]]) -> list[float | None] | None:
    """One GPM list for a bucket: each metric's mean, over the time the samples span (interval_s, the first,
    summed)."""
    if not lists:
        return None
    width = max(len(values) for values in lists)
    out: list[float | None] = [sum(values[0] for values in lists)]
    for k in range(1, width):
        known = [values[k] for values in lists if k < len(values) and values[k] is not None]
        out.append(round(sum(known) / len(known), 2) if known else None)
    return out
