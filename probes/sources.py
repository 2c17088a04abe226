"""The sources of containers a sweep asks: the Docker engine and any CRI runtimes. Each only names containers;
the sampler measures them all the same way, by cgroup path (STYLE.md, "Two kinds of source")."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from .cri import cri_endpoints
from .cri.source import CriSource
from .engine import DEFAULT_DOCKER_HOST, ContainerMeta
from .model import EngineStatus, SourceStatus


class CriSources:
    """Every CRI endpoint to ask (--cri-endpoint / MLTOP_CRI_ENDPOINT, else the default sockets present)."""

    def __init__(self, cli_value: str | None = None, background: bool = False):
        self.sources = [CriSource(endpoint, named, background=background)
                        for endpoint, named in cri_endpoints(cli_value)]
        self._pool: ThreadPoolExecutor | None = None

    def view(self) -> tuple[list[SourceStatus], list[ContainerMeta]]:
        if not self.sources:
            return [], []
        if len(self.sources) == 1:
            views = [self.sources[0].view()]
        else:  # two runtimes on one node: ask both at once
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=len(self.sources), thread_name_prefix="mltop-cri")
            views = list(self._pool.map(lambda source: source.view(), self.sources))
        statuses, metas, seen = [], [], set()
        for status, found in views:
            statuses.append(status)
            for meta in found:
                if meta.id not in seen:  # the same runtime behind two sockets (a symlink) names it once
                    seen.add(meta.id)
                    metas.append(meta)
        return statuses, metas

    def close(self) -> None:
        for source in self.sources:
            source.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def docker_source_status(engine: EngineStatus, version: str | None, containers: int, named: bool,
                         others: list[SourceStatus], socket_exists: bool | None = None) -> SourceStatus:
    """The Docker engine as one source among others. Where nobody named an engine, its default socket does not
    exist and a CRI runtime answers, it is "absent": a Kubernetes node without Docker, not an engine down.
    Turned off (--docker-host none), it is "disabled", its reason in `error`, like the engine's own status."""
    status = engine.status
    error = engine.error
    if socket_exists is None:
        socket_exists = os.path.exists(DEFAULT_DOCKER_HOST[len("unix://"):])
    if (not engine.ok and not named and engine.docker_host == DEFAULT_DOCKER_HOST
            and not socket_exists and any(s.ok for s in others)):
        status, error = "absent", None
    return SourceStatus("docker", engine.docker_host, status, error, "docker" if engine.ok else None,
                        version if engine.ok else None, containers if engine.ok else 0)
