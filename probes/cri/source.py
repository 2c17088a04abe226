"""A CRI runtime as a source of containers: it names pod containers (ids, names, labels, image, state, exit
code, restarts, PID and cgroup); every figure still comes from mltop's own cgroup, /proc and NVML sampling.

One sweep costs ListPodSandbox and ListContainers (a few ms); ContainerStatus (verbose, for the PID, the
cgroup path, the command and environment) only for a container that is new or whose state moved. The attempts
of one pod container (the kubelet's restarts) are listed as one container, the newest (attempts.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from ..engine import ContainerMeta
from ..identity import CONTAINERD, CRIO, identity_from_path, pod_cgroup_guesses
from ..model import ContainerAttempt, ContainerConfig, KubernetesInfo, SourceStatus
from ..redaction import ContainerSecrets, redact_argv, redact_env, redact_value, scrub_values, split_env
from ..text import COMMAND_CAP, VALUE_CAP
from . import socket_path
from .attempts import collapse_attempts

log = logging.getLogger(__name__)

STATUS_THREADS_MIN = 4  # more new or changed containers than this in one sweep: ask for their status on threads
NOT_FOUND = object()

# CRI ContainerState -> the engine's words, which every screen and check already speaks
_STATES = {0: "created", 1: "running", 2: "exited", 3: "unknown"}
_RUNTIME_NAMES = {"containerd": CONTAINERD, "cri-o": CRIO, "crio": CRIO}

# The kubelet's labels on every container, then containerd's annotations as the fallback
POD_NAME = ("io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name")
POD_NAMESPACE = ("io.kubernetes.pod.namespace", "io.kubernetes.cri.sandbox-namespace")
POD_UID = ("io.kubernetes.pod.uid", "io.kubernetes.cri.sandbox-uid")
CONTAINER_NAME = ("io.kubernetes.container.name", "io.kubernetes.cri.container-name")
RESTART_COUNT = "io.kubernetes.container.restartCount"


def kubernetes_from_labels(labels, annotations=None, qos: str | None = None) -> KubernetesInfo | None:
    """The pod of a container from the kubelet's labels (containerd's annotations as the fallback); None
    outside pods. (A recording keeps the labels, not the QoS class: replay passes none.)"""
    annotations = annotations or {}
    namespace = _first(POD_NAMESPACE, labels, annotations)
    pod = _first(POD_NAME, labels, annotations)
    container = _first(CONTAINER_NAME, labels, annotations)
    if not (namespace and pod and container):
        return None
    return KubernetesInfo(namespace, pod, _first(POD_UID, labels, annotations) or "", container, qos)


def _first(keys: tuple[str, ...], *maps) -> str | None:
    for key in keys:
        for m in maps:
            value = m.get(key)
            if value:
                return value
    return None


class CriSource:
    """One CRI endpoint. view() never raises: a runtime that does not answer is a status, not an exception."""

    kind = "cri"

    def __init__(self, endpoint: str, named: bool = False, timeout_s: float = 2.0, background: bool = False):
        self.endpoint = endpoint
        # Many new containers at once (a cold start): answer from the list with provisional metas (cgroups
        # found by pod UID and id) and ask their statuses in the background, as the Docker catalog does.
        self.background = background
        self._pending: dict[str, tuple[tuple[Any, ...], Any]] = {}  # id -> (state key, Future of its status)
        self._provisional: dict[str, tuple[tuple[Any, ...], ContainerMeta, Any]] = {}
        self.named = named  # the user asked for it: a missing socket is worth saying
        self.timeout_s = timeout_s
        self._client = None
        self._runtime: str | None = None
        self._version: str | None = None
        # id -> (state key, meta, its ContainerAttempt): a dead earlier attempt's key never moves, so its status
        # is asked once
        self._metas: dict[str, tuple[tuple[Any, ...], ContainerMeta, Any]] = {}
        self._pool = None
        self._collapsed: dict = {}  # pod container -> its attempts' metas and the one meta made of them

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _connect(self):
        if self._client is None:
            from .client import CriClient  # grpc, only once an endpoint exists

            self._client = CriClient(self.endpoint, self.timeout_s)
        return self._client

    def status(self, status: str, error: str | None = None, containers: int = 0) -> SourceStatus:
        return SourceStatus("cri", self.endpoint, status, error, self._runtime, self._version, containers)

    def view(self) -> tuple[SourceStatus, list[ContainerMeta]]:
        from .client import CriError

        try:
            client = self._connect()
            if self._version is None:
                version = client.version()
                self._runtime = _RUNTIME_NAMES.get(version.runtime_name, version.runtime_name or None)
                self._version = version.runtime_version or None
            sandboxes = {s.id: s for s in client.list_pod_sandboxes()}
            listed = client.list_containers()
        except CriError as err:
            self._version = None  # ask again when it comes back (it may be another runtime by then)
            status = err.status
            if status == "unreachable" and not self.named and socket_path(self.endpoint) and err.code:
                log.info("CRI %s: %s", self.endpoint, err.message)
            return self.status(status, err.message), []
        keys = {}
        to_ask = []
        for container in listed:
            sandbox = sandboxes.get(container.pod_sandbox_id)
            keys[container.id] = (container.state, container.metadata.attempt, container.created_at,
                                  sandbox.state if sandbox is not None else None)
            cached = self._metas.get(container.id)
            if cached is None or cached[0] != keys[container.id]:
                to_ask.append(container.id)

        statuses = self._statuses(client, to_ask, keys)
        runtime = self._runtime or CONTAINERD
        entries = []
        fresh: dict[str, tuple[tuple[Any, ...], ContainerMeta, Any]] = {}
        provisional: dict[str, tuple[tuple[Any, ...], ContainerMeta, Any]] = {}
        for container in listed:
            cid = container.id
            sandbox = sandboxes.get(container.pod_sandbox_id)
            if cid in statuses:
                if statuses[cid] is NOT_FOUND:
                    continue
                status = statuses[cid]
                entry = fresh[cid] = (keys[cid], meta_from_cri(container, status, sandbox, runtime),
                                      attempt_from_cri(container, status))
            elif cid in self._pending:  # its status is on the way: the same provisional meta meanwhile
                entry = self._provisional.get(cid)
                if entry is None or entry[0] != keys[cid]:
                    entry = (keys[cid], provisional_meta(container, sandbox, runtime),
                             attempt_from_cri(container, None))
                provisional[cid] = entry
            else:
                entry = fresh[cid] = self._metas[cid]
            entries.append((container, entry[1], entry[2]))
        self._metas, self._provisional = fresh, provisional
        for cid in set(self._pending) - set(keys):
            self._pending.pop(cid)[1].cancel()
        metas = collapse_attempts(entries, self._collapsed)
        return self.status("ok", None, len(metas)), metas

    def _status_of(self, client, cid: str):
        from .client import CriError

        try:
            return client.container_status(cid, verbose=True)
        except CriError as err:
            if err.code == "NOT_FOUND":
                return NOT_FOUND  # removed between the list and the status
            log.info("CRI ContainerStatus %s: %s", cid[:12], err.message)
            return None

    def _statuses(self, client, to_ask: list[str], keys: dict) -> dict[str, Any]:
        """{id: status} of the containers to ask: at once for a few; on four threads for many, waited for or
        (in background mode) collected at a later call while they stay provisional."""
        background = self.background and (len(to_ask) > STATUS_THREADS_MIN or self._pending)
        if len(to_ask) <= STATUS_THREADS_MIN and not background:
            return {cid: self._status_of(client, cid) for cid in to_ask}
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mltop-cri-status")
        if not background:  # a cold start on a busy node, answered whole: a few calls at once
            return dict(zip(to_ask, self._pool.map(lambda cid: self._status_of(client, cid), to_ask)))
        statuses = {}
        for cid in to_ask:
            pending = self._pending.get(cid)
            if pending is not None and pending[0] == keys[cid]:
                if pending[1].done():
                    del self._pending[cid]
                    statuses[cid] = pending[1].result()
                continue
            if pending is not None:
                pending[1].cancel()
            self._pending[cid] = (keys[cid], self._pool.submit(self._status_of, client, cid))
        return statuses


def provisional_meta(container, sandbox, runtime: str) -> ContainerMeta:
    """What the list says of a container, until its status arrives: names and labels, no PID; its cgroup is
    looked for where the kubelet puts it, by pod UID and id, for each QoS class and both drivers."""
    meta = meta_from_cri(container, None, sandbox, runtime)
    uid = meta.kubernetes.pod_uid if meta.kubernetes is not None else ""
    return dataclasses.replace(meta, provisional=True, cgroup_guesses=pod_cgroup_guesses(uid, container.id, runtime))


def _verbose_info(status) -> dict[str, Any]:
    """containerd's and CRI-O's verbose ContainerStatus: info["info"] is JSON with the PID and the OCI spec."""
    if status is None:
        return {}
    text = status.info.get("info")
    if not text:
        return {}
    try:
        info = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return {}
    return info if isinstance(info, dict) else {}


def _cgroup_parent(cgroups_path: str) -> str | None:
    """The directory above the container's cgroup, from the OCI spec's cgroupsPath: `/kubepods/…/pod<uid>/<id>`
    (cgroupfs) or `kubepods-…-pod<uid>.slice:cri-containerd:<id>` (systemd, slice:prefix:name)."""
    if not cgroups_path:
        return None
    if ":" in cgroups_path and not cgroups_path.startswith("/"):
        return None  # a systemd slice: the PID finds it
    parent = cgroups_path.rstrip("/").rsplit("/", 1)[0]
    return parent or None


def meta_from_cri(container, status, sandbox, runtime: str) -> ContainerMeta:
    """A ContainerMeta (the engine's record, which the sampler measures) from what the CRI says."""
    s = status.status if status is not None else None
    labels = dict(container.labels)
    annotations = dict(container.annotations)
    if s is not None:
        labels = {**labels, **dict(s.labels)}
        annotations = {**annotations, **dict(s.annotations)}
    pod_labels = dict(sandbox.labels) if sandbox is not None else {}
    pod_annotations = dict(sandbox.annotations) if sandbox is not None else {}
    info = _verbose_info(status)
    spec = info.get("runtimeSpec") or {}
    process = spec.get("process") or {}
    linux = spec.get("linux") or {}
    cgroups_path = str(linux.get("cgroupsPath") or "")

    name = container.metadata.name or _first(CONTAINER_NAME, labels, annotations) or container.id[:12]
    namespace = _first(POD_NAMESPACE, labels, annotations) or (sandbox.metadata.namespace if sandbox else "")
    pod = _first(POD_NAME, labels, annotations) or (sandbox.metadata.name if sandbox else "")
    pod_uid = _first(POD_UID, labels, annotations) or (sandbox.metadata.uid if sandbox else "")
    identity = identity_from_path(cgroups_path) if cgroups_path.startswith("/") else None
    qos = identity.qos if identity is not None else _qos_from_systemd(cgroups_path)
    kubernetes = KubernetesInfo(namespace, pod, pod_uid, _first(CONTAINER_NAME, labels, annotations) or name,
                                qos) if (namespace or pod) else None

    state_code = s.state if s is not None else container.state
    state = _STATES.get(state_code, "unknown")
    running = state == "running"
    raw_env = split_env(process.get("env"))
    secrets = ContainerSecrets.from_env(process.get("env")).values

    def argv(values) -> tuple[str, ...]:
        return tuple(scrub_values(a, secrets) for a in redact_argv(values or (), cap=COMMAND_CAP))

    def scrubbed(mapping: dict[str, str]) -> dict[str, str]:
        return {k: scrub_values(redact_value(k, v, VALUE_CAP), secrets) for k, v in mapping.items()}

    shm_size, ipc_mode = shm_of(spec)
    resources = linux.get("resources") or {}
    memory = (resources.get("memory") or {}).get("limit") or None
    cpu = resources.get("cpu") or {}
    restarts = annotations.get(RESTART_COUNT)
    exit_code = None if running or s is None or state == "created" else int(s.exit_code)
    reason = s.reason if s is not None else ""
    config = ContainerConfig(
        command=argv(process.get("args")), entrypoint=(), env=redact_env(raw_env, cap=VALUE_CAP),
        labels=scrubbed(labels), created=_iso(container.created_at),
        started_at=_iso(s.started_at) if s is not None else None,
        finished_at=None if running or s is None else _iso(s.finished_at),
        restart_count=int(restarts) if restarts and restarts.isdigit() else int(container.metadata.attempt),
        # containerd writes reason OOMKilled on any OOM kill in the container, also while it runs on (a child
        # killed at the limit); like the kubelet, only an exited container's reason says how it ended
        restart_policy=None, exit_code=exit_code, oom_killed=reason == "OOMKilled" and state == "exited",
        error=(s.message or None) if s is not None and reason not in ("", "Completed", "OOMKilled") else None,
        runtime=(sandbox.runtime_handler or None) if sandbox is not None else None,  # e.g. "nvidia"
        device_requests=(), shm_size_bytes=shm_size, ipc_mode=ipc_mode, pid_mode=None,
        network_mode=None, privileged=False, cap_add=(),
        memory_limit_bytes=int(memory) if memory else None, nano_cpus=None,
        cpu_quota=cpu.get("quota") or None, cpu_period=cpu.get("period") or None,
        cpuset_cpus=cpu.get("cpus") or None, mounts=(), blkio_throttles={}, ulimits=(),
        annotations=scrubbed(annotations), pod_labels=scrubbed(pod_labels),
        pod_annotations=scrubbed(pod_annotations),
        log_path=(s.log_path or None) if s is not None else None,
        cdi_devices=cdi_devices_of(annotations, info.get("config")),
    )
    pid = info.get("pid") if running else None
    image = (s.image.image if s is not None and s.image.image else container.image.image) or container.image_ref
    return ContainerMeta(
        id=container.id,
        name=kubernetes.display_name if kubernetes is not None else name,
        image=image,
        status=state,
        pid=int(pid) if pid else None,
        config=config,
        state_key=(state_code, container.metadata.attempt, pid),
        secrets=secrets,
        runtime=runtime,
        kubernetes=kubernetes,
        cgroup_parent=_cgroup_parent(cgroups_path),
    )


CDI_ANNOTATION_PREFIX = "cdi.k8s.io/"  # container-device-interface pkg/cdi/annotations.go


def cdi_devices_of(annotations: dict[str, str], cri_config: Any) -> tuple[str, ...]:
    """The CDI devices a container asks for: the `CDI_devices` of the kubelet's CRI ContainerConfig (as the
    runtime's verbose status echoes it) and the comma-separated values of `cdi.k8s.io/<key>` annotations (the
    device plugin's annotation strategy), in order, without repeats."""
    names: list[str] = []
    for key, value in annotations.items():
        if key.startswith(CDI_ANNOTATION_PREFIX):
            names += [v.strip() for v in str(value).split(",") if v.strip()]
    if isinstance(cri_config, dict):
        for device in cri_config.get("CDI_devices") or cri_config.get("cdi_devices") or ():
            if isinstance(device, dict) and device.get("name"):
                names.append(str(device["name"]))
    return tuple(dict.fromkeys(names))


def attempt_from_cri(container, status) -> ContainerAttempt:
    """How one CRI container (one attempt) ended, from its ContainerStatus (None while not asked yet)."""
    s = status.status if status is not None else None
    state = _STATES.get(s.state if s is not None else container.state, "unknown")
    ended = s is not None and state == "exited"
    return ContainerAttempt(
        attempt=int(container.metadata.attempt), container_id=container.id, status=state,
        exit_code=int(s.exit_code) if ended else None, reason=(s.reason or "") if ended else "",
        started_at=_iso(s.started_at) if s is not None else None,
        finished_at=_iso(s.finished_at) if ended else None,
        log_path=(s.log_path or None) if s is not None else None)


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def shm_of(spec: dict[str, Any]) -> tuple[int | None, str | None]:
    """(the size of the container's /dev/shm, "host" when it is the node's own), from the OCI spec's mounts: a
    tmpfs's `size=` option, else the size of the tmpfs a bind mount brings (containerd binds the sandbox's shm,
    64 MiB by default; an emptyDir of medium Memory mounted there is its own tmpfs), measured with statvfs."""
    for m in spec.get("mounts") or ():
        if not isinstance(m, dict) or m.get("destination") != "/dev/shm":
            continue
        source = str(m.get("source") or "")
        if source.rstrip("/") in ("/dev/shm", "/run/shm"):
            return None, "host"  # hostIPC: the node's /dev/shm
        for option in m.get("options") or ():
            if isinstance(option, str) and option.startswith("size="):
                number, unit = option[5:].rstrip("bB"), ""
                if number[-1:].lower() in _SIZE_UNITS:
                    number, unit = number[:-1], number[-1:].lower()
                if number.isdigit():
                    return int(number) * _SIZE_UNITS[unit], None
        if source.startswith("/"):
            try:
                st = os.statvfs(source)
            except OSError:
                return None, None
            return st.f_blocks * st.f_frsize, None
    return None, None


def _qos_from_systemd(cgroups_path: str) -> str | None:
    """QoS from a systemd cgroupsPath `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`."""
    if ":" not in cgroups_path:
        return None
    slice_name = cgroups_path.split(":", 1)[0]
    identity = identity_from_path(f"/kubepods.slice/{slice_name}/cri-containerd-{'0' * 64}.scope")
    return identity.qos if identity is not None else None


def _iso(nanoseconds: int) -> str | None:
    """CRI's timestamps (ns since the epoch) in the engine's ISO form."""
    if not nanoseconds:
        return None
    import datetime

    seconds, ns = divmod(int(nanoseconds), 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns:09d}Z"
