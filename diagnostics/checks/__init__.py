"""The checks: each turns a snapshot (plus recent logs and host lookups) into findings with evidence and a fix.

A host check is `check(ctx) -> list[Finding]`; a container check is `check(ctx, container) -> list[Finding]`.
A check that cannot judge raises `CheckSkipped(reason)`; any other exception is caught by the doctor and
reported as a skipped check, so one broken check never hides the others.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping, Sequence

from mltop.probes.model import ContainerSample, GpuSample, Snapshot

from . import cuda_compat
from .findings import CRITICAL, INFO, WARNING, Finding, evidence
from .read_test import ReadTestResult

MIB = 1 << 20
DEFAULT_SHM_BYTES = 64 * MIB


class CheckSkipped(Exception):
    """A check could not judge (a source is unavailable); the reason goes to `checks_skipped`."""


# --------------------------------------------------------------------------- thresholds


def _threshold(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Thresholds:
    """Heuristic limits (no published standard): configurable, and named in the evidence when they fire."""

    memory_near_limit: float = _threshold(0.90, "working set / memory limit at or above which oom.near_limit fires")
    shm_small_bytes: int = _threshold(DEFAULT_SHM_BYTES, "a /dev/shm this size or smaller counts as small")
    shm_near_full: float = _threshold(0.90, "/dev/shm use / size at or above which a small shm is a warning")
    restart_loop_count: int = _threshold(3, "RestartCount at or above which a container is in a restart loop")
    cpu_throttled_ratio: float = _threshold(0.25, "share of CFS periods throttled from which cpu.throttled fires")
    pids_near_max: float = _threshold(0.90, "pids.current / pids.max at or above which pids.near_max fires")
    io_psi_some_avg10: float = _threshold(20.0, "I/O pressure (PSI some avg10, %) at or above which reads are stalled")
    host_iowait_percent: float = _threshold(20.0, "host iowait % at or above which reads are stalled (no cgroup PSI)")
    io_min_read_mb_s: float = _threshold(100.0, "read throughput (MB/s) below which reads are slow")
    gpu_idle_util_percent: float = _threshold(1.0, "GPU utilisation % at or below which a GPU counts as idle")

    def named(self, name: str) -> str:
        """How evidence names a threshold: its value and the CLI option that sets it."""
        return f"threshold {name}={getattr(self, name)} (--{name.replace('_', '-')})"

    @classmethod
    def options(cls) -> list[tuple[str, type, object, str]]:
        """(name, type, default, help) for each threshold, for the command line."""
        return [(f.name, type(f.default), f.default, f.metadata.get("help", "")) for f in fields(cls)]


# --------------------------------------------------------------------------- host lookups


DEFAULT_CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
TOOLKIT_BINARIES = ("nvidia-container-runtime-hook", "nvidia-ctk", "nvidia-container-cli")
# dockerd's PATH often differs from ours: look where the packages install too.
STANDARD_BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


class HostProbe:
    """Host lookups beyond the snapshot: toolkit binaries, CDI specs, device links, cgroup and /proc files.

    Every location is a parameter so tests can point a lookup at a temporary directory.
    """

    def __init__(
        self,
        path: str | None = None,
        cdi_dirs: Sequence[str] = DEFAULT_CDI_DIRS,
        dev_char_dir: str = "/dev/char",
        proc_driver_version: str = "/proc/driver/nvidia/version",
        sys_block_dir: str = "/sys/dev/block",
    ):
        if path is None:
            parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
            parts += [d for d in STANDARD_BIN_DIRS if d not in parts]
            path = os.pathsep.join(parts)
        self.path = path
        self.cdi_dirs = tuple(cdi_dirs)
        self.dev_char_dir = dev_char_dir
        self.proc_driver_version = proc_driver_version
        self.sys_block_dir = sys_block_dir

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.path)

    def cdi_gpu_specs(self, extra_dirs: Iterable[str] = ()) -> tuple[list[str], list[str]]:
        """(spec files that mention nvidia.com/gpu, directories searched)."""
        dirs = list(dict.fromkeys([*self.cdi_dirs, *extra_dirs]))
        found = []
        for d in dirs:
            for pattern in ("*.yaml", "*.yml", "*.json"):
                for spec in sorted(glob.glob(os.path.join(d, pattern))):
                    text = self.read_text(spec) or ""
                    if "nvidia.com/gpu" in text:
                        found.append(spec)
        return found, dirs

    def nvidia_char_links(self) -> list[str] | None:
        """The /dev/char/195:* entries, or None when /dev/char itself does not exist."""
        if not os.path.isdir(self.dev_char_dir):
            return None
        return sorted(e for e in os.listdir(self.dev_char_dir) if e.startswith("195:"))

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, "rb") as f:
                return f.read(1 << 20).decode("utf-8", errors="replace")
        except OSError:
            return None

    def block_device(self, maj_min: str) -> str:
        """"254:0" -> "/dev/vda (254:0)" using /sys/dev/block; the bare numbers when unknown."""
        try:
            name = os.path.basename(os.readlink(os.path.join(self.sys_block_dir, maj_min)))
            return f"/dev/{name} ({maj_min})"
        except OSError:
            return maj_min

    def cgroup_dirs(self, container: ContainerSample, version: int | None) -> dict[str, str]:
        """{controller: dir} (v1) or {"unified": dir} (v2) of a running container."""
        from mltop.probes.cgroups import CgroupGone, CgroupLocator

        locator = CgroupLocator(version)
        paths: dict[str, str] = {}
        if container.pid:
            try:
                paths = locator.paths_for_pid(container.pid)
            except CgroupGone:
                paths = {}
        return paths or locator.paths_for_id(container.id)


# --------------------------------------------------------------------------- context


@dataclass
class CheckContext:
    snapshot: Snapshot
    containers: tuple[ContainerSample, ...]  # the ones being diagnosed
    logs: Mapping[str, tuple[str, ...]]  # container id -> recent log lines (absent: not read)
    host: HostProbe
    thresholds: Thresholds
    log_tail: int = 200
    previous: Snapshot | None = None  # an earlier sweep, for counters that rise
    read_tests: Mapping[str, ReadTestResult] = field(default_factory=dict)  # container id -> result
    # container id -> the device check's data["frameworks"] (module -> what the container's Python found)
    frameworks: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    _cgroups: dict[str, dict[str, str]] = field(default_factory=dict)

    def log_lines(self, c: ContainerSample) -> tuple[str, ...]:
        return self.logs.get(c.id, ())

    def log_source(self, c: ContainerSample) -> str:
        return f"docker logs --tail {self.log_tail} {c.name}"

    def previous_of(self, c: ContainerSample) -> ContainerSample | None:
        if self.previous is None:
            return None
        for p in self.previous.containers:
            if p.id == c.id:
                return p
        return None

    def cgroup_dirs(self, c: ContainerSample) -> dict[str, str]:
        if c.id not in self._cgroups:
            self._cgroups[c.id] = self.host.cgroup_dirs(c, self.snapshot.host.cgroup_version)
        return self._cgroups[c.id]

    def imported_frameworks(self, c: ContainerSample) -> list[tuple[str, Mapping[str, Any]]]:
        """(module, result) for each framework the device check imported in `c`; empty when none ran."""
        found = self.frameworks.get(c.id) or {}
        return [(module, fw) for module, fw in found.items() if isinstance(fw, Mapping) and fw.get("imported")]

    def framework_source(self, c: ContainerSample) -> str:
        return f"mltop run device-check {c.name}"

    def gpu(self, index: int) -> GpuSample | None:
        for g in self.snapshot.gpus:
            if g.index == index:
                return g
        return None


# --------------------------------------------------------------------------- small helpers


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _bytes(n: int | float) -> str:
    return f"{int(n)} bytes ({_human(n)})"


def _line(text: str, limit: int = 400) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= limit else text[:limit] + "…"


def _matches(lines: Sequence[str], pattern: re.Pattern[str], keep: int = 3) -> list[str]:
    """The last `keep` lines matching `pattern`, verbatim."""
    hits = [line for line in lines if pattern.search(line)]
    return hits[-keep:]


def _log_evidence(ctx: CheckContext, c: ContainerSample, lines: Iterable[str]) -> list[str]:
    """Log lines as evidence, verbatim (repr-quoted: the text is data); repeats folded into one."""
    counts: dict[str, int] = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    return [evidence(f"log line {_line(line)!r}" + (f" (x{n})" if n > 1 else ""), ctx.log_source(c))
            for line, n in counts.items()]


def _cfg_source(c: ContainerSample) -> str:
    return f"docker inspect {c.name}"


def looks_like_gpu_workload(c: ContainerSample) -> list[str]:
    """Evidence that a container is meant to use GPUs: CUDA image environment or the NVIDIA runtime."""
    out = []
    for name in ("CUDA_VERSION", "NVIDIA_REQUIRE_CUDA", "NVIDIA_VISIBLE_DEVICES", "NV_CUDA_CUDART_VERSION"):
        value = c.config.env_value(name)
        if value is not None:
            out.append(evidence(f"Config.Env {name}={value}", _cfg_source(c)))
    return out


# --------------------------------------------------------------------------- engine and driver (host)


def check_engine(ctx: CheckContext) -> list[Finding]:
    engine = ctx.snapshot.host.engine
    if engine.ok:
        return []
    return [Finding(
        "engine.unreachable", CRITICAL, None, "The Docker engine did not answer: containers cannot be checked",
        (evidence(f"engine status {engine.status}: {engine.error}", f"Docker API at {engine.docker_host}"),),
        "Start or reach the engine: `sudo systemctl start docker`, or point --docker-host / DOCKER_HOST at it",
    )]


def _driver_file_evidence(ctx: CheckContext) -> list[str]:
    text = ctx.host.read_text(ctx.host.proc_driver_version)
    if text is None:
        return [evidence("absent (no NVIDIA kernel module loaded)", ctx.host.proc_driver_version)]
    first = text.strip().splitlines()[0] if text.strip() else ""
    return [evidence(repr(_line(first)), ctx.host.proc_driver_version)]


def _gpu_requesters(ctx: CheckContext) -> list[ContainerSample]:
    return [c for c in ctx.snapshot.containers if c.config.requests_gpus]


def check_driver(ctx: CheckContext) -> list[Finding]:
    """driver.nvml_mismatch, driver.not_loaded, gpu.lost, driver.nvml_timeout from NVML's state."""
    nvml = ctx.snapshot.host.nvml
    source = f"NVML ({nvml.library_path or 'libnvidia-ml.so.1'})"
    if nvml.status == "disabled":
        raise CheckSkipped("NVML disabled (--no-nvml)")
    if nvml.status == "version_mismatch":
        ev = [evidence(f"nvmlInit: {nvml.error}", source)] + _driver_file_evidence(ctx)
        lib = nvml.library_path
        if lib:
            real = os.path.realpath(lib)
            if real != lib:
                ev.append(evidence(f"{lib} -> {real}", "library symlink (its suffix is the library version)"))
        return [Finding(
            "driver.nvml_mismatch", CRITICAL, None,
            "NVML: driver/library version mismatch (driver upgraded without a reboot)", tuple(ev),
            "Reboot the host, or reload the kernel modules: `sudo rmmod nvidia_uvm nvidia_drm nvidia_modeset "
            "nvidia && sudo modprobe nvidia`",
        )]
    if nvml.status in ("driver_not_loaded", "library_not_found"):
        wanting = _gpu_requesters(ctx)
        if not wanting:
            return []  # a host without GPUs and no container asking for one is fine
        ev = [evidence(f"NVML status {nvml.status}: {nvml.error}", source)] + _driver_file_evidence(ctx)
        ev += [evidence(f"{c.name} requests GPUs (HostConfig.DeviceRequests/Runtime)", _cfg_source(c))
               for c in wanting[:5]]
        return [Finding(
            "driver.not_loaded", CRITICAL, None,
            "Containers ask for GPUs but the NVIDIA driver is not loaded or its library is missing", tuple(ev),
            "Load the driver: `sudo modprobe nvidia`; if that fails rebuild it for the running kernel "
            "(`sudo dkms autoinstall`) or reinstall the NVIDIA driver",
        )]
    if nvml.status == "gpu_lost":
        return [Finding(
            "gpu.lost", CRITICAL, None, "A GPU has fallen off the bus",
            (evidence(f"NVML status gpu_lost: {nvml.error}", source),),
            "Check `sudo dmesg | grep -i xid` for Xid 79; reset the GPU (`sudo nvidia-smi -r -i N`) or reboot",
        )]
    if nvml.status == "timeout":
        return [Finding(
            "driver.nvml_timeout", WARNING, None, "NVML did not answer in time: the driver may be hung",
            (evidence(f"NVML status timeout: {nvml.error}", source),),
            "Check `sudo dmesg | grep -i xid` and whether nvidia-smi hangs (D state); a reboot clears a hung driver",
        )]
    if not nvml.ok:
        raise CheckSkipped(f"NVML unavailable ({nvml.status}): {nvml.error}")
    return []


BAD_CLOCK_REASONS = ("hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")


def _gpu_users(gpu: GpuSample) -> str:
    names = sorted({p.container_name or f"host pid {p.host_pid}" for p in gpu.processes})
    return ", ".join(names) if names else "none"


def check_gpu_health(ctx: CheckContext) -> list[Finding]:
    """gpu.throttled (bad clock-event reasons) and gpu.persistence_off, per host."""
    nvml = ctx.snapshot.host.nvml
    if nvml.status == "disabled":
        raise CheckSkipped("NVML disabled (--no-nvml)")
    if not nvml.ok and not ctx.snapshot.gpus:
        raise CheckSkipped(f"NVML unavailable ({nvml.status})")
    out = []
    for g in ctx.snapshot.gpus:
        bad = [r for r in g.throttle_reasons if r in BAD_CLOCK_REASONS]
        if bad:
            ev = [
                evidence(f"GPU {g.index} ({g.name}, {g.uuid}) clock event reasons {', '.join(g.throttle_reasons)}",
                         "NVML nvmlDeviceGetCurrentClocksEventReasons"),
                evidence(f"temperature {g.temperature_c} C, power {g.power_w} W of {g.power_limit_w} W",
                         "NVML nvmlDeviceGetTemperature / nvmlDeviceGetPowerUsage"),
                evidence(f"used by {_gpu_users(g)}", "NVML processes joined to containers"),
            ]
            thermal = any("thermal" in r for r in bad)
            out.append(Finding(
                "gpu.throttled", WARNING, None,
                f"GPU {g.index} is slowed down by {'heat' if thermal else 'hardware/power'} ({', '.join(bad)})",
                tuple(ev),
                "Check cooling and power delivery (fans, airflow, PSU, `nvidia-smi -q -d PERFORMANCE`); "
                "if the power cap is deliberate, ignore",
            ))
    off = [g for g in ctx.snapshot.gpus if g.persistence_mode is False]
    if off:
        out.append(Finding(
            "gpu.persistence_off", INFO, None,
            f"Persistence mode is off on {len(off)} GPU(s): every CUDA start-up re-initialises the driver",
            tuple(evidence(f"GPU {g.index} ({g.uuid}) persistence mode 0", "NVML nvmlDeviceGetPersistenceMode")
                  for g in off),
            "`sudo systemctl enable --now nvidia-persistenced`",
        ))
    return out


def check_dev_char_links(ctx: CheckContext) -> list[Finding]:
    """gpu.dev_char_missing: systemd cgroup driver without /dev/char/195:* (GPUs vanish on daemon-reload)."""
    host = ctx.snapshot.host
    if host.cgroup_driver != "systemd":
        return []
    gpu_running = [c for c in _gpu_requesters(ctx) if c.running]
    if not gpu_running:
        return []
    links = ctx.host.nvidia_char_links()
    if links:
        return []
    found = "directory absent" if links is None else "no 195:* entries"
    ev = [
        evidence("CgroupDriver systemd", "docker info"),
        evidence(f"{ctx.host.dev_char_dir}: {found}", "host filesystem"),
    ] + [evidence(f"{c.name} runs with GPUs", _cfg_source(c)) for c in gpu_running[:5]]
    return [Finding(
        "gpu.dev_char_missing", WARNING, None,
        "GPU containers will lose their GPUs at the next `systemctl daemon-reload` "
        "(NVML: Unknown Error inside them)",
        tuple(ev),
        "`sudo nvidia-ctk system create-dev-char-symlinks --create-all` (and enable the udev rule), "
        "or start GPU containers through CDI (`--device nvidia.com/gpu=all`)",
    )]


HOST_CHECKS: tuple[tuple[str, Callable[[CheckContext], list[Finding]]], ...] = (
    ("engine", check_engine),
    ("driver", check_driver),
    ("gpu.health", check_gpu_health),
    ("gpu.dev_char", check_dev_char_links),
)


# --------------------------------------------------------------------------- toolkit and visibility


_TOOLKIT_ERROR = re.compile(
    r"could not select device driver|unknown or invalid runtime name: nvidia|"
    r"failed to discover GPU vendor from CDI|unresolvable CDI devices", re.IGNORECASE)


def check_toolkit(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """toolkit.missing / toolkit.not_registered for containers that ask for GPUs."""
    error = c.config.error or ""
    failed = bool(_TOOLKIT_ERROR.search(error))
    if not c.config.requests_gpus and not failed:
        return []
    host = ctx.snapshot.host
    runtimes = host.runtimes
    has_runtime = "nvidia" in runtimes
    binaries = {name: ctx.host.which(name) for name in TOOLKIT_BINARIES}
    specs, cdi_dirs = ctx.host.cdi_gpu_specs(host.cdi_spec_dirs)
    wants_runtime = c.config.runtime == "nvidia"
    wants_cdi = any(r.driver == "cdi" for r in c.config.device_requests)
    hook = binaries["nvidia-container-runtime-hook"]

    # What this container's way of asking needs, and whether the host has it.
    if wants_cdi:
        served = bool(specs)
    elif wants_runtime:
        served = has_runtime
    else:  # --gpus: dockerd registers its nvidia driver at start-up when it finds the hook binary
        served = bool(hook or has_runtime or specs)
    if served and not failed:
        return []

    ev = []
    if c.config.device_requests:
        reqs = "; ".join(
            f"Driver={r.driver!r} Count={r.count} DeviceIDs={list(r.device_ids)} "
            f"Capabilities={[list(x) for x in r.capabilities]}" for r in c.config.device_requests)
        ev.append(evidence(f"HostConfig.DeviceRequests {reqs}", _cfg_source(c)))
    if c.config.runtime:
        ev.append(evidence(f"HostConfig.Runtime {c.config.runtime}", _cfg_source(c)))
    if error:
        ev.append(evidence(f"State.Error {error!r} (ExitCode {c.config.exit_code})", _cfg_source(c)))
    ev.append(evidence(f"Runtimes {', '.join(runtimes) or 'none'} (default {host.default_runtime})", "docker info"))
    for name, where in binaries.items():
        ev.append(evidence(f"{name}: {where or 'not found'}", "host PATH lookup"))
    ev.append(evidence(f"CDI specs for nvidia.com/gpu: {', '.join(specs) or 'none'}",
                       f"CDI directories {', '.join(cdi_dirs)}"))

    installed = any(binaries.values()) or bool(specs)
    if not installed:
        return [Finding(
            "toolkit.missing", CRITICAL, c.name,
            "The container asks for GPUs but the NVIDIA Container Toolkit is not installed", tuple(ev),
            "Install nvidia-container-toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker && "
            "sudo systemctl restart docker` (or CDI: `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml` "
            "and run with `--device nvidia.com/gpu=all`)",
        )]
    if wants_cdi and not specs:
        fix = "Generate the CDI spec: `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
    elif wants_cdi:
        fix = ('Enable CDI in the engine (Docker 25-27): add `"features": {"cdi": true}` to '
               "/etc/docker/daemon.json and `sudo systemctl restart docker`")
    else:
        fix = ("Register the toolkit with the engine and restart it: `sudo nvidia-ctk runtime configure "
               "--runtime=docker && sudo systemctl restart docker` (dockerd looks for the hook only at start-up)")
    return [Finding(
        "toolkit.not_registered", CRITICAL, c.name,
        "The NVIDIA Container Toolkit is installed but the engine does not use it "
        "(dockerd started before the install, or no runtime configured)",
        tuple(ev), fix,
    )]


_NO_GPU_LOG = re.compile(
    r"no CUDA-capable device is detected|Found no NVIDIA driver on your system|"
    r"Could not find cuda drivers on your machine|No GPU/TPU found|CUDA driver initialization failed|"
    r"cudaErrorNoDevice|CUDA_ERROR_NO_DEVICE", re.IGNORECASE)


_FRAMEWORK_GPU_NOTE = re.compile(r"cuda|gpu|nvidia|driver|device", re.IGNORECASE)


def _framework_gpu_evidence(ctx: CheckContext, c: ContainerSample) -> tuple[list[str], bool]:
    """(evidence of CUDA builds that find no GPU, whether any framework does find one), from the device check.

    A CPU-only build (built_with_cuda None) is no sign of a GPU workload: it could not use one anyway.
    """
    ev: list[str] = []
    sees_gpu = False
    source = ctx.framework_source(c)
    for module, fw in ctx.imported_frameworks(c):
        if fw.get("gpu_available"):
            sees_gpu = True
        elif fw.get("built_with_cuda") and fw.get("gpu_available") is False:
            ev.append(evidence(f"{module} {fw.get('version')} built with CUDA {fw.get('built_with_cuda')} finds no "
                               f"GPU (device count {fw.get('device_count')})", source))
            notes = [n for n in [*(fw.get("errors") or ()), *(fw.get("warnings") or ())]
                     if _FRAMEWORK_GPU_NOTE.search(str(n))]
            ev += [evidence(f"{module} said {_line(str(n))!r}", source) for n in notes[:2]]
    return ev, sees_gpu


def check_gpu_visible(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """gpu.not_visible: a GPU workload without GPUs (no request, NVIDIA_VISIBLE_DEVICES void/none/empty), or a
    CUDA build of a framework that finds no GPU (from the device check)."""
    cfg = c.config
    signs = looks_like_gpu_workload(c)
    log_hits = _matches(ctx.log_lines(c), _NO_GPU_LOG)
    framework_ev, framework_sees_gpu = _framework_gpu_evidence(ctx, c)
    if framework_sees_gpu and not framework_ev:
        log_hits = []  # the container's own framework found a GPU just now: older log lines are outvoted
    has_gpus = cfg.requests_gpus or framework_sees_gpu  # a GPU passed as a device node has no request
    visible = cfg.env_value("NVIDIA_VISIBLE_DEVICES")
    ev: list[str] = []
    title = None
    if not has_gpus and (signs or log_hits or framework_ev):
        title = "Looks like a GPU workload but has no GPU assigned"
        ev += signs + framework_ev
        ev.append(evidence("HostConfig.DeviceRequests empty and Runtime "
                           f"{cfg.runtime or 'default'} (no --gpus)", _cfg_source(c)))
    elif cfg.requests_gpus and not cfg.device_requests and visible is not None and \
            visible.strip().lower() in ("", "void", "none"):
        # With --runtime=nvidia the variable decides which GPUs are injected.
        title = f"NVIDIA_VISIBLE_DEVICES={visible!r} hides every GPU from the container"
        ev.append(evidence(f"Config.Env NVIDIA_VISIBLE_DEVICES={visible!r}", _cfg_source(c)))
        ev += framework_ev
    elif has_gpus and (log_hits or framework_ev):
        title = ("The container asks for GPUs but its framework finds none" if cfg.requests_gpus else
                 "A framework finds no GPU although another one in the container does")
        ev += framework_ev
    if title is None:
        return _check_cuda_visible_devices(c)
    ev += _log_evidence(ctx, c, log_hits)
    return [Finding(
        "gpu.not_visible", WARNING, c.name, title, tuple(ev),
        "Run with `--gpus all` (or `--gpus '\"device=<uuid>\"'`); do not set NVIDIA_VISIBLE_DEVICES to "
        "void/none/empty; unset a stale CUDA_VISIBLE_DEVICES",
    )] + _check_cuda_visible_devices(c)


def _check_cuda_visible_devices(c: ContainerSample) -> list[Finding]:
    """CUDA_VISIBLE_DEVICES naming host indices that do not exist inside (GPUs are renumbered from 0)."""
    value = c.config.env_value("CUDA_VISIBLE_DEVICES")
    if not value or not c.config.device_requests:
        return []
    assigned = None
    for r in c.config.device_requests:
        if r.device_ids:
            assigned = len(r.device_ids)
        elif r.count and r.count > 0:
            assigned = r.count
    if assigned is None:
        return []
    indices = [int(p) for p in value.split(",") if p.strip().isdigit()]
    too_high = [i for i in indices if i >= assigned]
    if not too_high:
        return []
    return [Finding(
        "gpu.not_visible", WARNING, c.name,
        f"CUDA_VISIBLE_DEVICES={value} names GPU indices the container does not have",
        (evidence(f"Config.Env CUDA_VISIBLE_DEVICES={value}", _cfg_source(c)),
         evidence(f"{assigned} GPU(s) assigned by HostConfig.DeviceRequests; inside they are numbered from 0",
                  _cfg_source(c))),
        "Inside the container GPUs are renumbered from 0: use `CUDA_VISIBLE_DEVICES=0` (or unset it) and pick "
        "GPUs with `--gpus '\"device=<uuid>\"'`; set `CUDA_DEVICE_ORDER=PCI_BUS_ID`",
    )]


# --------------------------------------------------------------------------- CUDA version


_TOO_OLD_LOG = re.compile(
    r"CUDA driver version is insufficient for CUDA runtime version|"
    r"The NVIDIA driver on your system is too old|unsatisfied condition: cuda\s*>=\s*[\d.]+", re.IGNORECASE)
_UNSATISFIED = re.compile(r"unsatisfied condition: cuda\s*>=\s*([\d.]+)")


def _cuda_needs(ctx: CheckContext, c: ContainerSample) -> tuple[cuda_compat.CudaNeed | None, str, list[str]]:
    """(the newest CUDA the container needs, who needs it, evidence of each need).

    need = max(image CUDA, framework CUDA): the image's env says what its toolkit wants, and pip wheels bring
    their own CUDA runtime, which the device check reads from each imported framework (`built_with_cuda`).
    """
    candidates: list[tuple[cuda_compat.Version, str, str]] = []  # (version, who, where it was read)
    ev: list[str] = []
    image = cuda_compat.cuda_need(c.config.env_value)
    if image is not None:
        candidates.append((image.version, "The image", image.source))
        ev.append(evidence(f"needs CUDA {cuda_compat.format_version(image.version)}: {image.source}",
                           _cfg_source(c)))
    for module, fw in ctx.imported_frameworks(c):
        built = cuda_compat.parse_version(fw.get("built_with_cuda"))
        if built is None:
            continue  # a CPU-only build needs no driver
        who = f"{module} {fw.get('version')}"
        source = f"{who} built with CUDA {fw.get('built_with_cuda')}"
        candidates.append((built, who, source))
        ev.append(evidence(f"needs CUDA {cuda_compat.format_version(built)}: {source}", ctx.framework_source(c)))
    if not candidates:
        return None, "The image", ev
    version, who, source = max(candidates, key=lambda n: cuda_compat.cuda_major_minor(n[0]))  # ties: the image
    if image is not None and who == "The image":
        return image, who, ev
    # A wheel newer than the image: the image's forward-compatibility exceptions (cuda-compat) cover only its
    # own CUDA, so none apply.
    return cuda_compat.CudaNeed(version, source), who, ev


def check_cuda_version(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """driver.cuda_too_new: the image or a framework in it needs a newer CUDA than the host driver supports."""
    need, who, need_ev = _cuda_needs(ctx, c)
    error = c.config.error or ""
    start_refused = _UNSATISFIED.search(error)
    log_hits = _matches(ctx.log_lines(c), _TOO_OLD_LOG)
    if need is None and not start_refused and not log_hits:
        return []
    nvml = ctx.snapshot.host.nvml
    host_cuda = cuda_compat.parse_version(nvml.cuda_driver_version) if nvml.ok else None
    host_driver = cuda_compat.parse_version(nvml.driver_version) if nvml.ok else None
    ev: list[str] = list(need_ev)
    if host_cuda is not None:
        ev.append(evidence(f"host driver {nvml.driver_version} supports CUDA up to {nvml.cuda_driver_version}",
                           "NVML nvmlSystemGetDriverVersion / nvmlSystemGetCudaDriverVersion_v2"))
    if start_refused:
        ev.append(evidence(f"State.Error {error!r}", _cfg_source(c)))
    ev += _log_evidence(ctx, c, log_hits)

    verdict = None
    if need is not None and host_cuda is not None:
        verdict = cuda_compat.judge(need, host_cuda, host_driver)
    if verdict is None and (start_refused or log_hits):
        # The runtime or the framework already said so, even where NVML cannot tell us the host's CUDA.
        version = cuda_compat.parse_version(start_refused.group(1)) if start_refused else \
            (need.version if need else None)
        verdict = cuda_compat.Verdict(CRITICAL, "the container runtime or framework refused the driver",
                                      cuda_compat.minimum_driver(version) if version else None)
    if verdict is None:
        if need is not None and host_cuda is None:
            raise CheckSkipped(f"the host's CUDA version is unknown: NVML {nvml.status}")
        return []
    wanted = cuda_compat.format_version(need.version) if need else (start_refused.group(1) if start_refused else "?")
    if verdict.minimum_driver:
        ev.append(evidence(f"CUDA {wanted} needs driver >= {verdict.minimum_driver}", cuda_compat.SOURCE))
    ev.append(evidence(verdict.reason, "CUDA compatibility rules"))
    if c.config.env_value("NVIDIA_DISABLE_REQUIRE"):
        ev.append(evidence(f"Config.Env NVIDIA_DISABLE_REQUIRE={c.config.env_value('NVIDIA_DISABLE_REQUIRE')} "
                           "(the start-time check is off, the failure comes at CUDA init)", _cfg_source(c)))
    driver = f">= {verdict.minimum_driver}" if verdict.minimum_driver else f"supporting CUDA {wanted}"
    host_txt = f"the host's CUDA {nvml.cuda_driver_version}" if host_cuda else "the host driver"
    return [Finding(
        "driver.cuda_too_new", verdict.severity, c.name,
        f"{who} needs CUDA {wanted}, newer than {host_txt}", tuple(ev),
        f"Upgrade the host driver to {driver}, or use an image/wheel built for CUDA "
        f"{nvml.cuda_driver_version or 'the host supports'}",
    )]


# --------------------------------------------------------------------------- memory


_OOM_LOG = re.compile(r"killed by signal: Killed|Out of memory|MemoryError|Killed$", re.IGNORECASE)


def check_host_oom(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """oom.killed (State.OOMKilled, the cgroup's oom_kill counter, exit 137 with log evidence), oom.near_limit."""
    cfg = c.config
    t = ctx.thresholds
    out: list[Finding] = []
    limit = c.memory_limit_bytes or cfg.memory_limit_bytes
    limit_ev = evidence(f"HostConfig.Memory {_bytes(limit) if limit else 'unlimited'}", _cfg_source(c))
    fix = ("Raise the limit (`--memory`), use fewer DataLoader workers or smaller batches; /dev/shm usage is "
           "charged to the memory limit too")
    if cfg.oom_killed:
        ev = [evidence(f"State.OOMKilled true, ExitCode {cfg.exit_code}, FinishedAt {cfg.finished_at}",
                       _cfg_source(c)), limit_ev]
        ev += _log_evidence(ctx, c, _matches(ctx.log_lines(c), _OOM_LOG, keep=2))
        out.append(Finding("oom.killed", CRITICAL, c.name, "The container was killed for running out of memory",
                           tuple(ev), fix))
    elif c.oom_kills:
        prev = ctx.previous_of(c)
        rising = prev is not None and prev.oom_kills is not None and c.oom_kills > prev.oom_kills
        counter_file = "memory.events" if ctx.snapshot.host.cgroup_version == 2 else "memory.oom_control"
        was = f" (was {prev.oom_kills} at the previous sweep)" if rising else ""
        ev = [evidence(f"oom_kill {c.oom_kills}{was}", f"{c.cgroup_path}/{counter_file}"), limit_ev]
        ev += _log_evidence(ctx, c, _matches(ctx.log_lines(c), _OOM_LOG, keep=2))
        out.append(Finding("oom.killed", CRITICAL if rising else WARNING, c.name,
                           f"{c.oom_kills} process(es) in the container were OOM-killed (the container lives on, "
                           "often a DataLoader worker)", tuple(ev), fix))
    elif cfg.exit_code == 137 and c.status == "exited":
        hits = _matches(ctx.log_lines(c), _OOM_LOG, keep=2)
        if hits and limit:
            ev = [evidence("ExitCode 137 (SIGKILL), State.OOMKilled false", _cfg_source(c)), limit_ev]
            ev += _log_evidence(ctx, c, hits)
            out.append(Finding("oom.killed", WARNING, c.name,
                               "The container died of SIGKILL with out-of-memory messages in its log",
                               tuple(ev), fix))

    if c.running and limit and c.memory_bytes is not None:
        ratio = c.memory_bytes / limit
        if ratio >= t.memory_near_limit:
            ev = [
                evidence(f"working set {_bytes(c.memory_bytes)} = {ratio:.0%} of limit {_bytes(limit)}",
                         f"{c.cgroup_path} (usage - inactive_file)"),
                evidence(f"{ratio:.2f} >= {t.named('memory_near_limit')}", "mltop doctor"),
            ]
            if c.shm_bytes:
                ev.append(evidence(f"of which /dev/shm (shmem) {_bytes(c.shm_bytes)}", f"{c.cgroup_path}/memory.stat"))
            out.append(Finding("oom.near_limit", WARNING, c.name,
                               f"Memory at {ratio:.0%} of its limit: an OOM kill is imminent", tuple(ev), fix))
    return out


# CUDA/accelerator OOM messages of PyTorch, TensorFlow, JAX/XLA and cuBLAS.
_CUDA_OOM = re.compile(
    r"CUDA out of memory|OutOfMemoryError|OOM when allocating tensor|RESOURCE_EXHAUSTED: Out of memory|"
    r"CUBLAS_STATUS_ALLOC_FAILED|CUDA_ERROR_OUT_OF_MEMORY|CUDA error: out of memory|cudaErrorMemoryAllocation")
_TRIED = re.compile(r"Tried to allocate ([\d.]+) ?([KMGT]i?B|B|bytes)", re.IGNORECASE)
_XLA_BYTES = re.compile(r"(?:allocat\w*|trying to allocate) (\d+) bytes", re.IGNORECASE)
_TF_SHAPE = re.compile(r"OOM when allocating tensor with shape\s*\[([^\]]*)\] and type (\w+)")
_GPU_INDEX = re.compile(r"\bGPU (\d+)\b|device:GPU:(\d+)|GPU_(\d+)_bfc")
_TORCH_PROCESS = re.compile(r"Process (\d+) has ([\d.]+ ?[KMGT]i?B) memory in use")
_UNITS = {"b": 1, "bytes": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_DTYPE_SIZE = {"float": 4, "float32": 4, "half": 2, "float16": 2, "bfloat16": 2, "double": 8, "float64": 8,
               "int32": 4, "int64": 8, "int8": 1, "uint8": 1}


@dataclass(frozen=True)
class CudaOom:
    """What one accelerator out-of-memory message says."""

    framework: str
    requested_bytes: int | None
    requested_text: str | None  # as the message wrote it, e.g. "2.00 GiB"
    gpu_index: int | None
    other_processes: tuple[tuple[int, str], ...]  # (pid, memory text) the message names (PyTorch >= 2.1)


def parse_cuda_oom(text: str) -> CudaOom | None:
    """Parse an OOM message (one line or a whole traceback); None when it is not one."""
    if not _CUDA_OOM.search(text):
        return None
    if "OOM when allocating tensor" in text:
        framework = "tensorflow"
    elif "RESOURCE_EXHAUSTED" in text:
        framework = "jax/xla"
    elif "CUBLAS_STATUS_ALLOC_FAILED" in text:
        framework = "cublas"
    else:
        framework = "pytorch" if ("torch" in text or "Tried to allocate" in text or "CUDA out of memory" in text) \
            else "cuda"
    requested = requested_text = None
    m = _TRIED.search(text)
    if m:
        requested_text = f"{m.group(1)} {m.group(2)}"
        requested = int(float(m.group(1)) * _UNITS.get(m.group(2).lower(), 1))
    else:
        m = _XLA_BYTES.search(text)
        if m:
            requested = int(m.group(1))
            requested_text = f"{requested} bytes"
        else:
            m = _TF_SHAPE.search(text)
            if m:
                dims = [int(d) for d in re.findall(r"\d+", m.group(1))]
                size = _DTYPE_SIZE.get(m.group(2).lower())
                if dims and size:
                    n = size
                    for d in dims:
                        n *= d
                    requested = n
                    requested_text = f"tensor [{m.group(1)}] of {m.group(2)}"
    gpu = None
    g = _GPU_INDEX.search(text)
    if g:
        gpu = int(next(x for x in g.groups() if x is not None))
    others = tuple((int(p), mem) for p, mem in _TORCH_PROCESS.findall(text))
    return CudaOom(framework, requested, requested_text, gpu, others)


def check_cuda_oom(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """oom.cuda: accelerator OOM in recent logs, with the size asked for and who else holds that GPU."""
    lines = ctx.log_lines(c)
    hits = [i for i, line in enumerate(lines) if _CUDA_OOM.search(line)]
    if not hits:
        return []
    last = hits[-1]
    # The size and the other processes can sit on the lines after the exception name.
    window = "\n".join(lines[last:last + 4])
    oom = parse_cuda_oom(window) or parse_cuda_oom(lines[last])
    ev = _log_evidence(ctx, c, [lines[last]])
    if len(hits) > 1:
        ev.append(evidence(f"{len(hits)} out-of-memory lines in the last {len(lines)} log lines", ctx.log_source(c)))
    title = "Out of GPU memory"
    if oom is not None:
        if oom.requested_bytes is not None:
            ev.append(evidence(f"requested {oom.requested_text} = {_bytes(oom.requested_bytes)} ({oom.framework})",
                               "parsed from the log line"))
            title += f" allocating {oom.requested_text}"
        if oom.gpu_index is not None:
            title += f" on GPU {oom.gpu_index}"
        for pid, mem in oom.other_processes:
            ev.append(evidence(f"process {pid} holds {mem} on that GPU", "the framework's message"))
    # Other processes on this container's GPUs: noisy neighbours.
    indices = {u.index for u in c.gpus}
    if oom is not None and oom.gpu_index is not None and not indices:
        indices = {oom.gpu_index}
    neighbours = []
    for index in sorted(indices):
        g = ctx.gpu(index)
        if g is None:
            continue
        if g.memory_used_bytes is not None and g.memory_total_bytes:
            ev.append(evidence(f"GPU {index} memory used {_bytes(g.memory_used_bytes)} of "
                               f"{_bytes(g.memory_total_bytes)}", "NVML nvmlDeviceGetMemoryInfo"))
        for p in g.processes:
            if p.container_id == c.id:
                continue
            who = f"container {p.container_name}" if p.container_name else "a host process"
            mem = _bytes(p.gpu_memory_bytes) if p.gpu_memory_bytes is not None else "an unknown amount"
            neighbours.append(f"{who} (pid {p.host_pid}{', ' + p.name if p.name else ''})")
            ev.append(evidence(f"GPU {index} also used by {who}, host pid {p.host_pid} "
                               f"{p.name or ''} holding {mem}".replace("  ", " "),
                               "NVML nvmlDeviceGetComputeRunningProcesses joined to containers"))
    if neighbours:
        title += f"; shared with {', '.join(neighbours[:3])}"
    severity = WARNING if c.running else CRITICAL  # a running job may have caught it (batch-size finders do)
    return [Finding(
        "oom.cuda", severity, c.name, title, tuple(ev),
        "Smaller batch or mixed precision; `PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`; JAX: "
        "`XLA_PYTHON_CLIENT_PREALLOCATE=false`; TF: `TF_FORCE_GPU_ALLOW_GROWTH=true`"
        + ("; move the other processes off this GPU or pin this job to a free one" if neighbours else ""),
    )]


# --------------------------------------------------------------------------- shared memory


_SHM_LOG = re.compile(
    r"bus error|out of shared memory|failed to extend /dev/shm|/dev/shm.*No space left on device|"
    r"No space left on device.*/dev/shm|NCCL.*(shm|shared memory)", re.IGNORECASE)


def _ml_signs(c: ContainerSample) -> list[str]:
    """Weak signs of an ML workload, enough to mention a small shm as info."""
    signs = looks_like_gpu_workload(c)
    if c.config.requests_gpus:
        signs.append(evidence("requests GPUs", _cfg_source(c)))
    for p in c.processes:
        if re.search(r"\b(python[\d.]*|torchrun|accelerate|deepspeed)\b", p.cmdline):
            signs.append(evidence(f"process {p.container_pid or p.host_pid}: {_line(p.cmdline, 120)!r}",
                                  f"/proc/{p.host_pid}/cmdline"))
            break
    return signs


def check_shm(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """shm.too_small: a default-sized /dev/shm under pressure (logs, usage, exit 135); info when quiet."""
    cfg = c.config
    t = ctx.thresholds
    ipc = cfg.ipc_mode or "private"
    if ipc == "host" or ipc.startswith("container:"):
        return []
    size = cfg.shm_size_bytes
    if size is None or size > t.shm_small_bytes:
        return []
    ev = [evidence(f"HostConfig.ShmSize {_bytes(size)}, IpcMode {ipc}", _cfg_source(c)),
          evidence(f"{size} <= {t.named('shm_small_bytes')}", "mltop doctor")]
    pressure = False
    hits = _matches(ctx.log_lines(c), _SHM_LOG)
    if hits:
        pressure = True
        ev += _log_evidence(ctx, c, hits)
    if c.shm_bytes is not None and c.running:
        ratio = c.shm_bytes / size
        ev.append(evidence(f"/dev/shm holds {_bytes(c.shm_bytes)} = {ratio:.0%} of its size",
                           f"{c.cgroup_path}/memory.stat shmem"))
        if ratio >= t.shm_near_full:
            pressure = True
            ev.append(evidence(f"{ratio:.2f} >= {t.named('shm_near_full')}", "mltop doctor"))
    if cfg.exit_code == 135:
        pressure = True
        ev.append(evidence("ExitCode 135 (SIGBUS)", _cfg_source(c)))
    fix = "Run with `--ipc=host` or `--shm-size=8g` (NCCL: `--shm-size=1g --ulimit memlock=-1`)"
    if pressure:
        return [Finding("shm.too_small", WARNING, c.name,
                        f"/dev/shm is only {_human(size)} and the workload runs out of it", tuple(ev), fix)]
    signs = _ml_signs(c)
    if not signs:
        return []
    return [Finding("shm.too_small", INFO, c.name,
                    f"/dev/shm is only {_human(size)}: PyTorch DataLoader workers and NCCL often need more",
                    tuple(ev + signs), fix)]


# --------------------------------------------------------------------------- I/O


def _cgroup_read_throttles(ctx: CheckContext, c: ContainerSample) -> list[tuple[str, str, str, str]]:
    """(device, kind, value, source) for read throttles in the cgroup files."""
    dirs = ctx.cgroup_dirs(c)
    out = []
    if "unified" in dirs:
        path = os.path.join(dirs["unified"], "io.max")
        for line in (ctx.host.read_text(path) or "").splitlines():
            parts = line.split()
            if not parts:
                continue
            for kv in parts[1:]:
                key, _, value = kv.partition("=")
                if key in ("rbps", "riops") and value != "max":
                    out.append((ctx.host.block_device(parts[0]), key, value, path))
    elif "blkio" in dirs:
        for name, kind in (("blkio.throttle.read_bps_device", "rbps"), ("blkio.throttle.read_iops_device", "riops")):
            path = os.path.join(dirs["blkio"], name)
            for line in (ctx.host.read_text(path) or "").splitlines():
                parts = line.split()
                if len(parts) == 2:
                    out.append((ctx.host.block_device(parts[0]), kind, parts[1], path))
    return out


def check_io(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """io.slow: read throttles (config or cgroup), or slow reads while I/O pressure is high."""
    t = ctx.thresholds
    out: list[Finding] = []
    rate = c.io_read_bytes_per_s
    rate_ev = []
    if rate is not None:
        over = f"over {ctx.snapshot.interval_s:.1f} s" if ctx.snapshot.interval_s else "between 2 sweeps"
        rate_ev.append(evidence(f"reading {rate / 1e6:.2f} MB/s", f"cgroup I/O counters (blkio/io.stat), {over}"))

    ev: list[str] = []
    for key in ("BlkioDeviceReadBps", "BlkioDeviceReadIOps"):
        for entry in c.config.blkio_throttles.get(key, ()):
            unit = "bytes/s" if key.endswith("Bps") else "IO/s"
            ev.append(evidence(f"HostConfig.{key} {entry.get('Path')} {entry.get('Rate')} {unit}", _cfg_source(c)))
    if c.running:
        for device, kind, value, source in _cgroup_read_throttles(ctx, c):
            ev.append(evidence(f"{device} {kind}={value}", source))
    if ev:
        out.append(Finding(
            "io.slow", WARNING, c.name, "Reads are throttled for this container", tuple(ev + rate_ev),
            "Remove the read throttle (`--device-read-bps`/`--device-read-iops`, io.max) or raise it",
        ))

    if c.running and not ev and rate is not None and rate > 0 and rate / 1e6 < t.io_min_read_mb_s:
        pressure_ev = []
        if c.pressure is not None and c.pressure.io is not None:
            if c.pressure.io >= t.io_psi_some_avg10:
                pressure_ev.append(evidence(f"io some avg10 {c.pressure.io:.1f}% >= {t.named('io_psi_some_avg10')}",
                                            f"{c.cgroup_path}/io.pressure"))
        else:
            host = ctx.snapshot.host
            host_psi = host.pressure.get("io")
            if host_psi is not None and host_psi >= t.io_psi_some_avg10:
                pressure_ev.append(evidence(f"host io some avg10 {host_psi:.1f}% >= {t.named('io_psi_some_avg10')} "
                                            "(host-wide: no per-cgroup PSI here)", "/proc/pressure/io"))
            if host.iowait_percent is not None and host.iowait_percent >= t.host_iowait_percent:
                pressure_ev.append(evidence(f"host iowait {host.iowait_percent:.1f}% >= "
                                            f"{t.named('host_iowait_percent')}", "/proc/stat, 2 sweeps"))
        if pressure_ev:
            out.append(Finding(
                "io.slow", WARNING, c.name,
                f"Reads stall under I/O pressure ({rate / 1e6:.1f} MB/s)",
                tuple(rate_ev + [evidence(f"{rate / 1e6:.2f} < {t.named('io_min_read_mb_s')}", "mltop doctor")]
                      + pressure_ev),
                "Move the data to a volume on local NVMe, stage shards locally, use sharded formats "
                "(WebDataset/TFRecord), add loader workers",
            ))
    return out


def check_read_test(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """io.slow / io.read_test from the `--io-test` timed direct read, when one ran in this container."""
    r = ctx.read_tests.get(c.id)
    if r is None:
        return []
    t = ctx.thresholds
    where = f"docker exec {c.name} {' '.join(r.command)}"
    if r.timed_out:
        return [Finding(
            "io.slow", WARNING, c.name, f"A direct read of {r.path} did not finish within {r.seconds:.0f} s",
            (evidence(r.error or "timed out", where),),
            "Check the storage behind this path (network filesystem, throttles); stage the data on local NVMe",
        )]
    if not r.ok:
        raise CheckSkipped(f"read test of {r.path} in {c.name} failed: {r.error}: {r.output!r}")
    rate = f"{r.mb_per_s:.1f} MB/s" if r.mb_per_s is not None else "an unknown rate"
    ev = [evidence(f"read {_bytes(r.bytes_read or 0)} in {r.seconds:.3f} s = {rate} "
                   f"({'O_DIRECT' if r.direct else 'page cache: O_DIRECT refused'}; timing: {r.timing_source})",
                   where),
          evidence(f"dd output {r.output!r}", where)]
    if not r.conclusive:
        ev.append(evidence(f"too small a sample to judge ({_bytes(r.bytes_read or 0)} in {r.seconds:.3f} s): "
                           "exec start-up dominates; read a file of 64 MiB or more", "mltop doctor"))
    elif r.mb_per_s is not None and r.mb_per_s < t.io_min_read_mb_s:
        ev.append(evidence(f"{r.mb_per_s:.1f} < {t.named('io_min_read_mb_s')}", "mltop doctor"))
        return [Finding(
            "io.slow", WARNING, c.name, f"Reading {r.path} runs at {r.mb_per_s:.1f} MB/s", tuple(ev),
            "Move the data to a volume on local NVMe, stage shards locally, remove read throttles",
        )]
    fix = "Nothing to fix" if r.conclusive else "Run --io-test on a file of 64 MiB or more"
    return [Finding("io.read_test", INFO, c.name, f"Reading {r.path} runs at {rate}", tuple(ev), fix)]


# --------------------------------------------------------------------------- processes, restarts, CPU


_SIGNALS = {134: "SIGABRT (abort, often a failed assertion or a C++ exception)",
            135: "SIGBUS (bus error: often /dev/shm exhausted)",
            139: "SIGSEGV (segmentation fault)"}


def check_restarts(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """container.restart_loop and container.crashed (exit 134/135/139; 137 without OOM evidence)."""
    cfg = c.config
    t = ctx.thresholds
    out = []
    if cfg.restart_count >= t.restart_loop_count or c.status == "restarting":
        ev = [evidence(f"RestartCount {cfg.restart_count}, restart policy {cfg.restart_policy}, status {c.status}",
                       _cfg_source(c)),
              evidence(f"{cfg.restart_count} >= {t.named('restart_loop_count')}", "mltop doctor")
              if cfg.restart_count >= t.restart_loop_count else evidence(f"State.Status {c.status}", _cfg_source(c))]
        if cfg.exit_code is not None:
            ev.append(evidence(f"last ExitCode {cfg.exit_code}", _cfg_source(c)))
        tail = [line for line in ctx.log_lines(c) if line.strip()][-2:]
        ev += _log_evidence(ctx, c, tail)
        out.append(Finding("container.restart_loop", WARNING, c.name,
                           f"Restart loop: the container has restarted {cfg.restart_count} times", tuple(ev),
                           f"Read why it dies: `docker logs --tail 100 {c.name}`; fix the cause, or stop the loop "
                           f"with `docker update --restart=no {c.name}`"))
    code = cfg.exit_code
    if c.status == "exited" and code in _SIGNALS:
        out.append(Finding("container.crashed", WARNING, c.name, f"The container died of {_SIGNALS[code]}",
                           (evidence(f"ExitCode {code}, FinishedAt {cfg.finished_at}", _cfg_source(c)),)
                           + tuple(_log_evidence(ctx, c, [x for x in ctx.log_lines(c) if x.strip()][-2:])),
                           f"Read the last log lines: `docker logs --tail 100 {c.name}`"
                           + ("; for SIGBUS raise /dev/shm (`--shm-size=8g` or `--ipc=host`)" if code == 135 else "")))
    elif c.status == "exited" and code == 137 and not cfg.oom_killed:
        out.append(Finding("container.crashed", INFO, c.name, "The container was killed with SIGKILL (exit 137)",
                           (evidence(f"ExitCode 137, State.OOMKilled false, FinishedAt {cfg.finished_at}",
                                     _cfg_source(c)),),
                           "`docker kill`, a `docker stop` timeout, or an OOM kill whose flag a restart cleared: "
                           f"check `docker events --filter container={c.name} --filter event=oom`"))
    return out


def check_pids(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """pids.near_max: the container is at its pids limit, or forks already failed (pids.events max)."""
    if not c.running:
        return []
    dirs = ctx.cgroup_dirs(c)
    base = dirs.get("unified") or dirs.get("pids")
    if not base:
        return []
    max_text = (ctx.host.read_text(os.path.join(base, "pids.max")) or "").strip()
    if not max_text or max_text == "max":
        return []
    limit = int(max_text)
    current = c.pids
    events = ctx.host.read_text(os.path.join(base, "pids.events")) or ""
    failed = 0
    for line in events.splitlines():
        key, _, value = line.partition(" ")
        if key == "max" and value.strip().isdigit():
            failed = int(value)
    ratio = (current or 0) / limit if limit else 0.0
    t = ctx.thresholds
    if ratio < t.pids_near_max and not failed:
        return []
    ev = [evidence(f"pids.current {current}, pids.max {limit} ({ratio:.0%})", base)]
    if ratio >= t.pids_near_max:
        ev.append(evidence(f"{ratio:.2f} >= {t.named('pids_near_max')}", "mltop doctor"))
    if failed:
        ev.append(evidence(f"pids.events max {failed} (forks refused so far)", os.path.join(base, "pids.events")))
    return [Finding("pids.near_max", WARNING, c.name,
                    f"The container is at its process/thread limit ({current} of {limit})", tuple(ev),
                    "Raise `--pids-limit` (or -1 for none); fewer DataLoader workers or threads "
                    "(`OMP_NUM_THREADS`); errors look like \"can't start new thread\"")]


def check_cpu_throttle(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """cpu.throttled: CFS throttling in a large share of recent periods (cpu.stat nr_throttled rising)."""
    if not c.running or c.cpu_throttled_periods is None:
        return []
    t = ctx.thresholds
    dirs = ctx.cgroup_dirs(c)
    base = dirs.get("unified") or dirs.get("cpu") or dirs.get("cpuacct")
    stat = {}
    if base:
        for line in (ctx.host.read_text(os.path.join(base, "cpu.stat")) or "").splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                stat[key] = int(value)
    prev = ctx.previous_of(c)
    if prev is not None and prev.cpu_throttled_periods is not None and ctx.snapshot.interval_s:
        # nr_periods is not in the snapshot: count the periods elapsed between the two sweeps.
        period_s = (c.config.cpu_period or 100_000) / 1e6
        periods = ctx.snapshot.interval_s / period_s
        throttled = c.cpu_throttled_periods - prev.cpu_throttled_periods
        basis = f"{throttled} of ~{periods:.0f} periods in the last {ctx.snapshot.interval_s:.1f} s"
    elif stat.get("nr_periods"):
        periods = stat["nr_periods"]
        throttled = stat.get("nr_throttled", 0)
        basis = f"{throttled} of {periods} periods since the container started"
    else:
        return []
    ratio = throttled / periods if periods else 0.0
    if throttled <= 0 or ratio < t.cpu_throttled_ratio:
        return []
    limit = c.cpu_limit_cores
    ev = [evidence(f"nr_throttled {c.cpu_throttled_periods}: {basis} = {ratio:.0%}",
                   os.path.join(base, "cpu.stat") if base else "cgroup cpu.stat"),
          evidence(f"{ratio:.2f} >= {t.named('cpu_throttled_ratio')}", "mltop doctor")]
    if limit:
        ev.append(evidence(f"CPU limit {limit:g} cores, using {c.cpu_percent or 0:.0f}% of one core",
                           _cfg_source(c)))
    return [Finding("cpu.throttled", WARNING, c.name,
                    f"CPU-throttled in {ratio:.0%} of scheduler periods: the data pipeline may starve the GPU",
                    tuple(ev),
                    "Raise `--cpus` (or remove the quota); match DataLoader workers and `OMP_NUM_THREADS` to the "
                    "cores the container has")]


def check_gpu_idle(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """gpu.idle_reserved: the container holds memory on a GPU that is doing nothing."""
    if not c.running or not c.gpus:
        return []
    t = ctx.thresholds
    idle = []
    for use in c.gpus:
        g = ctx.gpu(use.index)
        if g is None or g.utilization_percent is None or not use.memory_bytes:
            continue
        if g.utilization_percent <= t.gpu_idle_util_percent and not use.sm_percent:
            idle.append((g, use))
    if not idle:
        return []
    ev = []
    for g, use in idle:
        ev.append(evidence(f"GPU {g.index} ({g.uuid}) utilisation {g.utilization_percent:g}% <= "
                           f"{t.named('gpu_idle_util_percent')}", "NVML nvmlDeviceGetUtilizationRates"))
        ev.append(evidence(f"{c.name} holds {_bytes(use.memory_bytes)} on it", "NVML per-process memory"))
    return [Finding("gpu.idle_reserved", INFO, c.name,
                    f"Holds memory on {len(idle)} idle GPU(s) (one sample: may be a pause between steps)",
                    tuple(ev),
                    f"If the job is finished or stuck, stop it (`docker stop {c.name}`) to free the GPU; "
                    "check again with `mltop` over a minute")]


CONTAINER_CHECKS: tuple[tuple[str, Callable[[CheckContext, ContainerSample], list[Finding]]], ...] = (
    ("toolkit", check_toolkit),
    ("gpu.not_visible", check_gpu_visible),
    ("driver.cuda_too_new", check_cuda_version),
    ("oom", check_host_oom),
    ("oom.cuda", check_cuda_oom),
    ("shm", check_shm),
    ("io", check_io),
    ("io.read_test", check_read_test),
    ("restarts", check_restarts),
    ("pids", check_pids),
    ("cpu.throttled", check_cpu_throttle),
    ("gpu.idle_reserved", check_gpu_idle),
)
