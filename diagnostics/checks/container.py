"""Container lifecycle checks: restart loops, crashes, the pids limit."""

from __future__ import annotations

from mltop.probes.model import ContainerSample

from ..findings import INFO, WARNING, Finding, evidence
from .base import CheckContext, _cfg_source, _log_evidence, container_check


# --------------------------------------------------------------------------- processes, restarts, CPU


_SIGNALS = {134: "SIGABRT (abort, often a failed assertion or a C++ exception)",
            135: "SIGBUS (bus error: often /dev/shm exhausted)",
            139: "SIGSEGV (segmentation fault)"}


@container_check("restarts")
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
    current = c.pids
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
    return [Finding("pids.near_max", WARNING, c.name,
                    f"The container is at its process/thread limit ({current} of {limit})", tuple(ev),
                    "Raise `--pids-limit` (or -1 for none); fewer DataLoader workers or threads "
                    "(`OMP_NUM_THREADS`); errors look like \"can't start new thread\"")]


