"""Talk to the Docker engine: connect, list and inspect containers, engine facts, logs, and change events."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from .model import ContainerConfig, DeviceMapping, DeviceRequest, EngineStatus, KubernetesInfo, Mount
from .unix_api import NoSuchContainer, Unanswered, UnixSocketAPI
from .redaction import (
    SECRETS_UNREADABLE,
    ContainerSecrets,
    redact_argv,
    redact_env,
    redact_text,
    redact_value,
    scrub_values,
    secret_values,
    split_env,
)
from .text import COMMAND_CAP, LOG_LINE_CAP, VALUE_CAP

log = logging.getLogger(__name__)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# mltop's own spelling of the engine endpoint, before $DOCKER_HOST (the docker CLI's, which mltop reads too)
ENV_VAR = "MLTOP_DOCKER_HOST"
# --docker-host / $MLTOP_DOCKER_HOST values that turn the Docker engine off, as `--cri-endpoint none` turns CRI
# off. Not from $DOCKER_HOST: to the docker CLI `DOCKER_HOST=none` is a machine named "none".
DISABLED = ("none", "off")
DISABLED_HOST = "none"  # the docker_host of an engine turned off


class EngineError(Exception):
    """The engine could not be reached or refused us; `status` says which, the message says what to do."""

    def __init__(self, status: str, message: str, timed_out: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        # The engine took the request and did not answer within the timeout: it may be up and wedged (still
        # listing containers while their inspects hang), which is not the same as a socket nobody listens on.
        self.timed_out = timed_out


class SecretsUnreadable(EngineError):
    """A container's environment could not be read, so text it prints cannot be scrubbed of its secrets."""

    def __init__(self, reason: str | None):
        super().__init__("secrets_unreadable", f"{SECRETS_UNREADABLE} ({reason or 'no reason given'})")


def _named_host(cli_value: str | None) -> tuple[str | None, str]:
    """The endpoint the user named for mltop (--docker-host, then $MLTOP_DOCKER_HOST) and where it came from."""
    if cli_value:
        return cli_value, "--docker-host"
    env = os.environ.get(ENV_VAR)
    return (env, ENV_VAR) if env else (None, "")


def docker_turned_off(cli_value: str | None = None) -> str | None:
    """Why the Docker engine is not to be asked at all (`--docker-host none`, `MLTOP_DOCKER_HOST=none`), or None."""
    named, where = _named_host(cli_value)
    if named is not None and named.strip().lower() in DISABLED:
        value = named.strip()
        return f"Docker turned off ({where} {value})" if where.startswith("--") else \
            f"Docker turned off ({where}={value})"
    return None


def docker_host_in_use(cli_value: str | None = None) -> str:
    """The endpoint in use: --docker-host, then $MLTOP_DOCKER_HOST, then $DOCKER_HOST, then the current docker
    context, then the socket; `none` where the engine is turned off (docker_turned_off)."""
    if docker_turned_off(cli_value):
        return DISABLED_HOST
    return _named_host(cli_value)[0] or os.environ.get("DOCKER_HOST") or _context_host() or DEFAULT_DOCKER_HOST


def docker_host_named(cli_value: str | None = None) -> bool:
    """Whether the user named an engine (an option or a variable) rather than mltop finding the default one."""
    return bool(_named_host(cli_value)[0] or os.environ.get("DOCKER_HOST"))


def _context_host() -> str | None:
    """The engine host of the current `docker context` ($DOCKER_CONTEXT or config.json's currentContext).

    Read from the CLI's own files (contexts/meta/<sha256(name)>/meta.json) rather than the SDK's ContextAPI,
    which ignores $DOCKER_CONFIG when no config.json exists.
    """
    config_dir = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    name = os.environ.get("DOCKER_CONTEXT")
    if not name:
        try:
            with open(os.path.join(config_dir, "config.json")) as f:
                name = json.load(f).get("currentContext")
        except (OSError, ValueError, AttributeError):
            return None
    if not name or name == "default":
        return None
    meta = os.path.join(config_dir, "contexts", "meta", hashlib.sha256(name.encode()).hexdigest(), "meta.json")
    try:
        with open(meta) as f:
            return json.load(f)["Endpoints"]["docker"]["Host"] or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def explain_engine_error(exc: BaseException, docker_host: str) -> EngineError:
    """Turn a connection failure into a status and an actionable message."""
    text = f"{exc!r} {exc}"
    if docker_host.strip().lower() in DISABLED:  # $DOCKER_HOST=none: the docker CLI's variable, a host name to it
        return EngineError(
            "error",
            f"DOCKER_HOST={docker_host} is no Docker endpoint: to turn the engine off, use --docker-host none or "
            f"{ENV_VAR}=none (mltop leaves $DOCKER_HOST to the docker CLI, for which it names a machine).",
        )
    socket_path = docker_host[len("unix://"):] if docker_host.startswith("unix://") else None
    if docker_host.startswith("ssh://"):
        return EngineError(
            "unreachable",
            f"Could not reach the engine over SSH at {docker_host}: check that `{_ssh_command(docker_host)} "
            "docker info` works without a password prompt (mltop uses your ssh client, its config and agent). "
            f"({str(exc).strip()[:160]})",
        )
    if "Permission denied" in text or "PermissionError" in text or "Errno 13" in text:
        where = socket_path or docker_host
        return EngineError(
            "permission_denied",
            f"Permission denied on {where}: add your user to the docker group "
            "(sudo usermod -aG docker $USER, then log in again) or run mltop with sudo.",
        )
    if socket_path and ("FileNotFoundError" in text or "No such file" in text or "Errno 2" in text):
        return EngineError(
            "unreachable",
            f"No Docker engine at {docker_host} (the socket does not exist): start it with "
            "`sudo systemctl start docker`, or point --docker-host / DOCKER_HOST at the engine.",
        )
    if "Connection refused" in text or "ConnectionRefused" in text or "Errno 111" in text:
        return EngineError(
            "unreachable",
            f"The Docker engine at {docker_host} refused the connection: is dockerd running? "
            "(`sudo systemctl start docker`)",
        )
    if "timed out" in text.lower() or "timeout" in text.lower():
        return EngineError("unreachable", f"The Docker engine at {docker_host} did not answer in time.",
                           timed_out=True)
    return EngineError("error", f"Docker engine at {docker_host}: {str(exc).strip()[:300] or type(exc).__name__}")


def _ssh_command(docker_host: str) -> str:
    """`ssh [-p PORT] [user@]host` for an ssh:// engine URL."""
    from urllib.parse import urlsplit

    url = urlsplit(docker_host)
    target = f"{url.username}@{url.hostname}" if url.username else (url.hostname or "")
    return f"ssh -p {url.port} {target}" if url.port else f"ssh {target}"


@dataclass(frozen=True)
class ContainerMeta:
    """What the engine says about one container: listing fields plus parsed inspect data."""

    id: str
    name: str
    image: str
    status: str
    pid: int | None
    config: ContainerConfig
    state_key: tuple[Any, ...]  # changes whenever the container's state does, to know when to re-inspect
    # The container's raw secret values, to scrub from its process command lines and logs. Never shown,
    # never put in a snapshot.
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    # Made from the list alone while its inspect is on the way (the dashboard's first frame on a dense host):
    # no PID, no secrets, a configuration with nothing in it but the exit code.
    provisional: bool = False
    inspect_error: str | None = None  # its inspect failed, in the engine's words (config: provisional, or older)
    runtime: str = "docker"  # the runtime that runs it (probes/identity.py's names)
    kubernetes: KubernetesInfo | None = None  # a CRI runtime's pod container
    cgroup_parent: str | None = None  # where to look for its cgroup when its PID is not known
    cgroup_guesses: tuple[str, ...] = ()  # whole paths to try before its status says (a provisional pod container)


def _none_if_zero(value: Any) -> Any:
    return value or None


def config_from_inspect(attrs: dict[str, Any], secrets: frozenset[str] | None = None) -> ContainerConfig:
    """Parse the ML-relevant part of `docker inspect` output. Secrets are redacted here, at the source:
    secret-named environment values and labels, token shapes, and the container's own secret values wherever
    its command line echoes them (`secrets`: those values, when the caller has already read them)."""
    cfg = attrs.get("Config") or {}
    raw_env = split_env(cfg.get("Env"))
    if secrets is None:
        secrets = secret_values(raw_env)

    def argv(values) -> tuple[str, ...]:
        return tuple(scrub_values(a, secrets) for a in redact_argv(values or (), cap=COMMAND_CAP))

    host = attrs.get("HostConfig") or {}
    state = attrs.get("State") or {}
    requests = []
    for req in host.get("DeviceRequests") or ():
        requests.append(
            DeviceRequest(
                driver=req.get("Driver") or "",
                count=int(req.get("Count") or 0),
                device_ids=tuple(req.get("DeviceIDs") or ()),
                capabilities=tuple(tuple(caps) for caps in (req.get("Capabilities") or ())),
            )
        )
    mounts = tuple(
        Mount(
            type=m.get("Type", ""),
            source=m.get("Source", ""),
            destination=m.get("Destination", ""),
            read_only=not m.get("RW", True),
        )
        for m in attrs.get("Mounts") or ()
    )
    throttles = {
        key: tuple(host.get(key) or ())
        for key in ("BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps")
        if host.get(key)
    }
    restart_policy = (host.get("RestartPolicy") or {}).get("Name") or None
    running = state.get("Running") or state.get("Restarting")
    return ContainerConfig(
        command=argv(cfg.get("Cmd")),
        entrypoint=argv(cfg.get("Entrypoint")),
        env=redact_env(raw_env, cap=VALUE_CAP),
        labels={k: scrub_values(redact_value(k, v, VALUE_CAP), secrets) for k, v in (cfg.get("Labels") or {}).items()},
        created=attrs.get("Created"),
        started_at=state.get("StartedAt"),
        finished_at=None if running else state.get("FinishedAt"),
        restart_count=int(attrs.get("RestartCount") or 0),
        restart_policy=restart_policy,
        exit_code=None if running else state.get("ExitCode"),
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or None,
        runtime=host.get("Runtime") or None,
        device_requests=tuple(requests),
        shm_size_bytes=host.get("ShmSize") or None,
        ipc_mode=host.get("IpcMode") or None,
        pid_mode=host.get("PidMode") or None,
        network_mode=host.get("NetworkMode") or None,
        privileged=bool(host.get("Privileged")),
        cap_add=tuple(host.get("CapAdd") or ()),
        memory_limit_bytes=_none_if_zero(host.get("Memory")),
        nano_cpus=_none_if_zero(host.get("NanoCpus")),
        cpu_quota=_none_if_zero(host.get("CpuQuota")),
        cpu_period=_none_if_zero(host.get("CpuPeriod")),
        cpuset_cpus=host.get("CpusetCpus") or None,
        mounts=mounts,
        blkio_throttles=throttles,
        ulimits=tuple(host.get("Ulimits") or ()),
        devices=tuple(
            DeviceMapping(
                path_on_host=d.get("PathOnHost") or "",
                path_in_container=d.get("PathInContainer") or d.get("PathOnHost") or "",
                permissions=d.get("CgroupPermissions") or "rwm",
            )
            for d in host.get("Devices") or ()
        ),
    )


def meta_from_inspect(attrs: dict[str, Any]) -> ContainerMeta:
    state = attrs.get("State") or {}
    name = (attrs.get("Name") or "").lstrip("/") or attrs["Id"][:12]
    pid = state.get("Pid") or None
    secrets = ContainerSecrets.from_env((attrs.get("Config") or {}).get("Env")).values
    return ContainerMeta(
        id=attrs["Id"],
        name=name,
        image=(attrs.get("Config") or {}).get("Image") or attrs.get("Image", ""),
        status=state.get("Status") or "unknown",
        pid=pid,
        config=config_from_inspect(attrs, secrets),
        state_key=(state.get("Status"), state.get("Pid"), state.get("StartedAt"), state.get("FinishedAt"),
                   attrs.get("RestartCount")),
        secrets=secrets,
    )


def _exit_code_from_status(status: str) -> int | None:
    """137 from the list's "Exited (137) 5 minutes ago"."""
    if status.startswith("Exited ("):
        code = status[len("Exited ("):].split(")", 1)[0]
        if code.lstrip("-").isdigit():
            return int(code)
    return None


def provisional_meta(entry: dict[str, Any]) -> ContainerMeta:
    """What one entry of the container list says, until the container's inspect arrives."""
    names = entry.get("Names") or ()
    name = (names[0] if names else "").lstrip("/") or entry["Id"][:12]
    state = entry.get("State") or "unknown"
    running = state in ("running", "restarting", "paused")
    config = ContainerConfig(
        command=(), entrypoint=(), env=(), labels={}, created=None, started_at=None, finished_at=None,
        restart_count=0, restart_policy=None,
        exit_code=None if running else _exit_code_from_status(entry.get("Status") or ""),
        oom_killed=False, error=None, runtime=None, device_requests=(), shm_size_bytes=None, ipc_mode=None,
        pid_mode=None, network_mode=(entry.get("HostConfig") or {}).get("NetworkMode"), privileged=False,
        cap_add=(), memory_limit_bytes=None, nano_cpus=None, cpu_quota=None, cpu_period=None, cpuset_cpus=None,
        mounts=(), blkio_throttles={}, ulimits=(),
    )
    return ContainerMeta(id=entry["Id"], name=name, image=entry.get("Image") or "", status=state, pid=None,
                         config=config, state_key=(state,), provisional=True)


class Engine:
    """A lazily connected Docker client that reports failures as `EngineStatus` instead of raising."""

    def __init__(self, docker_host: str | None = None, timeout_s: float = 10.0):
        # --docker-host none: never connect; every call raises EngineError("disabled") with this reason
        self.disabled = docker_turned_off(docker_host)
        self.docker_host = docker_host_in_use(docker_host)
        named = _named_host(docker_host)[0]
        # from_env() honours DOCKER_HOST and TLS variables; a --docker-host, $MLTOP_DOCKER_HOST or a docker
        # context is explicit
        self._explicit_host = None if (not named and os.environ.get("DOCKER_HOST")) else (
            named or (self.docker_host if self.docker_host != DEFAULT_DOCKER_HOST else None))
        self._timeout_s = timeout_s
        self._client = None
        self._lock = threading.Lock()
        self._info: dict[str, Any] | None = None
        self._version: str | None = None
        self._secrets: dict[str, ContainerSecrets] = {}
        # A local engine's read-only calls go over its socket without the SDK (unix_api.py); None: not tried
        # yet, False: it could not answer (the SDK answers, and explains the failure) until reset().
        # (not for a subclass that reaches the engine its own way: tests' stand-ins answer everything)
        own_transport = type(self).client is Engine.client and type(self).call is Engine.call
        self._api = UnixSocketAPI(self.docker_host[len("unix://"):], timeout_s) \
            if self.docker_host.startswith("unix://") and own_transport else None
        self._api_ok: bool | None = None
        self._raw_inspect_for = None  # the SDK client _connect made itself (not one a test handed in)

    # -- connection -----------------------------------------------------------------------------

    @property
    def client(self):
        """The docker SDK client; raises EngineError when the engine cannot be reached."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self):
        if self.disabled:
            raise EngineError("disabled", f"{self.disabled}: mltop does not ask the Docker engine")
        docker = _import_docker(ssh=self.docker_host.startswith("ssh://"))
        if self.docker_host.startswith("ssh://"):
            self._check_ssh()
        try:
            if self._explicit_host:
                client = docker.DockerClient(
                    base_url=self.docker_host,
                    timeout=self._timeout_s,
                    use_ssh_client=self.docker_host.startswith("ssh://"),
                )
            else:
                client = docker.from_env(
                    timeout=self._timeout_s, use_ssh_client=self.docker_host.startswith("ssh://")
                )
            self._version = client.version().get("Version")
            if self.docker_host.startswith("unix://"):
                self._raw_inspect_for = client
        except Exception as exc:  # docker raises DockerException, requests errors, OSError...
            raise explain_engine_error(exc, self.docker_host) from None
        return client

    def _check_ssh(self) -> None:
        """Try the SSH hop ourselves first, with its output captured: the SDK's ssh child writes its errors
        straight to the terminal, which would scribble over the dashboard."""
        import subprocess

        command = _ssh_command(self.docker_host).split() + ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                                                            "docker", "version", "--format", "{{.Server.Version}}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=self._timeout_s,
                                    stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise explain_engine_error(exc, self.docker_host) from None
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
            raise explain_engine_error(ConnectionError(last), self.docker_host)

    def reset(self) -> None:
        """Forget the connection so the next call reconnects (after an engine restart)."""
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:
                    log.debug("closing the engine client failed", exc_info=True)
            self._client = None
            self._info = None
            self._api_ok = None
        if self._api is not None:
            self._api.close()

    def _socket_api(self) -> UnixSocketAPI | None:
        """The unix-socket path, when it can answer: a local engine, no client handed in from outside."""
        api = self._api
        if api is None or self._api_ok is False:
            return None
        client = self._client
        if client is not None and client is not self._raw_inspect_for:
            return None  # a client handed in (tests' stand-ins) answers everything
        if self._api_ok is None:
            try:
                self._version = api.version().get("Version")
            except Unanswered:
                log.debug("the engine socket did not answer /version: the SDK answers", exc_info=True)
                self._api_ok = False
                return None
            self._api_ok = True
        return api

    def status(self) -> EngineStatus:
        if self.disabled:
            return EngineStatus("disabled", self.disabled, self.docker_host)
        try:
            self.client.ping()
        except EngineError as err:
            return EngineStatus(err.status, err.message, self.docker_host)
        except Exception as exc:
            log.debug("engine ping failed", exc_info=True)
            self.reset()
            err = explain_engine_error(exc, self.docker_host)
            return EngineStatus(err.status, err.message, self.docker_host)
        return EngineStatus("ok", None, self.docker_host)

    def call(self, fn, *args, **kwargs):
        """Run an SDK call, turning connection failures into EngineError (and dropping the connection)."""
        client = self.client
        try:
            return fn(client, *args, **kwargs)
        except EngineError:
            raise
        except Exception as exc:
            import docker.errors
            import requests.exceptions

            if isinstance(exc, docker.errors.NotFound):
                raise
            if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError, OSError)):
                self.reset()
                raise explain_engine_error(exc, self.docker_host) from None
            raise

    # -- facts ----------------------------------------------------------------------------------

    @property
    def version(self) -> str | None:
        return self._version

    def info(self, refresh: bool = False) -> dict[str, Any]:
        if self._info is None or refresh:
            api = self._socket_api()
            try:
                self._info = api.get("/info") if api is not None else None
            except Unanswered:
                self._info = None
            if self._info is None:
                self._info = self.call(lambda c: c.info())
        return self._info

    # -- containers -----------------------------------------------------------------------------

    def list_containers(self) -> list[dict[str, Any]]:
        """One cheap call: every container (running and stopped) with id, names, image and state."""
        api = self._socket_api()
        if api is not None:
            try:
                return api.get("/containers/json", all=1)
            except Unanswered:
                pass
        return self.call(lambda c: c.api.containers(all=True))

    def inspect(self, container_id: str) -> dict[str, Any]:
        """`docker inspect`; raises one of not_found_errors() when the container is gone. Over the socket it
        costs ~0.1 ms of CPU, through the SDK's requests stack ~0.55 ms (a cold start inspects every one)."""
        api = self._socket_api()
        if api is not None:
            try:
                return api.inspect(container_id)
            except Unanswered:
                pass
        return self.call(lambda c: c.api.inspect_container(container_id))

    def events(self, since: float | None = None):
        """The stream of container events: iterate it for dicts, close() it (from any thread) to end it."""
        api = self._socket_api()
        if api is not None:
            try:
                return api.events({"type": ["container"]}, since)
            except Unanswered:
                pass
        return self.call(lambda c: c.api.events(decode=True, filters={"type": "container"}, since=since))

    def container_secrets(self, container_id: str) -> ContainerSecrets:
        """The container's own secret values (from its environment), to scrub from text it prints; when the
        environment cannot be read, a ContainerSecrets that says so (`known` is False): fail closed.

        A container's environment never changes, so this is one inspect per container per session."""
        cached = self._secrets.get(container_id)
        if cached is not None:
            return cached
        try:
            env = (self.inspect(container_id).get("Config") or {}).get("Env")
        except Exception as exc:
            # an unreachable engine, or a container removed meanwhile (a churning node), needs no traceback
            log.warning("cannot read the environment of %s: its secrets are unknown", container_id[:12],
                        exc_info=not isinstance(exc, (EngineError, *not_found_errors())))
            return ContainerSecrets(error=getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
        self._secrets[container_id] = secrets = ContainerSecrets.from_env(env)
        return secrets

    def forget_containers(self, listed: set[str]) -> None:
        """Forget the secrets of containers no longer `listed` (the sampler calls this after each sweep): kept
        past its container, every short job of a churning node would stay here."""
        for gone in self._secrets.keys() - listed:
            self._secrets.pop(gone, None)

    def logs(self, container_id: str, tail: int = 200, since: float | None = None,
             timestamps: bool = False) -> list[str]:
        """The last `tail` log lines (stdout and stderr), decoded leniently and with secrets redacted:
        token shapes, secret assignments, and the container's own secret values even when echoed bare.

        Raises SecretsUnreadable (an EngineError) when the container's secrets cannot be read."""
        secrets = self.container_secrets(container_id)
        if not secrets.known:
            raise SecretsUnreadable(secrets.error)
        raw = self.call(
            lambda c: c.api.logs(container_id, stdout=True, stderr=True, tail=tail, since=since,
                                 timestamps=timestamps)
        )
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        return [secrets.scrub(line, LOG_LINE_CAP) for line in text.splitlines()]


def not_found_errors() -> tuple[type[BaseException], ...]:
    """What an engine call raises for a container that is gone: the socket path's NoSuchContainer, and the
    SDK's NotFound once the SDK is loaded (an `except not_found_errors():` is evaluated only on an error,
    so it imports nothing)."""
    errors = sys.modules.get("docker.errors")
    return (NoSuchContainer,) if errors is None else (NoSuchContainer, errors.NotFound)


def _import_docker(ssh: bool):
    """The docker SDK (a heavy import: only when we really talk to the engine), without paramiko unless the
    engine is reached over SSH.

    docker.transport imports its paramiko adapter eagerly: ~60 ms of CPU, half the SDK's import, on the way
    to a dashboard's first frame (issue 11). mltop reaches an ssh:// engine through the ssh client
    (use_ssh_client=True), which needs the adapter class but not paramiko's own transport; when an SSH
    engine comes after an import without it, the adapter is imported then."""
    import sys

    if "docker" not in sys.modules and not ssh and "paramiko" not in sys.modules:
        sys.modules["paramiko"] = None  # type: ignore[assignment]  # `import paramiko` raises ImportError
        try:
            import docker
        finally:
            del sys.modules["paramiko"]
    import docker
    import docker.api.client

    if ssh and not hasattr(docker.api.client, "SSHHTTPAdapter"):
        from docker.transport.sshconn import SSHHTTPAdapter

        docker.api.client.SSHHTTPAdapter = SSHHTTPAdapter
    return docker
