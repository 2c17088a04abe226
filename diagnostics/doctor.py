"""Run every check over one snapshot and collect the findings; a broken check is skipped, never raised."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

from mltop.probes.cri.access import CRI_RUNTIMES
from mltop.probes.model import SCHEMA_VERSION, ContainerSample, Snapshot

from mltop.probes.host_facts import ContainerFacts, HostFacts, HostProbe

from .checks import CheckContext, CheckSkipped, Thresholds, base as registry
from .findings import Finding, exit_code, sort_findings, worst_by_container
from .read_test import ReadTestResult, timed_direct_read
from .workload import WorkloadThresholds

log = logging.getLogger(__name__)

from .actions.registry import (DEVICE_CHECK, NO_EXEC_ENV, READ_TEST, no_exec_reason,  # noqa: E402  (re-exported)
                               refusal)

__all__ = ["BackgroundDeviceChecks", "DoctorResult", "SkippedCheck", "judge", "judgeable", "latest_device_check",
           "no_exec_reason", "run_doctor", "worst_by_container"]

def _pod_secrets(snapshot: Snapshot, selected) -> dict[str, Any]:
    """The secrets of the selected pod containers whose log files may be read, by container id, from the CRI
    endpoints that answered the snapshot (then the configured ones): their environment, to scrub by value."""
    ids = [c.id for c in selected if c.kubernetes is not None and c.config.log_path]
    if not ids:
        return {}
    from mltop.probes.cri import cri_endpoints
    from mltop.probes.cri.access import secrets_of

    endpoints = [s.endpoint for s in snapshot.host.sources if s.kind == "cri" and s.ok]
    endpoints += [e for e, _ in cri_endpoints() if e not in endpoints]
    try:
        return secrets_of(endpoints, ids)
    except Exception:  # the runtime went away meanwhile: those logs are not read (run_doctor says why)
        log.info("could not read the secrets of pod containers", exc_info=True)
        return {}


def _read_pod_logs(c, secrets, log_tail: int, skips, logs: dict, previous_logs: dict) -> None:
    """A pod container's log (the kubelet's file) and its previous attempt's, scrubbed of its own secret values,
    into `logs` and `previous_logs`; without those values (`secrets` None) neither is read, and `skips` says why."""
    from mltop.probes.cri.attempts import previous_log_path
    from mltop.probes.cri.logs import read_log
    from mltop.probes.text import LOG_LINE_CAP

    previous_path = previous_log_path(c)  # restarted and running again: why the last attempt ended
    has_log = os.path.exists(c.config.log_path)
    if secrets is None and (has_log or previous_path is not None):
        # Without the container's own secret values a secret echoed bare cannot be recognised: its log is not
        # read (as the report and the log pane withhold it), rather than quoted unscrubbed.
        skips.add("logs", "its log was not read: its secrets could not be read from the container runtime, so a "
                          "secret it printed could not be scrubbed", c.name)
        return
    if not has_log:
        skips.add("logs", f"no log file at {c.config.log_path} (is /var/log/pods readable here?)", c.name)
    else:  # token shapes, secret assignments and the container's own values; each line cut to the cap
        logs[c.id] = tuple(secrets.scrub(line.text, LOG_LINE_CAP)
                           for line in read_log(c.config.log_path, tail=log_tail))
    if previous_path is not None:
        previous_logs[c.id] = (previous_path, tuple(secrets.scrub(line.text, LOG_LINE_CAP)
                                                    for line in read_log(previous_path, tail=log_tail)))


@dataclass(frozen=True)
class SkippedCheck:
    check: str
    reason: str  # the names of `containers` are said in it too, for a reader of the text
    containers: tuple[str, ...] = ()  # the containers it was skipped for; none: the host, or every container


@dataclass(frozen=True)
class DoctorResult:
    findings: tuple[Finding, ...]  # host first, then containers worst first; most severe first in each
    checks_skipped: tuple[SkippedCheck, ...]
    containers_checked: tuple[str, ...] = ()  # names, in snapshot order
    missing: tuple[str, ...] = ()  # requested container names/ids the snapshot does not hold

    @property
    def exit_code(self) -> int:
        return exit_code(self.findings)

    def worst_by_container(self) -> dict[str | None, str]:
        """For the rows' markers: a silenced finding marks no row."""
        return worst_by_container(f for f in self.findings if f.silenced is None)

    def to_json(self) -> dict[str, Any]:
        """The documented `mltop doctor --json` document."""
        return {
            "schema_version": SCHEMA_VERSION,
            "findings": [f.to_json() for f in self.findings],
            "checks_skipped": [{"check": s.check, "reason": s.reason, "containers": list(s.containers)}
                               for s in self.checks_skipped],
        }


class _Skips:
    """Collects skipped checks, folding the same reason for many containers into one entry."""

    def __init__(self) -> None:
        self._order: list[tuple[str, str]] = []
        self._names: dict[tuple[str, str], list[str]] = {}

    def add(self, check: str, reason: str, container: str | None = None) -> None:
        key = (check, reason)
        if key not in self._names:
            self._order.append(key)
            self._names[key] = []
        if container is not None and container not in self._names[key]:
            self._names[key].append(container)

    def result(self) -> tuple[SkippedCheck, ...]:
        out = []
        for check, reason in self._order:
            names = self._names[(check, reason)]
            if names and not any(n in reason for n in names):
                reason = f"{reason} (containers: {', '.join(names)})"
            out.append(SkippedCheck(check, reason, tuple(names)))
        return tuple(out)


INSPECT = "inspect"  # how a container the doctor could not judge (no configuration read yet) shows in checks_skipped
CGROUP_FACTS = "cgroup_facts"


def judgeable(containers: Iterable[ContainerSample], skips: _Skips) -> tuple[ContainerSample, ...]:
    """The containers whose configuration was read. A placeholder (its docker inspect pending or failed) is
    never judged on its empty configuration: it lands in `skips` with the reason."""
    out = []
    for c in containers:
        unknown = c.config_unknown
        if unknown is None:
            out.append(c)
        else:
            skips.add(INSPECT, f"not judged: {unknown}, so its configuration is not known", c.name)
    return tuple(out)


def _container_facts(host: HostProbe, selected: Iterable[ContainerSample], cgroup_version: int | None,
                     skips: _Skips) -> dict[str, ContainerFacts]:
    """container id -> its cgroup limit files; one that cannot be read is said in `skips`, not judged as empty."""
    facts: dict[str, ContainerFacts] = {}
    for c in selected:
        try:
            facts[c.id] = found = host.container_facts(c, cgroup_version)
        except Exception as exc:
            log.info("cgroup facts of %s unreadable", c.name, exc_info=True)
            skips.add(CGROUP_FACTS, f"could not read its cgroup files ({type(exc).__name__}: {exc}): {_FACTS_USERS}",
                      c.name)
            continue
        if c.running and not found.cgroup_dirs:  # went away since the sweep, or its cgroups are not ours to see
            skips.add(CGROUP_FACTS, f"its cgroup was not found: {_FACTS_USERS}", c.name)
    return facts


_FACTS_USERS = "the pids, CPU throttling, read throttle and memlock checks judged it without them"


FRAMEWORK_CHECK = "framework_check"  # how a device check that could not run shows in checks_skipped
FRAMEWORK_CHECK_TIMEOUT_S = 180.0  # the device check imports every framework, each in its own child


def latest_device_check(action_log, container: ContainerSample):
    """The newest device-check result for `container` (by id: a name may belong to an earlier container)
    that finished and carries the frameworks' findings; None when there is none.

    `action_log` is an ActionLog or a sequence of ActionResults, oldest first.
    """
    from .actions import DEVICE_CHECK, OK

    results = action_log.results() if hasattr(action_log, "results") else tuple(action_log or ())
    for result in reversed(results):
        if result.container_id == container.id and result.action == DEVICE_CHECK and result.status == OK and \
                isinstance(result.data.get("frameworks"), Mapping):
            return result
    return None


def _framework_results(snapshot: Snapshot, selected: Iterable[ContainerSample], engine, skips: _Skips,
                       action_log, run_missing: bool, timeout_s: float) -> dict[str, Mapping[str, Any]]:
    """container id -> the device check's `frameworks`, from `action_log`, or run now when `run_missing`."""
    out: dict[str, Mapping[str, Any]] = {}
    if action_log is None and not run_missing:
        return out
    for c in selected:
        try:
            result = latest_device_check(action_log, c)
        except Exception as exc:  # a foreign object passed as the log: judge without it
            log.warning("could not read the action log", exc_info=True)
            skips.add(FRAMEWORK_CHECK, f"could not read the action log: {type(exc).__name__}: {exc}", c.name)
            result = None
        if result is None and run_missing:
            result = _run_device_check(snapshot, c, engine, skips, action_log, timeout_s)
        if result is not None:
            out[c.id] = result.data["frameworks"]
    return out


def _run_device_check(snapshot: Snapshot, c: ContainerSample, engine, skips: _Skips, action_log,
                      timeout_s: float):
    from .actions import DEVICE_CHECK, OK, ActionRun

    if not c.running:
        skips.add(FRAMEWORK_CHECK, "the container is not running", c.name)
        return None
    if engine is None and c.runtime not in CRI_RUNTIMES:
        skips.add(FRAMEWORK_CHECK, "the Docker engine is not reachable", c.name)
        return None
    try:
        result = ActionRun(DEVICE_CHECK, snapshot, c, engine, timeout_s=timeout_s, log=action_log).run()
    except Exception as exc:  # ActionRun.run does not raise; a bad argument to it might
        log.warning("the device check could not start in %s", c.name, exc_info=True)
        skips.add(FRAMEWORK_CHECK, f"the device check could not start: {type(exc).__name__}: {exc}", c.name)
        return None
    if result.status == OK and isinstance(result.data.get("frameworks"), Mapping):
        return result
    skips.add(FRAMEWORK_CHECK, f"the device check ended {result.status}: "
                               f"{result.explanation or 'no explanation given'}", c.name)
    return None


def _run_checks(ctx: CheckContext, skips: _Skips) -> list[Finding]:
    """Every registered check over ctx's host and containers; a check that fails lands in `skips`."""
    findings: list[Finding] = []
    for name, check in registry.HOST_CHECKS:
        try:
            findings += check(ctx)
        except CheckSkipped as skipped:
            skips.add(name, str(skipped))
        except Exception as exc:
            log.exception("check %s failed", name)
            skips.add(name, f"the check failed: {type(exc).__name__}: {exc}")
    for c in ctx.containers:
        for name, check in registry.CONTAINER_CHECKS:
            try:
                findings += check(ctx, c)
            except CheckSkipped as skipped:
                skips.add(name, str(skipped), c.name)
            except Exception as exc:
                log.exception("check %s failed for %s", name, c.name)
                skips.add(name, f"the check failed: {type(exc).__name__}: {exc}", c.name)
    return findings


def judge(ctx: CheckContext) -> DoctorResult:
    """Run every check over a context built by hand (tests, replays): no logs, exec or sensing of its own."""
    skips = _Skips()
    ctx = replace(ctx, containers=judgeable(ctx.containers, skips))
    findings = _run_checks(ctx, skips)
    return DoctorResult(findings=tuple(sort_findings(findings)), checks_skipped=skips.result(),
                        containers_checked=tuple(c.name for c in ctx.containers))


def run_doctor(
    snapshot: Snapshot,
    engine,
    containers: Iterable[str] | None = None,
    thresholds: Thresholds = Thresholds(),
    io_test: str | None = None,
    *,
    previous: Snapshot | None = None,
    host: HostProbe | None = None,
    host_facts: HostFacts | None = None,
    container_facts: Mapping[str, ContainerFacts] | None = None,
    log_tail: int = 200,
    io_test_max_mb: int = 256,
    io_test_timeout_s: float = 30.0,
    action_log=None,
    framework_check: bool = False,
    framework_check_timeout_s: float = FRAMEWORK_CHECK_TIMEOUT_S,
    no_exec: bool = False,
    workload_thresholds: WorkloadThresholds | None = None,
    allocation_history: str | None = None,
    allocation_unknown: Mapping[str, str] | None = None,
    silences: Sequence | None = None,
) -> DoctorResult:
    """Diagnose the host and the containers of `snapshot` (all, or those named/id-prefixed in `containers`).

    `engine` (probes.engine.Engine, or None) supplies recent logs (`log_tail` lines per container) and runs
    the `io_test` read (a path inside the containers) by docker exec. `previous`, an earlier snapshot of the
    same sampler, lets checks see counters rise. `action_log` (an ActionLog, or ActionResults) lends the checks
    what the newest successful device check of each container found (its frameworks' CUDA builds and whether
    they see a GPU); with `framework_check` the device check runs first (by docker exec, up to
    `framework_check_timeout_s` each) in every selected running container that has none yet, and its results
    join `action_log` when one is given. With `no_exec` (or MLTOP_NO_EXEC=1) nothing is exec'd: the read test
    and the device check are listed under checks_skipped with the reason. A container whose docker inspect is
    pending or failed is not judged on its empty configuration: it is listed there too, under "inspect".
    `host` senses what the snapshot does not carry (toolkit binaries, CDI specs, cgroup limit files; a running
    container's that cannot be read is listed under "cgroup_facts"); `host_facts` / `container_facts` (by
    container id) replace that sensing, for tests that build their own. `allocation_history` names where the
    pod GPU allocations' unused_since came from (a recording; None: this process's sampling) and
    `allocation_unknown` says per container id why there is no history (k8s.gpu_allocated_unused is skipped).
    `silences` (the recording's, probes.recording.silences): a GPU set healthy is judged from its mark on, and a
    finding an active silence holds carries it (Finding.silenced) and makes no exit code.
    Safe to call from a worker thread; never raises for a failing check or source: those land in
    `checks_skipped` with the reason.
    """
    if silences:
        from .silences import healthy_gpus

        snapshot = healthy_gpus(snapshot, silences)
        previous = healthy_gpus(previous, silences) if previous is not None else None
    selected, missing = snapshot.select(containers)
    skips = _Skips()
    selected = judgeable(selected, skips)  # no logs, exec or cgroup reads for a placeholder either
    host = host or HostProbe()
    if host_facts is None:
        fabric = any(g.fabric is not None and g.fabric.state != "not_supported" for g in snapshot.gpus)
        host_facts = host.host_facts(snapshot.host.cdi_spec_dirs, snapshot.host.nvml.library_path,
                                     fabric_needed=fabric)
    if container_facts is None:
        container_facts = _container_facts(host, selected, snapshot.host.cgroup_version, skips)
    engine_ok = engine is not None and snapshot.host.engine.ok

    logs: dict[str, tuple[str, ...]] = {}
    previous_logs: dict[str, tuple[str, tuple[str, ...]]] = {}
    pod_secrets = _pod_secrets(snapshot, selected)
    for c in selected:
        if c.kubernetes is not None and c.config.log_path:  # a pod container: the kubelet's log file
            _read_pod_logs(c, pod_secrets.get(c.id), log_tail, skips, logs, previous_logs)
            continue
        if not engine_ok:
            skips.add("logs", "the Docker engine is not reachable: log-based checks ran without logs", c.name)
            continue
        try:
            logs[c.id] = tuple(engine.logs(c.id, tail=log_tail))
        except Exception as exc:  # removed meanwhile, engine hiccup: judge without its logs
            log.info("could not read the logs of %s", c.name, exc_info=True)
            skips.add("logs", f"could not read the logs: {type(exc).__name__}: {exc}", c.name)

    # Whether the read test and the device check may exec: the action registry decides, in its words
    read_refused = refusal(READ_TEST, no_exec=no_exec)
    check_refused = refusal(DEVICE_CHECK, no_exec=no_exec)
    if read_refused and io_test:
        skips.add("io.read_test", read_refused)
        io_test = None
    if check_refused and framework_check:
        skips.add(FRAMEWORK_CHECK, check_refused)
        framework_check = False
    elif check_refused:
        skips.add("exec", check_refused + " The device check and the read test did not run; checks judged the "
                                          "image, logs and NVML only.")

    read_tests: dict[str, ReadTestResult] = {}
    if io_test:
        from .actions.run import exec_target

        for c in selected:
            if not c.running:
                skips.add("io.read_test", "the container is not running", c.name)
            elif not engine_ok and c.runtime not in CRI_RUNTIMES:
                skips.add("io.read_test", "the Docker engine is not reachable", c.name)
            else:
                target = None
                try:  # a pod container's read test runs through its CRI runtime's ExecSync
                    target = exec_target(engine, c)
                    read_tests[c.id] = timed_direct_read(target, c.id, io_test, io_test_max_mb, io_test_timeout_s)
                except Exception as exc:
                    log.info("the read test could not run in %s", c.name, exc_info=True)
                    what = getattr(exc, "explanation", None) or f"exec failed: {type(exc).__name__}: {exc}"
                    skips.add("io.read_test", what, c.name)
                finally:
                    if target is not None and target is not engine:
                        target.close()

    frameworks = _framework_results(snapshot, selected, engine if engine_ok else None, skips, action_log,
                                    framework_check, framework_check_timeout_s)

    from mltop.probes.net_interfaces import container_interfaces

    interfaces = {c.id: names for c in selected if c.running and c.config.env_value("NCCL_SOCKET_IFNAME")
                  for names in [container_interfaces(c.pid)] if names is not None}
    ctx = CheckContext(snapshot=snapshot, containers=selected, logs=logs, host=host_facts, thresholds=thresholds,
                       log_tail=log_tail, previous=previous, read_tests=read_tests, frameworks=frameworks,
                       container_facts=container_facts, previous_logs=previous_logs,
                       workload_thresholds=workload_thresholds or WorkloadThresholds(),
                       allocation_history=allocation_history, allocation_unknown=allocation_unknown or {},
                       interfaces=interfaces)
    findings = _run_checks(ctx, skips)
    if silences:
        from .silences import mark_silenced

        findings = mark_silenced(findings, silences, snapshot, snapshot.taken_at)
    return DoctorResult(
        findings=tuple(sort_findings(findings)),
        checks_skipped=skips.result(),
        containers_checked=tuple(c.name for c in selected),
        missing=missing,
    )


class BackgroundDeviceChecks:
    """The device-placement check without a key press: once per container start (id, StartedAt) in running
    containers that look like GPU workloads, at most one at a time, on the caller's worker thread.

    Its results join `action_log`, where the doctor finds them (latest_device_check), so driver.cuda_too_new
    and gpu.not_visible see the CUDA that pip wheels bring. Under --no-exec / MLTOP_NO_EXEC it runs nothing.
    """

    def __init__(self, action_log, timeout_s: float = FRAMEWORK_CHECK_TIMEOUT_S, no_exec: bool = False):
        self.action_log = action_log
        self.timeout_s = timeout_s
        self.no_exec = no_exec
        self.outcomes: dict[tuple[str, str | None], str] = {}  # (id, StartedAt) -> status, for each start tried
        self._lock = threading.Lock()

    @property
    def forbidden(self) -> str | None:
        """Why no background device check may run now (the action registry's words), or None."""
        from .actions.registry import BACKGROUND_DEVICE_CHECK

        return refusal(BACKGROUND_DEVICE_CHECK, no_exec=self.no_exec)

    @staticmethod
    def key(c: ContainerSample) -> tuple[str, str | None]:
        return (c.id, c.config.started_at)

    def due(self, snapshot: Snapshot) -> list[ContainerSample]:
        """Running GPU-looking containers whose current start has not been checked yet."""
        from .checks import looks_like_gpu_workload

        if self.forbidden:
            return []
        return [c for c in snapshot.containers
                if c.running and c.config_unknown is None and self.key(c) not in self.outcomes
                and (snapshot.has_gpus(c) or looks_like_gpu_workload(c))]

    def run_one(self, snapshot: Snapshot, engine):
        """Check the first due container; None when none is due or another check is running. Blocks while the
        check runs (up to timeout_s): call it from a worker thread, never the UI thread."""
        if not self._lock.acquire(blocking=False):
            return None  # one at a time
        try:
            due = self.due(snapshot)
            if not due or engine is None:
                return None
            c = due[0]
            self.outcomes[self.key(c)] = "running"
            from .actions import DEVICE_CHECK, ActionRun

            try:
                result = ActionRun(DEVICE_CHECK, snapshot, c, engine, timeout_s=self.timeout_s,
                                   log=self.action_log).run()
            except Exception as exc:  # a bad argument; ActionRun.run itself does not raise
                log.warning("background device check of %s could not start: %s", c.name, exc)
                self.outcomes[self.key(c)] = "error"
                return None
            self.outcomes[self.key(c)] = result.status
            return result
        finally:
            self._lock.release()
