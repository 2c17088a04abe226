"""A pod container's attempts, as kubectl counts them.

The kubelet restarts a pod container by creating a new CRI container with the same `metadata.name` in the same
pod, `metadata.attempt` n (also its `io.kubernetes.container.restartCount` annotation) and the log file
`<name>/<n>.log`, and keeps the dead one(s) until its garbage collection. The runtime lists every attempt; mltop
shows one container per pod container, the newest attempt, carrying how the earlier ones ended.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable

from ..engine import ContainerMeta
from ..model import ContainerAttempt


def _order(entry: tuple[Any, ContainerMeta, ContainerAttempt]) -> tuple[int, int]:
    container = entry[0]
    return int(container.metadata.attempt), int(container.created_at)


def collapse_attempts(entries: Iterable[tuple[Any, ContainerMeta, ContainerAttempt]],
                      cache: dict | None = None) -> list[ContainerMeta]:
    """One meta per pod container (pod UID, or the sandbox where none is known, and container name): the newest
    attempt (highest attempt, then the newest created), its `kubernetes.previous_attempts` the others, newest
    first. `entries`: (the listed CRI container, its meta, its attempt record), in list order; the result keeps
    that order (each pod container where its first attempt stood). Containers outside pods pass through.

    `cache` (the previous call's, filled anew): while the attempts' metas are the same objects, the same merged
    meta is given back, so the sampler's caches keyed on a meta's identity (limits, a container at rest) hold."""
    previous = dict(cache or {})
    if cache is not None:
        cache.clear()
    groups: dict[tuple[str, str], list[tuple[Any, ContainerMeta, ContainerAttempt]]] = {}
    order: list[tuple[str, str] | ContainerMeta] = []
    for entry in entries:
        container, meta = entry[0], entry[1]
        if meta.kubernetes is None:
            order.append(meta)
            continue
        key = (meta.kubernetes.pod_uid or container.pod_sandbox_id, container.metadata.name)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(entry)
    out = []
    for item in order:
        if isinstance(item, ContainerMeta):
            out.append(item)
            continue
        group = groups[item]
        if len(group) == 1:
            out.append(group[0][1])
            continue
        group.sort(key=_order, reverse=True)
        members = tuple((entry[1], entry[2]) for entry in group)
        hit = previous.get(item)
        if hit is not None and len(hit[0]) == len(members) and all(
                a[0] is b[0] and a[1] is b[1] for a, b in zip(hit[0], members)):
            merged = hit[1]
        else:
            newest = group[0][1]
            earlier = tuple(_with_log_path(a, newest.config.log_path) for _, _, a in group[1:])
            merged = dataclasses.replace(newest, kubernetes=dataclasses.replace(newest.kubernetes,
                                                                                previous_attempts=earlier))
        if cache is not None:
            cache[item] = (members, merged)
        out.append(merged)
    return out


def _with_log_path(attempt: ContainerAttempt, newest_log: str | None) -> ContainerAttempt:
    """An attempt whose status is not known yet has its log file where the kubelet puts it: beside the newest's."""
    if attempt.log_path or not newest_log:
        return attempt
    return dataclasses.replace(attempt, log_path=attempt_log_path(newest_log, attempt.attempt))


def attempt_log_path(log_path: str, attempt: int) -> str:
    """The log file of another attempt of the container whose log is `log_path` (`…/<name>/<n>.log`)."""
    return os.path.join(os.path.dirname(log_path), f"{attempt}.log")


def previous_log_path(c) -> str | None:
    """The log file `kubectl logs --previous` reads for a restarted pod container (a ContainerSample) that runs
    again: its previous attempt's own file, else (that container already collected) `<n-1>.log` beside its log,
    which can outlive it; None when it has not restarted, has ended itself (its own log is the last ended one),
    or no such file is on disk."""
    k = c.kubernetes
    if k is None or c.status in ("exited", "dead"):
        return None
    log_path = c.config.log_path
    candidates = [a.log_path for a in k.previous_attempts[:1] if a.log_path]
    if log_path:
        stem = os.path.basename(log_path).split(".", 1)[0]
        current = int(stem) if stem.isdigit() else c.config.restart_count
        if current > 0:
            candidates.append(attempt_log_path(log_path, current - 1))
    for path in candidates:
        if os.path.exists(path):
            return path
    return None
