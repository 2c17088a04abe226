"""Pod containers' lifecycle, told by successive snapshots: CRI has no event stream mltop keeps open (the
Docker engine's events come from its own watcher), so what changed between two sweeps is the event.

created, started, exited (with the exit code), OOM-killed (the cgroup's oom_kill counter, or the runtime's
OOMKilled reason), restarted (the kubelet replaces a container with attempt + 1: a new id, the same
namespace/pod/container) and removed. Named in the engine's words (create, start, die, oom, restart,
destroy) so the timeline and `mltop events` show them like Docker's.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import ContainerSample, Snapshot


@dataclass(frozen=True)
class PodEvent:
    t: float
    kind: str  # "create" | "start" | "die" | "oom" | "restart" | "destroy"
    container_id: str
    container: str  # namespace/pod/container
    title: str | None = None  # the image
    detail: dict | None = None


@dataclass(frozen=True)
class _Seen:
    status: str
    oom_kills: int | None
    restart_count: int
    exit_code: int | None
    oom_killed: bool
    name: str
    image: str


def _key(c: ContainerSample) -> tuple[str, str, str]:
    k = c.kubernetes
    return (k.namespace, k.pod, k.container) if k is not None else ("", "", "")


class PodEventTracker:
    """observe(snapshot) -> the events since the previous snapshot. The first snapshot only primes it: what
    existed before mltop looked is no event."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] | None = None

    def observe(self, snapshot: Snapshot) -> list[PodEvent]:
        t = snapshot.taken_at
        pods = [c for c in snapshot.containers if c.kubernetes is not None]
        now = {c.id: _Seen(c.status, c.oom_kills, c.config.restart_count, c.config.exit_code, c.config.oom_killed,
                           c.name, c.image) for c in pods}
        before, self._seen = self._seen, now
        if before is None:
            return []
        out: list[PodEvent] = []
        gone_by_key = {}
        for cid, old in before.items():
            if cid not in now:
                gone_by_key[old.name] = (cid, old)
        for c in pods:
            old = before.get(c.id)
            if old is None:
                replaced = gone_by_key.pop(c.name, None)
                previous_restarts = replaced[1].restart_count if replaced else None
                if replaced is not None or any(o.name == c.name and o.restart_count < c.config.restart_count
                                               for o in before.values()):
                    out.append(PodEvent(t, "restart", c.id, c.name, c.image,
                                        {"restart_count": c.config.restart_count,
                                         **({"previous_restart_count": previous_restarts}
                                            if previous_restarts is not None else {})}))
                else:
                    out.append(PodEvent(t, "create", c.id, c.name, c.image))
                # new since the last sweep: every OOM kill its cgroup counts happened since
                old = _Seen("created", 0 if c.oom_kills is not None else None, c.config.restart_count, None, False,
                            c.name, c.image)
            out += self._changes(t, c, old)
        for cid, old in gone_by_key.values():
            out.append(PodEvent(t, "destroy", cid, old.name, old.image))
        return out

    @staticmethod
    def _changes(t: float, c: ContainerSample, old: _Seen) -> list[PodEvent]:
        out = []
        if c.status == "running" and old.status != "running":
            out.append(PodEvent(t, "start", c.id, c.name, c.image))
        if c.oom_kills is not None and old.oom_kills is not None and c.oom_kills > old.oom_kills:
            out.append(PodEvent(t, "oom", c.id, c.name, c.image, {"oom_kills": c.oom_kills, "via": "cgroup"}))
        if c.status in ("exited", "unknown") and old.status not in ("exited", "unknown"):
            if c.config.oom_killed and not old.oom_killed:
                out.append(PodEvent(t, "oom", c.id, c.name, c.image, {"via": "runtime"}))
            out.append(PodEvent(t, "die", c.id, c.name, c.image,
                                {"exit_code": c.config.exit_code} if c.config.exit_code is not None else None))
        return out
