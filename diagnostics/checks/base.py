"""What every check shares: the context it reads, thresholds, evidence helpers, and the one registry.

A host check is `check(ctx) -> list[Finding]`; a container check is `check(ctx, container) -> list[Finding]`.
Register one with `@host_check(name)` / `@container_check(name)` in the module of its domain.
A check that cannot judge raises `CheckSkipped(reason)`; any other exception is caught by the doctor and
reported as a skipped check, so one broken check never hides the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping, Sequence

from mltop.probes.host_facts import ContainerFacts, HostFacts
from mltop.probes.units import binary_size
from mltop.probes.model import ContainerSample, GpuSample, Snapshot

from ..findings import Finding, evidence
from ..read_test import ReadTestResult
from ..workload import WorkloadThresholds


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
    io_throttle_reached: float = _threshold(0.5, "read rate / read throttle at or above which it binds (rates jitter)")
    io_min_read_mb_s: float = _threshold(100.0, "read throughput (MB/s) below which reads are slow")
    xid_recent_s: float = _threshold(3600.0, "seconds within which an Xid is a warning (older ones are info)")
    nvlink_errors_min: int = _threshold(1, "rise of an NVLink error counter between two reads from which "
                                        "nvlink.errors fires")
    pcie_busy_util_percent: float = _threshold(10.0, "GPU utilisation % from which a trained-down PCIe link counts")
    orphaned_memory_bytes: int = _threshold(1 << 30, "GPU memory held by no listed process from which it is orphaned")
    gpu_idle_util_percent: float = _threshold(1.0, "GPU utilisation % at or below which a GPU counts as idle")
    gpu_busy_util_percent: float = _threshold(50.0, "GPU utilisation % from which a GPU counts as busy (GPM checks)")
    launch_bound_util_percent: float = _threshold(90.0, "GPU utilisation % from which low SM activity is launch-bound")
    launch_bound_sm_active_percent: float = _threshold(30.0, "GPM SM active % below which a busy GPU is launch-bound")
    tensor_idle_percent: float = _threshold(5.0, "GPM tensor pipe active % below which a busy GPU's tensor cores idle")
    memory_bound_dram_active_percent: float = _threshold(60.0, "GPM DRAM active % from which low SM use is memory-bound")
    memory_bound_sm_active_percent: float = _threshold(40.0, "GPM SM active % below which high DRAM use is memory-bound")
    gpu_alloc_unused_s: float = _threshold(600.0, "seconds a GPU allocated to a pod container goes without a "
                                           "process of it before k8s.gpu_allocated_unused fires")

    def named(self, name: str) -> str:
        """How evidence names a threshold: its value and the CLI option that sets it."""
        return f"threshold {name}={getattr(self, name)} (--{name.replace('_', '-')})"

    @classmethod
    def options(cls) -> list[tuple[str, type, object, str]]:
        """(name, type, default, help) for each threshold, for the command line."""
        return [(f.name, type(f.default), f.default, f.metadata.get("help", "")) for f in fields(cls)]


# --------------------------------------------------------------------------- context


@dataclass
class CheckContext:
    snapshot: Snapshot
    containers: tuple[ContainerSample, ...]  # the ones being diagnosed
    logs: Mapping[str, tuple[str, ...]]  # container id -> recent log lines (absent: not read)
    host: HostFacts
    thresholds: Thresholds
    log_tail: int = 200
    previous: Snapshot | None = None  # an earlier sweep, for counters that rise
    read_tests: Mapping[str, ReadTestResult] = field(default_factory=dict)  # container id -> result
    # container id -> the device check's data["frameworks"] (module -> what the container's Python found)
    frameworks: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    container_facts: Mapping[str, ContainerFacts] = field(default_factory=dict)  # container id -> cgroup files
    workload_thresholds: WorkloadThresholds = field(default_factory=WorkloadThresholds)
    # container id -> (path, recent lines) of a restarted pod container's last ended attempt's log file, when
    # that is not its own (it runs again): what `kubectl logs --previous` shows
    previous_logs: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # Pod GPU allocations' unused_since: where the history behind it comes from, for the evidence (None: this
    # process's own sampling), and per container id why there is none (a one-shot doctor without a recording).
    allocation_history: str | None = None
    allocation_unknown: Mapping[str, str] = field(default_factory=dict)
    # container id -> the network interfaces in its namespace (probes/net_interfaces.py), read for the containers
    # that name NCCL_SOCKET_IFNAME; absent: not read
    interfaces: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def log_lines(self, c: ContainerSample) -> tuple[str, ...]:
        return self.logs.get(c.id, ())

    def log_source(self, c: ContainerSample) -> str:
        if c.kubernetes is not None and c.config.log_path:  # a pod container: the kubelet's log file
            return f"{c.config.log_path} (last {self.log_tail} lines)"
        return f"docker logs --tail {self.log_tail} {c.name}"

    def previous_of(self, c: ContainerSample) -> ContainerSample | None:
        if self.previous is None:
            return None
        for p in self.previous.containers:
            if p.id == c.id:
                return p
        return None

    def configured_containers(self) -> list[ContainerSample]:
        """Every container of the snapshot whose configuration was read, for host checks that look at them all
        (a placeholder whose docker inspect is pending or failed has nothing to judge; the doctor lists it)."""
        return [c for c in self.snapshot.containers if c.config_unknown is None]

    def facts(self, c: ContainerSample) -> ContainerFacts:
        """The container's cgroup limit files as the doctor read them (empty when not read)."""
        return self.container_facts.get(c.id) or ContainerFacts()

    # The two GPU facts every check uses, from one place (probes.model.Snapshot).

    def uses_gpu(self, c: ContainerSample) -> bool:
        return self.snapshot.uses_gpu(c)

    def has_gpus(self, c: ContainerSample) -> bool:
        return self.snapshot.has_gpus(c)

    def gpu_access_evidence(self, c: ContainerSample) -> list[str]:
        """Why the snapshot says `c` has GPUs, as evidence lines."""
        ev = [evidence(how, _cfg_source(c)) for how in self.snapshot.gpu_access(c)]
        for p in self.snapshot.gpu_processes_of(c):
            mem = _bytes(p.gpu_memory_bytes) if p.gpu_memory_bytes is not None else "an unknown amount of memory"
            ev.append(evidence(f"host pid {p.host_pid} ({p.name or '?'}) holds {mem} on a GPU",
                               "NVML running processes joined to containers"))
        return ev

    def gpus_of(self, c: ContainerSample) -> list[GpuSample]:
        """The GPUs NVML shows the container on."""
        indices = {u.index for u in c.gpus}
        return [g for g in self.snapshot.gpus
                if g.index in indices or any(p.container_id == c.id for p in g.processes)]

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


def _bytes(n: int | float) -> str:
    return f"{int(n)} bytes ({binary_size(n)})"


def _line(text: str, limit: int = 400) -> str:
    text = text.rstrip("\r\n")
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class LogSign:
    """A log line that says something: `anywhere` found in it, or a `first` part with a `then` part later on
    the same line. The regex `A.*B` says the same but retries `.*` from every A, which is quadratic on a line
    that repeats A (a container printing "NCCL NCCL NCCL …"); this looks for B once, after the first A."""

    anywhere: re.Pattern[str]
    pairs: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = ()

    @classmethod
    def of(cls, anywhere: str, *pairs: tuple[str, str], flags: int = 0) -> "LogSign":
        return cls(re.compile(anywhere, flags), tuple((re.compile(a, flags), re.compile(b, flags)) for a, b in pairs))

    def search(self, line: str) -> bool:
        if self.anywhere.search(line):
            return True
        for first, then in self.pairs:
            m = first.search(line)
            if m is not None and then.search(line, m.end()):
                return True
        return False


def _matches(lines: Sequence[str], pattern: re.Pattern[str] | LogSign, keep: int = 3) -> list[str]:
    """The last `keep` lines matching `pattern`, verbatim."""
    hits = [line for line in lines if pattern.search(line)]
    return hits[-keep:]


def _log_evidence(ctx: CheckContext, c: ContainerSample, lines: Iterable[str], source: str | None = None) -> list[str]:
    """Log lines as evidence, verbatim (repr-quoted: the text is data); repeats folded into one. `source`: where
    they were read when not the container's own log (a pod container's previous attempt's file)."""
    counts: dict[str, int] = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    return [evidence(f"log line {_line(line)!r}" + (f" (x{n})" if n > 1 else ""), source or ctx.log_source(c))
            for line, n in counts.items()]


def _cfg_source(c: ContainerSample) -> str:
    if c.kubernetes is not None:  # a pod container: its runtime's verbose status (the OCI spec it runs)
        return f"CRI ContainerStatus {c.name}"
    return f"docker inspect {c.name}"


def _mebibytes(n: int | float) -> str:
    """A size as a pod spec writes it: `512Mi`, `2Gi`."""
    mib = max(1, int(-(-n // MIB)))
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def pod_resources_fix(c: ContainerSample, resource: str, value: str, why: str) -> str:
    """A pod spec fix for one resource limit of a pod container, as a patch a user can paste."""
    k = c.kubernetes
    assert k is not None
    return (f"Raise `resources.limits.{resource}` of container `{k.container}` in the pod's spec (set it in its "
            f"Deployment/StatefulSet/Job: a pod's resources cannot be edited in place), e.g. "
            f"`containers: [{{name: {k.container}, resources: {{limits: {{{resource}: {value}}}}}}}]`; {why}")


def looks_like_gpu_workload(c: ContainerSample) -> list[str]:
    """Evidence that a container is meant to use GPUs: CUDA image environment or the NVIDIA runtime."""
    out = []
    for name in ("CUDA_VERSION", "NVIDIA_REQUIRE_CUDA", "NVIDIA_VISIBLE_DEVICES", "NV_CUDA_CUDART_VERSION"):
        value = c.config.env_value(name)
        if value is not None:
            label = "env" if c.kubernetes is not None else "Config.Env"  # a pod's env, from the CRI
            out.append(evidence(f"{label} {name}={value}", _cfg_source(c)))
    return out


# --------------------------------------------------------------------------- the registry

HostCheck = Callable[[CheckContext], list[Finding]]
ContainerCheck = Callable[[CheckContext, ContainerSample], list[Finding]]

# (name, check) in registration order; the doctor runs them all. Names show in checks_skipped.
HOST_CHECKS: list[tuple[str, HostCheck]] = []
CONTAINER_CHECKS: list[tuple[str, ContainerCheck]] = []
# Checks that need a docker exec into the container: skipped, with the reason, under --no-exec.
EXEC_CHECKS: set[str] = set()


def host_check(name: str) -> Callable[[HostCheck], HostCheck]:
    def register(fn: HostCheck) -> HostCheck:
        HOST_CHECKS.append((name, fn))
        return fn
    return register


def container_check(name: str, needs_exec: bool = False) -> Callable[[ContainerCheck], ContainerCheck]:
    def register(fn: ContainerCheck) -> ContainerCheck:
        CONTAINER_CHECKS.append((name, fn))
        if needs_exec:
            EXEC_CHECKS.add(name)
        return fn
    return register


# --------------------------------------------------------------------------- Docker or pod wording


@dataclass(frozen=True)
class PodTerms:
    """A pod container as kubectl names it: the commands a pod finding's evidence and fix hand the user."""

    namespace: str
    pod: str
    container: str
    node_runtime: str  # "containerd" | "cri-o": where node-level settings (ulimits) live

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.pod}/{self.container}"

    @property
    def logs(self) -> str:
        return f"kubectl -n {self.namespace} logs {self.pod} -c {self.container}"

    @property
    def describe(self) -> str:
        return f"kubectl -n {self.namespace} describe pod {self.pod}"

    @property
    def yaml(self) -> str:
        return f"kubectl -n {self.namespace} get pod {self.pod} -o yaml"

    @property
    def delete(self) -> str:
        return f"kubectl -n {self.namespace} delete pod {self.pod}"

    def in_spec(self, fields_: str) -> str:
        """A patch of this container's entry in the pod spec, e.g. `containers: [{name: main, env: [...]}]`."""
        return f"`containers: [{{name: {self.container}, {fields_}}}]`"


def by_runtime(c: ContainerSample, docker: str, pod: Callable[[PodTerms], str]) -> str:
    """What a finding says to `c`: `docker` (the Docker text, unchanged) for a Docker container, `pod(terms)` for a
    pod container, in the terms a Kubernetes user acts on (the pod spec, kubectl, the node's runtime)."""
    k = c.kubernetes
    if k is None:
        return docker
    return pod(PodTerms(k.namespace, k.pod, k.container, c.runtime or "containerd"))


def node_memlock_fix(runtime: str) -> str:
    """Kubernetes has no per-pod ulimit: a pod's processes inherit the node runtime's own RLIMIT_MEMLOCK."""
    if runtime == "cri-o":
        return ("in `/etc/crio/crio.conf.d/10-memlock.conf` set `[crio.runtime]` `default_ulimits = "
                "[\"memlock=-1:-1\"]`, then `sudo systemctl restart crio`")
    return ("give containerd an unlimited one: `sudo mkdir -p /etc/systemd/system/containerd.service.d && printf "
            "'[Service]\\nLimitMEMLOCK=infinity\\n' | sudo tee /etc/systemd/system/containerd.service.d/"
            "memlock.conf && sudo systemctl daemon-reload && sudo systemctl restart containerd`")
