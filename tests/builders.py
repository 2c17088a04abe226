"""Build snapshots by hand, for tests that need no engine and no GPU: every field has a plausible default and
any can be overridden by keyword.

    snap = snapshot(containers=[container("trainer", gpus=[gpu_use(0, memory_bytes=4 * GIB)])],
                    gpus=[gpu(0, processes=[gpu_process(4242, container="trainer")])])
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any, Iterable

from mltop.probes.model import (
    ContainerConfig,
    ContainerGpuUse,
    ContainerSample,
    DeviceRequest,
    EngineStatus,
    GpuProcess,
    GpuSample,
    HostInfo,
    Mount,
    NvmlStatus,
    ProcessSample,
    Snapshot,
)

MIB = 1 << 20
GIB = 1 << 30


def recent_start(hours_ago: float = 24.0) -> float:
    """A start for synthetic times: on a whole hour, `hours_ago` before now (never a fixed date, which the
    recorder's retention, or any 'how old is it' check, would one day find too old)."""
    return (time.time() // 3600 - hours_ago) * 3600.0


def container_id(name: str) -> str:
    """A stable 64-hex id for a name, so tests can refer to the same container in two snapshots."""
    return hashlib.sha256(name.encode()).hexdigest()


def config(**overrides: Any) -> ContainerConfig:
    values: dict[str, Any] = dict(
        command=("python3", "train.py"), entrypoint=(), env=(("PATH", "/usr/bin"),), labels={},
        created="2026-11-29T03:00:00Z", started_at="2026-11-29T03:00:01Z", finished_at=None,
        restart_count=0, restart_policy=None, exit_code=0, oom_killed=False, error=None, runtime="runc",
        device_requests=(), shm_size_bytes=64 * MIB, ipc_mode="private", pid_mode=None, network_mode="bridge",
        privileged=False, cap_add=(), memory_limit_bytes=None, nano_cpus=None, cpu_quota=None, cpu_period=None,
        cpuset_cpus=None, mounts=(), blkio_throttles={}, ulimits=(),
    )
    values.update(overrides)
    return ContainerConfig(**values)


def gpu_request(count: int = -1, device_ids: Iterable[str] = ()) -> DeviceRequest:
    """What `--gpus all` (count=-1) or `--gpus '"device=0,1"'` puts in HostConfig.DeviceRequests."""
    return DeviceRequest(driver="", count=count, device_ids=tuple(device_ids), capabilities=(("gpu",),))


def mount(destination: str, source: str = "/data", type: str = "bind", read_only: bool = False) -> Mount:
    return Mount(type=type, source=source, destination=destination, read_only=read_only)


def process(host_pid: int, cmdline: str = "python3 train.py", **overrides: Any) -> ProcessSample:
    values: dict[str, Any] = dict(host_pid=host_pid, container_pid=1, user="root", cmdline=cmdline,
                                  cpu_percent=12.5, rss_bytes=512 * MIB)
    values.update(overrides)
    return ProcessSample(**values)


def gpu_use(index: int = 0, memory_bytes: int | None = 4 * GIB, sm_percent: float | None = 50.0,
            uuid: str | None = None) -> ContainerGpuUse:
    return ContainerGpuUse(index=index, uuid=uuid or gpu_uuid(index), memory_bytes=memory_bytes,
                           sm_percent=sm_percent)


def container(name: str = "trainer", *, config_overrides: dict[str, Any] | None = None,
              **overrides: Any) -> ContainerSample:
    """A running container with moderate use; `config_overrides` go to its ContainerConfig, or pass
    `config=config(...)` whole."""
    cfg = overrides.pop("config", None) or config(**(config_overrides or {}))
    cid = overrides.pop("id", None) or container_id(name)
    values: dict[str, Any] = dict(
        id=cid, name=name, image="pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime", status="running", pid=4000,
        cpu_percent=95.0, cpu_limit_cores=None, cpu_limit_percent=None, memory_bytes=2 * GIB,
        memory_limit_bytes=cfg.memory_limit_bytes, memory_cache_bytes=256 * MIB, shm_bytes=0, pids=12,
        io_read_bytes=10 * GIB, io_write_bytes=1 * GIB, io_read_bytes_per_s=5 * MIB, io_write_bytes_per_s=1 * MIB,
        net_rx_bytes=100 * MIB, net_tx_bytes=50 * MIB, net_rx_bytes_per_s=10_000.0, net_tx_bytes_per_s=5_000.0,
        oom_kills=0, cpu_throttled_periods=0, pressure=None,
        cgroup_path=f"/sys/fs/cgroup/memory/docker/{cid}", gpus=(), processes=(process(4000),), config=cfg,
    )
    values.update(overrides)
    if values["status"] != "running" and "pid" not in overrides:
        values["pid"] = None
    for key in ("gpus", "processes"):
        values[key] = tuple(values[key])
    return ContainerSample(**values)


def placeholder(name: str = "new-job", state: str = "running", listed_status: str = "Up 2 seconds", *,
                inspect_error: str | None = None, **overrides: Any) -> ContainerSample:
    """A container as the engine's list alone describes it, its docker inspect still pending (or failed, with
    the engine's words in `inspect_error`): the configuration probes.engine.provisional_meta makes, nothing read."""
    from mltop.probes.engine import provisional_meta

    cid = overrides.pop("id", None) or container_id(name)
    meta = provisional_meta({"Id": cid, "Names": [f"/{name}"], "State": state, "Status": listed_status,
                             "Image": "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime"})
    values: dict[str, Any] = dict(id=cid, status=state, config=meta.config, processes=(), config_pending=True,
                                  config_error=inspect_error)
    values.update(overrides)
    return container(name, **values)


def gpu_uuid(index: int) -> str:
    return f"GPU-00000000-0000-0000-0000-{index:012d}"


def gpu_process(host_pid: int, memory_bytes: int | None = 4 * GIB, sm_percent: float | None = 50.0,
                container: ContainerSample | str | None = None, **overrides: Any) -> GpuProcess:
    """A process on a GPU; `container` (a sample or a name) attributes it the way the sampler would."""
    values: dict[str, Any] = dict(host_pid=host_pid, type="compute", gpu_memory_bytes=memory_bytes,
                                  sm_percent=sm_percent, name="python3")
    if container is not None:
        name = container if isinstance(container, str) else container.name
        cid = container_id(name) if isinstance(container, str) else container.id
        values.update(container_id=cid, container_name=name, runtime="docker")
    values.update(overrides)
    return GpuProcess(**values)


def gpu(index: int = 0, **overrides: Any) -> GpuSample:
    values: dict[str, Any] = dict(
        index=index, uuid=gpu_uuid(index), name="NVIDIA H100 80GB HBM3", utilization_percent=60.0,
        memory_utilization_percent=30.0, memory_used_bytes=8 * GIB, memory_total_bytes=80 * GIB,
        temperature_c=55.0, power_w=300.0, power_limit_w=700.0, throttle_reasons=(), persistence_mode=True,
        processes=(), pci_bus_id=f"00000000:{0x18 + index:02X}:00.0", unavailable={},
    )
    values.update(overrides)
    values["processes"] = tuple(values["processes"])
    values["throttle_reasons"] = tuple(values["throttle_reasons"])
    return GpuSample(**values)


def host(**overrides: Any) -> HostInfo:
    engine = overrides.pop("engine", None) or EngineStatus("ok", None, "unix:///var/run/docker.sock")
    nvml = overrides.pop("nvml", None) or NvmlStatus("ok", None, driver_version="550.54.15",
                                                      cuda_driver_version="12.4",
                                                      library_path="/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")
    values: dict[str, Any] = dict(
        hostname="gpu-host-1", kernel="6.1.0-18-amd64", os_release="Debian GNU/Linux 12 (bookworm)", cpu_count=32,
        memory_total_bytes=256 * GIB, docker_version="24.0.7", docker_host="unix:///var/run/docker.sock",
        cgroup_version=2, cgroup_driver="systemd", runtimes=("nvidia", "runc"), default_runtime="runc",
        cdi_spec_dirs=("/etc/cdi", "/var/run/cdi"), engine=engine, nvml=nvml, pressure={}, iowait_percent=0.5,
        limitations=(),
    )
    values.update(overrides)
    return HostInfo(**values)


def snapshot(containers: Iterable[ContainerSample] = (), gpus: Iterable[GpuSample] = (), *,
             taken_at: float | None = None, interval_s: float | None = 1.0, **host_overrides: Any) -> Snapshot:
    return Snapshot(
        taken_at=time.time() if taken_at is None else taken_at,
        interval_s=interval_s,
        host=host_overrides.pop("host", None) or host(**host_overrides),
        gpus=tuple(gpus),
        containers=tuple(sorted(containers, key=lambda c: c.name)),
    )


def replace(record: Any, **changes: Any) -> Any:
    """dataclasses.replace, re-exported so tests read `replace(c, status="exited")`."""
    return dataclasses.replace(record, **changes)


def gpu_workload(name: str = "trainer", index: int = 0, pid: int = 4242, memory_bytes: int = 4 * GIB,
                 sm_percent: float = 80.0, **container_overrides: Any) -> tuple[ContainerSample, GpuSample]:
    """A container that requested a GPU and uses it, and that GPU listing its process: consistent both ways."""
    cfg_over = dict(container_overrides.pop("config_overrides", {}) or {})
    cfg_over.setdefault("device_requests", (gpu_request(),))
    cfg_over.setdefault("env", (("PATH", "/usr/bin"), ("NVIDIA_VISIBLE_DEVICES", "all")))
    c = container(name, config_overrides=cfg_over, gpus=(gpu_use(index, memory_bytes, sm_percent),),
                  processes=(process(pid, gpu_memory_bytes=memory_bytes, gpu_indices=(index,),
                                     sm_percent=sm_percent),),
                  **container_overrides)
    g = gpu(index, memory_used_bytes=memory_bytes + 512 * MIB, utilization_percent=sm_percent,
            processes=(gpu_process(pid, memory_bytes, sm_percent, container=c),))
    return c, g
