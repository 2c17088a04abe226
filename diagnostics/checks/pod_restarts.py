"""container.restart_loop and container.crashed for a pod container, in the terms a Kubernetes user acts on:
CrashLoopBackOff, the restart count and how the last attempts ended (CRI's status of each attempt the runtime
still keeps), the last lines of the last ended attempt's log file (`kubectl logs --previous`), and a kubectl fix.
Called by checks/container.py's check_restarts for containers in pods; Docker's texts stay there."""

from __future__ import annotations

from mltop.probes.model import ContainerAttempt, ContainerSample

from ..findings import INFO, WARNING, Finding, evidence
from .base import CheckContext, _cfg_source, _log_evidence, _mebibytes, pod_resources_fix

SHOWN_EXITS = 5  # attempts named in the evidence, newest first
LOG_LINES = 3  # the last log lines of the last ended attempt


def exits(c: ContainerSample) -> list[ContainerAttempt]:
    """How the attempts of a pod container ended that CRI still knows, newest first: the container itself when
    it has ended (waiting for the kubelet's next restart), then the earlier attempts the runtime keeps."""
    k = c.kubernetes
    assert k is not None
    out = []
    cfg = c.config
    if c.status in ("exited", "dead") and cfg.exit_code is not None:
        reason = "OOMKilled" if cfg.oom_killed else ("Completed" if cfg.exit_code == 0 else "Error")
        out.append(ContainerAttempt(cfg.restart_count, c.id, c.status, cfg.exit_code, reason, cfg.started_at,
                                    cfg.finished_at, cfg.log_path))
    return out + [a for a in k.previous_attempts if a.exit_code is not None]


def _exit_words(a: ContainerAttempt) -> str:
    reason = f" ({a.reason})" if a.reason else ""
    return f"attempt {a.attempt} exited {a.exit_code}{reason}" + (f" at {a.finished_at}" if a.finished_at else "")


def _kubectl(c: ContainerSample) -> tuple[str, str]:
    k = c.kubernetes
    assert k is not None
    return (f"`kubectl -n {k.namespace} logs {k.pod} -c {k.container} --previous`",
            f"`kubectl -n {k.namespace} describe pod {k.pod}`")


def _last_log(ctx: CheckContext, c: ContainerSample) -> list[str]:
    """The last lines of the last ended attempt's log, as evidence naming its file: the container's own log
    when it has ended, else its previous attempt's (ctx.previous_logs, read by the doctor)."""
    if c.status in ("exited", "dead"):
        return _log_evidence(ctx, c, [x for x in ctx.log_lines(c) if x.strip()][-LOG_LINES:])
    previous = ctx.previous_logs.get(c.id)
    if previous is None:
        return []
    path, lines = previous
    return _log_evidence(ctx, c, [x for x in lines if x.strip()][-LOG_LINES:],
                         source=f"{path} (the previous attempt's log)")


def restart_loop(ctx: CheckContext, c: ContainerSample) -> Finding:
    """container.restart_loop for a pod container (restartCount at or above the threshold)."""
    k = c.kubernetes
    assert k is not None
    cfg = c.config
    t = ctx.thresholds
    ended = exits(c)
    state = "has exited, waiting for its next restart" if c.status in ("exited", "dead") else f"is {c.status}"
    ev = [evidence(f"restartCount {cfg.restart_count}: attempt {cfg.restart_count} {state}", _cfg_source(c)),
          evidence(f"{cfg.restart_count} >= {t.named('restart_loop_count')}", "mltop doctor")]
    if ended:
        ev.append(evidence(", ".join(_exit_words(a) for a in ended[:SHOWN_EXITS]),
                           "CRI ContainerStatus of each attempt the runtime keeps"))
    known = [a.attempt for a in k.previous_attempts] + [cfg.restart_count]
    if min(known) > 0:  # the kubelet keeps the newest dead container of each; older ones are removed
        gone = "attempt 0" if min(known) == 1 else f"attempts 0-{min(known) - 1}"
        ev.append(evidence(f"{gone} removed by the kubelet's garbage collection: CRI keeps no exit code for them",
                           "CRI ListContainers"))
    ev += _last_log(ctx, c)
    last = ended[0] if ended else None
    title = f"CrashLoopBackOff: the pod container has restarted {cfg.restart_count} times"
    if last is not None:
        title += f", last exit code {last.exit_code}" + (f" ({last.reason})" if last.reason else "")
    logs, describe = _kubectl(c)
    fix = (f"Read why it dies: {logs} and {describe} (Last State, Events); fix the cause in the image, its command "
           "or the pod spec: the kubelet restarts it with a back-off of up to 5 minutes while it keeps failing")
    if last is not None and last.reason == "OOMKilled":
        limit = cfg.memory_limit_bytes
        fix += "; it was OOMKilled: " + pod_resources_fix(c, "memory", _mebibytes(2 * limit) if limit else
                                                          "<what it needs>", "or make it use less memory")
    return Finding("container.restart_loop", WARNING, c.name, title, tuple(ev), fix)


def crashed(ctx: CheckContext, c: ContainerSample, what: str) -> Finding:
    """container.crashed for a pod container that died of a signal (`what`: the signal in words)."""
    cfg = c.config
    ev = (evidence(f"exitCode {cfg.exit_code}, finishedAt {cfg.finished_at}, restartCount {cfg.restart_count}",
                   _cfg_source(c)),) + tuple(_last_log(ctx, c))
    logs, describe = _kubectl(c)
    fix = f"Read the last log lines: {logs} (or without `--previous` until it restarts) and {describe}"
    if cfg.exit_code == 135:
        fix += ("; for SIGBUS give it a bigger /dev/shm: a memory-backed `emptyDir: {medium: Memory, sizeLimit: "
                "8Gi}` mounted at /dev/shm")
    return Finding("container.crashed", WARNING, c.name, f"The pod container died of {what}", ev, fix)


def killed(ctx: CheckContext, c: ContainerSample) -> Finding:
    """container.crashed (info) for a pod container killed with SIGKILL without the OOM killer's flag."""
    cfg = c.config
    _, describe = _kubectl(c)
    return Finding("container.crashed", INFO, c.name, "The pod container was killed with SIGKILL (exit 137)",
                   (evidence(f"exitCode 137, reason {'OOMKilled' if cfg.oom_killed else 'not OOMKilled'}, "
                             f"finishedAt {cfg.finished_at}", _cfg_source(c)),),
                   "A failed liveness probe, a `kubectl delete pod` past its terminationGracePeriodSeconds, an "
                   f"eviction or an OOM kill whose reason was lost: {describe} (Events, Last State)")
