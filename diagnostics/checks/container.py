"""Container lifecycle checks: restart loops, crashes, the pids limit."""

from __future__ import annotations

import re

from mltop.probes.model import ContainerSample

from ..findings import INFO, WARNING, Finding, evidence
from . import pod_restarts
from .base import (CheckContext, CheckSkipped, LogSign, _cfg_source, _log_evidence, _matches, by_runtime,
                   container_check, node_memlock_fix)


# --------------------------------------------------------------------------- processes, restarts, CPU


_SIGNALS = {134: "SIGABRT (abort, often a failed assertion or a C++ exception)",
            135: "SIGBUS (bus error: often /dev/shm exhausted)",
            139: "SIGSEGV (segmentation fault)"}


@container_check("restarts")
def check_restarts(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """container.restart_loop and container.crashed (exit 134/135/139; 137 without OOM evidence)."""
    cfg = c.config
    t = ctx.thresholds
    if c.kubernetes is not None:  # a pod container: CrashLoopBackOff and kubectl (checks/pod_restarts.py)
        return _pod_restarts(ctx, c)
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


def _pod_restarts(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    out = []
    if c.config.restart_count >= ctx.thresholds.restart_loop_count:
        out.append(pod_restarts.restart_loop(ctx, c))
    code = c.config.exit_code
    if c.status == "exited" and code in _SIGNALS:
        out.append(pod_restarts.crashed(ctx, c, _SIGNALS[code]))
    elif c.status == "exited" and code == 137 and not c.config.oom_killed:
        out.append(pod_restarts.killed(ctx, c))
    return out


@container_check("pids")
def check_pids(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """pids.near_max: the container is at its pids limit, or forks already failed (pids.events max)."""
    if not c.running:
        return []
    facts = ctx.facts(c)
    base = facts.pids_dir
    if not base or not facts.pids_max:
        return []
    limit = facts.pids_max
    current = c.pids if facts.pids_current is None else facts.pids_current  # the pod's count, for the pod's limit
    failed = facts.pids_failed_forks
    ratio = (current or 0) / limit if limit else 0.0
    t = ctx.thresholds
    if ratio < t.pids_near_max and not failed:
        return []
    ev = [evidence(f"pids.current {current}, pids.max {limit} ({ratio:.0%})", base)]
    if ratio >= t.pids_near_max:
        ev.append(evidence(f"{ratio:.2f} >= {t.named('pids_near_max')}", "mltop doctor"))
    if failed:
        ev.append(evidence(f"pids.events max {failed} (forks refused so far)", f"{base}/pids.events"))
    whose = "The container is" if facts.pids_current is None else \
        "The pod is (its containers share the pod cgroup's limit)"
    return [Finding("pids.near_max", WARNING, c.name,
                    f"{whose} at its process/thread limit ({current} of {limit})", tuple(ev), by_runtime(
                        c, "Raise `--pids-limit` (or -1 for none); fewer DataLoader workers or threads "
                           "(`OMP_NUM_THREADS`); errors look like \"can't start new thread\"",
                        lambda k: "A pod's pids limit is the node's, not its spec's: raise the kubelet's "
                                  "`podPidsLimit` (KubeletConfiguration; -1 for none) on the node and restart the "
                                  f"kubelet, then recreate the pod (`{k.delete}`); fewer DataLoader workers or "
                                  "threads (`OMP_NUM_THREADS`); errors look like \"can't start new thread\""))]




def gpu_count_of(ctx: CheckContext, c: ContainerSample) -> tuple[int, str, str]:
    """(how many GPUs the container has, how we know, where that was read): NVML use first, then the kubelet's
    allocation (a pod), then its device requests."""
    nvml = "NVML processes joined to containers"
    used = {u.index for u in c.gpus} | {g.index for g in ctx.gpus_of(c)}
    if len(used) >= 2:
        return len(used), f"NVML shows it on GPUs {', '.join(str(i) for i in sorted(used))}", nvml
    allocated = {a.uuid for a in c.kubernetes.gpus_allocated} if c.kubernetes is not None else set()
    if allocated:
        return len(allocated), f"the kubelet allocated it {', '.join(sorted(allocated))}", "kubelet pod-resources List"
    for r in c.config.device_requests:
        if r.device_ids:
            return len(r.device_ids), f"HostConfig.DeviceRequests DeviceIDs {list(r.device_ids)}", _cfg_source(c)
        if r.count == -1:
            return (len(ctx.snapshot.gpus), f"HostConfig.DeviceRequests Count -1 (all {len(ctx.snapshot.gpus)} GPUs)",
                    _cfg_source(c))
        if r.count > 0:
            return r.count, f"HostConfig.DeviceRequests Count {r.count}", _cfg_source(c)
    nodes = [n for n in c.config.nvidia_device_nodes if n[len("/dev/nvidia"):].isdigit()]
    if nodes:
        return len(nodes), f"HostConfig.Devices {', '.join(nodes)}", _cfg_source(c)
    return len(used), nvml, nvml


_MEMLOCK_LOG = LogSign.of(r"ibv_reg_mr", (r"Cannot allocate memory", r"NCCL|ibv"), (r"NCCL", r"memlock|locked memory"),
                          (r"NET/IB : ", r"failed|error"), flags=re.IGNORECASE)


@container_check("nccl.memlock")
def check_memlock(ctx: CheckContext, c: ContainerSample) -> list[Finding]:
    """nccl.memlock: a multi-GPU container whose locked-memory limit (`ulimit -l`) is not unlimited."""
    if not c.running:
        return []
    count, how, source = gpu_count_of(ctx, c)
    if count < 2:
        return []
    facts = ctx.facts(c)
    configured = c.config.memlock_limit()
    soft = facts.memlock_soft_bytes if facts.memlock_soft_bytes is not None else configured
    if soft is None:
        raise CheckSkipped(f"the locked-memory limit of {c.name} is unknown (its /proc/PID/limits is not readable)")
    if soft == -1:
        return []
    ev = [evidence(f"{count} GPUs: {how}", source)]
    if facts.memlock_soft_bytes is not None:
        ev.append(evidence(f"Max locked memory {soft} bytes (soft)", facts.limits_file or "/proc/PID/limits"))
    else:
        ev.append(evidence(f"HostConfig.Ulimits memlock soft {soft}", _cfg_source(c)))
    hits = _matches(ctx.log_lines(c), _MEMLOCK_LOG)
    ev += _log_evidence(ctx, c, hits)
    return [Finding(
        "nccl.memlock", WARNING if hits else INFO, c.name,
        f"Uses {count} GPUs with locked memory limited to {soft // 1024} KiB: NCCL over InfiniBand/RDMA needs "
        "it unlimited", tuple(ev), by_runtime(
            c, "Run with `--ulimit memlock=-1` (and `--ulimit stack=67108864`), or set `default-ulimits` in "
               "daemon.json",
            lambda k: f"Kubernetes has no per-pod ulimit: a pod's processes inherit the {k.node_runtime} runtime's "
                      f"own locked-memory limit, so raise it on the node: {node_memlock_fix(k.node_runtime)}; "
                      f"then recreate the pod (`{k.delete}`) so it starts under the new limit"),
    )]
