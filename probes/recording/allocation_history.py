"""Since when a pod container has left its allocated GPUs unused, from a recording.

A one-shot `mltop doctor` sees two sweeps a second apart: far too short for k8s.gpu_allocated_unused's window
(gpu_alloc_unused_s, 600 s by default). `mltop serve` and the dashboard record every sweep, and with it each
allocation's in_use and unused_since (pod_facts, schema version 2). The recording's last sweep, when it reaches
up to the doctor's own sweeps, carries that history over to the doctor's snapshot, and back over earlier
recorder runs that follow without a gap (an agent restart does not restart the window).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..model import Snapshot
from ..units import local_time

FRESH_S = 60.0  # the recording's last sweep may end this long (or 3 of its intervals) before the doctor's sweeps


@dataclass(frozen=True)
class RecordedAllocations:
    """The doctor's snapshot with recorded unused_since carried over (`snapshot`), where that came from
    (`source`, for the evidence), and per container id why the recording could not say (`unknown`)."""

    snapshot: Snapshot
    source: str
    unknown: dict[str, str]


def waiting_allocations(snapshot: Snapshot, names: set[str] | None = None) -> list:
    """The running pod containers (of `names`, or all) holding an allocation no process of theirs uses now."""
    return [c for c in snapshot.containers
            if c.kubernetes is not None and c.running and (names is None or c.name in names)
            and any(not a.in_use for a in c.kubernetes.gpus_allocated)]


def with_recorded_allocations(snapshot: Snapshot, store, first_t: float) -> RecordedAllocations:
    """Carry each unused allocation's unused_since back to the recording's (a RecordingStore), when the
    recording's last sweep ends within FRESH_S of `first_t` (the doctor's first sweep) and it saw the same
    container (by id) hold the same device unused; an allocation the recording saw in use keeps the doctor's
    own (it was used moments ago)."""
    path = store.path
    waiting = waiting_allocations(snapshot)
    if not waiting:
        return RecordedAllocations(snapshot, f"the recording {path}", {})
    store.refresh()
    if not store.times:
        why = f"the recording {path} holds no sweeps yet"
        return RecordedAllocations(snapshot, f"the recording {path}", {c.id: why for c in waiting})
    last = store.snapshot(store.times[-1])
    if last is None:  # thinned away between the listing and the read
        store.times = []
        store.refresh()
        last = store.snapshot(store.times[-1]) if store.times else None
    if last is None:
        why = f"the recording {path} holds no sweeps yet"
        return RecordedAllocations(snapshot, f"the recording {path}", {c.id: why for c in waiting})
    until = local_time(last.taken_at, with_date=False)
    source = f"the recording {path} (sweeps until {until})"
    gap = first_t - last.taken_at
    if gap > max(FRESH_S, 3 * (last.interval_s or 0.0)):
        why = (f"the recording {path} ends at {until}, {gap:.0f} s before this run: it does not cover the "
               f"GPUs' use up to now (is `mltop serve --record {path}` still running?)")
        return RecordedAllocations(snapshot, source, {c.id: why for c in waiting})
    recorded = {c.id: c for c in last.containers}
    unknown: dict[str, str] = {}
    replaced = {}
    for c in waiting:
        r = recorded.get(c.id)
        kept = {a.device_id: a for a in (r.kubernetes.gpus_allocated if r is not None and r.kubernetes else ())}
        if not kept:
            unknown[c.id] = (f"the recording {path} has no GPU allocation of {c.name} in its last sweep ({until}): "
                             + ("the container was not in it" if r is None else
                                "recorded by an mltop that kept no allocations, or without the kubelet's answer"))
            continue
        marked = []
        for a in c.kubernetes.gpus_allocated:
            was = kept.get(a.device_id)
            if not a.in_use and was is not None and not was.in_use and was.unused_since is not None:
                since = _earlier_runs(store, c.id, a.device_id, was.unused_since)
                a = dataclasses.replace(a, unused_since=min(since, a.unused_since or since))
            marked.append(a)
        replaced[c.id] = dataclasses.replace(c, kubernetes=dataclasses.replace(c.kubernetes,
                                                                               gpus_allocated=tuple(marked)))
    containers = tuple(replaced.get(c.id, c) for c in snapshot.containers)
    return RecordedAllocations(dataclasses.replace(snapshot, containers=containers), source, unknown)


def _earlier_runs(store, container_id: str, device_id: str, since: float) -> float:
    """`since` moved back over earlier recorder runs (an agent restarted: its sampler counts afresh): while the
    sweep just before `since` follows without a gap and saw the device unused too, its unused_since holds."""
    import bisect

    while True:
        i = bisect.bisect_left(store.times, int(since * 1000)) - 1
        if i < 0:
            return since
        before = store.snapshot(store.times[i])
        if before is None or since - before.taken_at > max(FRESH_S, 3 * (before.interval_s or 0.0)):
            return since
        c = before.container(container_id)
        was = next((a for a in (c.kubernetes.gpus_allocated if c is not None and c.kubernetes else ())
                    if a.device_id == device_id), None)
        if was is None or was.in_use or was.unused_since is None or was.unused_since >= since:
            return since
        since = was.unused_since
