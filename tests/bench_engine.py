"""A stand-in for the engine's per-container calls, for the benchmarks only (`--stand-in`).

When the shared engine lists containers but no longer answers `inspect` or `info` (it happened here: a mass
removal left dockerd holding container locks), the benchmarks can still measure what does not depend on it:
the steady state, where a sweep makes no engine call. The list and version calls stay real; `inspect` is
made from the list entry and the container's cgroup (its first process as the PID), `info` from the cgroup
filesystem, logs are empty. Start-up figures taken this way say nothing about a real engine's latency.
"""

from __future__ import annotations

import os
from typing import Any

from mltop.probes.cgroups import CGROUP_ROOT, detect_cgroup_version
from mltop.probes.engine import Engine


class StandInEngine(Engine):
    def __init__(self, docker_host: str | None = None, timeout_s: float = 10.0):
        super().__init__(docker_host, timeout_s)
        self._listed: dict[str, dict[str, Any]] = {}

    def list_containers(self) -> list[dict[str, Any]]:
        listed = super().list_containers()
        self._listed = {entry["Id"]: entry for entry in listed}
        return listed

    def info(self, refresh: bool = False) -> dict[str, Any]:
        self.client  # connect (the version call), as the real info() would
        return {"CgroupVersion": str(detect_cgroup_version()), "CgroupDriver": "cgroupfs",
                "Runtimes": {"runc": {}}, "DefaultRuntime": "runc", "CDISpecDirs": []}

    def inspect(self, container_id: str) -> dict[str, Any]:
        import docker.errors

        entry = self._listed.get(container_id)
        if entry is None:
            raise docker.errors.NotFound(f"no such container: {container_id}")
        running = entry.get("State") == "running"
        pid = _first_pid(container_id) if running else 0
        return {
            "Id": container_id,
            "Name": (entry.get("Names") or ["/" + container_id[:12]])[0],
            "Created": "",
            "RestartCount": 0,
            "State": {"Status": entry.get("State"), "Running": running, "Pid": pid, "ExitCode": 0,
                      "StartedAt": str(entry.get("Created")), "FinishedAt": "", "OOMKilled": False},
            "Config": {"Image": entry.get("Image"), "Cmd": (entry.get("Command") or "").split(), "Env": [],
                       "Labels": entry.get("Labels") or {}},
            "HostConfig": {"NetworkMode": (entry.get("HostConfig") or {}).get("NetworkMode")},
            "Mounts": [],
        }

    def logs(self, container_id: str, tail: int = 200, since: float | None = None,
             timestamps: bool = False) -> list[str]:
        return []


def _first_pid(container_id: str) -> int:
    for path in (f"{CGROUP_ROOT}/pids/docker/{container_id}/cgroup.procs",
                 f"{CGROUP_ROOT}/docker/{container_id}/cgroup.procs",
                 f"{CGROUP_ROOT}/system.slice/docker-{container_id}.scope/cgroup.procs"):
        try:
            with open(path) as f:
                pids = f.read().split()
            return int(pids[0]) if pids else 0
        except OSError:
            continue
    return 0


def stand_in_sampler(options):
    from mltop.probes.sampler import Sampler

    return Sampler(options, engine=StandInEngine(options.docker_host))


if __name__ == "__main__":  # a quick look
    from mltop.probes.sampler import ProbeOptions

    sampler = stand_in_sampler(ProbeOptions(nvml=False))
    snap = sampler.sweep()
    print(len(snap.containers), sum(1 for c in snap.containers if c.memory_bytes is not None), os.getloadavg())
    sampler.close()


def compile_bytecode() -> None:
    """Compile mltop's modules to bytecode before measuring start-up. This VM sets PYTHONDONTWRITEBYTECODE=1,
    so an editable install would be compiled from source at every start (~60 ms of CPU for the snapshot
    command), which no user's copy is: pip compiles at install, and Python caches on the first run."""
    import compileall

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in ("probes", "diagnostics", "tui"):
        compileall.compile_dir(os.path.join(root, package), quiet=1)
