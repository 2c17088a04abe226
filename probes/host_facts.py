"""Facts the sampler's sweep does not carry, sensed once per doctor run: toolkit binaries, CDI specs, /dev/char
links, the driver's version file, block device names and each container's cgroup limit files.

The doctor senses these here and hands the checks plain frozen records, so a check only judges values
(and a test builds the records by hand instead of faking a filesystem).
"""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from .fabric_manager import FabricManagerFacts, read_fabric_manager
from .cri.device_plugins import DevicePluginsDir, read_device_plugins
from .cri.node_config import NodeRuntimes, read_containerd_runtimes, read_crio_runtimes
from .model import ContainerSample

DEFAULT_CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
TOOLKIT_BINARIES = ("nvidia-container-runtime-hook", "nvidia-ctk", "nvidia-container-cli")
# dockerd's PATH often differs from ours: look where the packages install too.
STANDARD_BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
PROC_DRIVER_VERSION = "/proc/driver/nvidia/version"


@dataclass(frozen=True)
class HostFacts:
    """What the host has beyond the snapshot, for the toolkit, driver and /dev/char checks."""

    toolkit_binaries: Mapping[str, str | None] = field(default_factory=dict)  # name -> path, None: not found
    cdi_gpu_specs: tuple[str, ...] = ()  # spec files that mention nvidia.com/gpu
    cdi_dirs: tuple[str, ...] = DEFAULT_CDI_DIRS  # the directories searched
    dev_char_dir: str = "/dev/char"
    nvidia_char_links: tuple[str, ...] | None = None  # /dev/char/195:* entries; None: /dev/char is absent
    driver_version_file: str = PROC_DRIVER_VERSION
    driver_version_line: str | None = None  # its first line; None when the file is absent
    nvml_library_realpath: str | None = None  # where the NVML library symlink points
    # the node's containerd runtimes (config.toml and its drop-ins); None: no containerd config here
    containerd: NodeRuntimes | None = None
    # CRI-O's runtimes (crio.conf and crio.conf.d/*); None: no CRI-O config here
    crio: NodeRuntimes | None = None
    # the kubelet's device-plugins directory (kubelet.sock, nvidia*.sock); None: no such directory here
    device_plugins: DevicePluginsDir | None = None
    # NVIDIA Fabric Manager (probes/fabric_manager.py); None: not read (no GPU here is on an NVSwitch fabric)
    fabric_manager: FabricManagerFacts | None = None


@dataclass(frozen=True)
class ReadThrottle:
    device: str  # "/dev/vda (254:0)", or the bare numbers when the name is unknown
    kind: str  # "rbps" | "riops"
    value: str
    source: str  # the cgroup file it was read from


@dataclass(frozen=True)
class ContainerFacts:
    """One running container's cgroup limit files (empty for a stopped one, or when they cannot be read)."""

    cgroup_dirs: Mapping[str, str] = field(default_factory=dict)  # {controller: dir} (v1) / {"unified": dir}
    read_throttles: tuple[ReadThrottle, ...] = ()
    pids_dir: str | None = None
    pids_max: int | None = None  # None: no limit ("max") or unknown
    pids_failed_forks: int = 0  # pids.events "max": forks refused so far
    # pids.current of pids_dir when the limit is the pod's (the kubelet's podPidsLimit on the pod's cgroup, which
    # every container of the pod shares): None when the limit is the container's own (its count is the sample's)
    pids_current: int | None = None
    cpu_stat_file: str | None = None
    cpu_stat: Mapping[str, int] = field(default_factory=dict)  # nr_periods, nr_throttled, ...
    memlock_soft_bytes: int | None = None  # the init process's RLIMIT_MEMLOCK; -1 = unlimited; None = unknown
    limits_file: str | None = None


class HostProbe:
    """Senses HostFacts and ContainerFacts. Every location is a parameter so tests can point it elsewhere."""

    def __init__(
        self,
        path: str | None = None,
        cdi_dirs: Sequence[str] = DEFAULT_CDI_DIRS,
        dev_char_dir: str = "/dev/char",
        proc_driver_version: str = PROC_DRIVER_VERSION,
        sys_block_dir: str = "/sys/dev/block",
        containerd_config: str | None = None,  # None: $MLTOP_CONTAINERD_CONFIG, else /etc/containerd/config.toml
        crio_config: str | None = None,  # None: $MLTOP_CRIO_CONFIG, else /etc/crio/crio.conf (+ crio.conf.d)
        device_plugins_dir: str | None = None,  # None: $MLTOP_DEVICE_PLUGINS_DIR, else /var/lib/kubelet/...
        proc_root: str = "/proc",  # where Fabric Manager's process is looked for
    ):
        self.proc_root = proc_root
        self.containerd_config = containerd_config
        self.crio_config = crio_config
        self.device_plugins_dir = device_plugins_dir
        if path is None:
            parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
            parts += [d for d in STANDARD_BIN_DIRS if d not in parts]
            path = os.pathsep.join(parts)
        self.path = path
        self.cdi_dirs = tuple(cdi_dirs)
        self.dev_char_dir = dev_char_dir
        self.proc_driver_version = proc_driver_version
        self.sys_block_dir = sys_block_dir

    # ----------------------------------------------------------------- host

    def host_facts(self, extra_cdi_dirs: Iterable[str] = (), nvml_library: str | None = None,
                   fabric_needed: bool = False) -> HostFacts:
        """`fabric_needed`: a GPU is on an NVSwitch fabric, so Fabric Manager is looked for too."""
        specs, dirs = self.cdi_gpu_specs(extra_cdi_dirs)
        text = read_text(self.proc_driver_version)
        first = None
        if text is not None:
            first = text.strip().splitlines()[0] if text.strip() else ""
        return HostFacts(
            toolkit_binaries={name: shutil.which(name, path=self.path) for name in TOOLKIT_BINARIES},
            cdi_gpu_specs=tuple(specs),
            cdi_dirs=tuple(dirs),
            dev_char_dir=self.dev_char_dir,
            nvidia_char_links=self.nvidia_char_links(),
            driver_version_file=self.proc_driver_version,
            driver_version_line=first,
            nvml_library_realpath=os.path.realpath(nvml_library) if nvml_library else None,
            containerd=read_containerd_runtimes(self.containerd_config),
            crio=read_crio_runtimes(self.crio_config),
            device_plugins=read_device_plugins(self.device_plugins_dir),
            fabric_manager=read_fabric_manager(self.proc_root, self.path) if fabric_needed else None,
        )

    def cdi_gpu_specs(self, extra_dirs: Iterable[str] = ()) -> tuple[list[str], list[str]]:
        """(spec files that mention nvidia.com/gpu, directories searched)."""
        dirs = list(dict.fromkeys([*self.cdi_dirs, *extra_dirs]))
        found = []
        for d in dirs:
            for pattern in ("*.yaml", "*.yml", "*.json"):
                for spec in sorted(glob.glob(os.path.join(d, pattern))):
                    if "nvidia.com/gpu" in (read_text(spec) or ""):
                        found.append(spec)
        return found, dirs

    def nvidia_char_links(self) -> tuple[str, ...] | None:
        """The /dev/char/195:* entries, or None when /dev/char itself does not exist."""
        if not os.path.isdir(self.dev_char_dir):
            return None
        return tuple(sorted(e for e in os.listdir(self.dev_char_dir) if e.startswith("195:")))

    def block_device(self, maj_min: str) -> str:
        """"254:0" -> "/dev/vda (254:0)" using /sys/dev/block; the bare numbers when unknown."""
        try:
            name = os.path.basename(os.readlink(os.path.join(self.sys_block_dir, maj_min)))
            return f"/dev/{name} ({maj_min})"
        except OSError:
            return maj_min

    # ----------------------------------------------------------------- containers

    def cgroup_dirs(self, container: ContainerSample, version: int | None) -> dict[str, str]:
        """{controller: dir} (v1) or {"unified": dir} (v2) of a running container."""
        from .cgroups import CgroupGone, CgroupLocator

        locator = CgroupLocator(version)
        paths: dict[str, str] = {}
        if container.pid:
            try:
                paths = locator.paths_for_pid(container.pid)
            except CgroupGone:
                paths = {}
        return paths or locator.paths_for_id(container.id)

    def container_facts(self, container: ContainerSample, cgroup_version: int | None) -> ContainerFacts:
        if not container.running:
            return ContainerFacts()
        dirs = self.cgroup_dirs(container, cgroup_version)
        pids_dir = own_dir = dirs.get("unified") or dirs.get("pids")
        pids_max = None
        pids_current = None
        failed = 0
        if pids_dir:
            max_text = (read_text(os.path.join(pids_dir, "pids.max")) or "").strip()
            pids_max = int(max_text) if max_text.isdigit() else None
            pod_dir = os.path.dirname(pids_dir.rstrip("/"))
            if pids_max is None and container.kubernetes is not None and \
                    os.path.basename(pod_dir).startswith(("pod", "kubepods-")):
                # no limit of its own: the kubelet's podPidsLimit sits on the pod's cgroup, above the container's
                max_text = (read_text(os.path.join(pod_dir, "pids.max")) or "").strip()
                current_text = (read_text(os.path.join(pod_dir, "pids.current")) or "").strip()
                if max_text.isdigit():
                    pids_dir, pids_max = pod_dir, int(max_text)
                    pids_current = int(current_text) if current_text.isdigit() else None
            # (a refused fork counts where the forking task is on cgroup v1, where the limit is on v2: read both)
            for events in dict.fromkeys((os.path.join(d, "pids.events") for d in (own_dir, pids_dir))):
                for line in (read_text(events) or "").splitlines():
                    key, _, value = line.partition(" ")
                    if key == "max" and value.strip().isdigit():
                        failed = max(failed, int(value))
        cpu_dir = dirs.get("unified") or dirs.get("cpu") or dirs.get("cpuacct")
        cpu_stat: dict[str, int] = {}
        if cpu_dir:
            for line in (read_text(os.path.join(cpu_dir, "cpu.stat")) or "").splitlines():
                key, _, value = line.partition(" ")
                if value.strip().isdigit():
                    cpu_stat[key] = int(value)
        limits_file = f"/proc/{container.pid}/limits" if container.pid else None
        memlock = _memlock(read_text(limits_file)) if limits_file else None
        return ContainerFacts(
            limits_file=limits_file if memlock is not None else None,
            memlock_soft_bytes=memlock,
            cgroup_dirs=dirs,
            read_throttles=tuple(self._read_throttles(dirs)),
            pids_dir=pids_dir,
            pids_max=pids_max,
            pids_failed_forks=failed,
            pids_current=pids_current,
            cpu_stat_file=os.path.join(cpu_dir, "cpu.stat") if cpu_dir else None,
            cpu_stat=cpu_stat,
        )

    def _read_throttles(self, dirs: Mapping[str, str]) -> list[ReadThrottle]:
        out = []
        if "unified" in dirs:
            path = os.path.join(dirs["unified"], "io.max")
            for line in (read_text(path) or "").splitlines():
                parts = line.split()
                for kv in parts[1:]:
                    key, _, value = kv.partition("=")
                    if key in ("rbps", "riops") and value != "max":
                        out.append(ReadThrottle(self.block_device(parts[0]), key, value, path))
        elif "blkio" in dirs:
            for name, kind in (("blkio.throttle.read_bps_device", "rbps"),
                               ("blkio.throttle.read_iops_device", "riops")):
                path = os.path.join(dirs["blkio"], name)
                for line in (read_text(path) or "").splitlines():
                    parts = line.split()
                    if len(parts) == 2:
                        out.append(ReadThrottle(self.block_device(parts[0]), kind, parts[1], path))
        return out


def _memlock(limits: str | None) -> int | None:
    """The soft "Max locked memory" of a /proc/PID/limits text; -1 for unlimited."""
    for line in (limits or "").splitlines():
        if line.startswith("Max locked memory"):
            soft = line[len("Max locked memory"):].split()[0]
            return -1 if soft == "unlimited" else int(soft) if soft.isdigit() else None
    return None


def read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20).decode("utf-8", errors="replace")
    except OSError:
        return None
