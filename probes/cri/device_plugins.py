"""The kubelet's device-plugins directory: whether a kubelet runs here (its registration socket `kubelet.sock`)
and which NVIDIA device plugin sockets are there and answer.

NVIDIA's device plugin serves each resource on `nvidia-<name>.sock` in this directory (`nvidia-gpu.sock` for
`nvidia.com/gpu`, `nvidia-mig-1g.10gb.sock` for a MIG profile; k8s-device-plugin internal/plugin/server.go) and
removes it when it stops; a socket file whose plugin died without removing it is still there, but nobody
listens on it, and the kubelet then offers no `nvidia.com/gpu` to the scheduler.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

DEFAULT_DIR = "/var/lib/kubelet/device-plugins"
ENV_VAR = "MLTOP_DEVICE_PLUGINS_DIR"
KUBELET_SOCKET = "kubelet.sock"
NVIDIA_PREFIX = "nvidia"
CONNECT_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class PluginSocket:
    path: str
    listening: bool  # a connect() was accepted
    why_not: str | None = None  # "nobody listens (connection refused)", "not a socket", "permission denied", ...


@dataclass(frozen=True)
class DevicePluginsDir:
    path: str
    entries: tuple[str, ...] = ()  # every name in the directory, sorted
    kubelet_socket: bool = False  # kubelet.sock is there (a kubelet runs, or ran, on this node)
    nvidia_sockets: tuple[PluginSocket, ...] = ()  # nvidia*.sock
    error: str | None = None  # the directory could not be listed: nothing above is known

    @property
    def listening_nvidia(self) -> tuple[PluginSocket, ...]:
        return tuple(s for s in self.nvidia_sockets if s.listening)


def plugins_dir() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_DIR


def probe_socket(path: str, timeout_s: float = CONNECT_TIMEOUT_S) -> PluginSocket:
    """Whether a process accepts connections on the unix socket at `path` (connect, then close at once)."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return PluginSocket(path, False, "not a socket")
    except OSError as exc:
        return PluginSocket(path, False, exc.strerror or str(exc))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        s.connect(path)
        return PluginSocket(path, True)
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            return PluginSocket(path, False, "nobody listens (connection refused): a stale socket file")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return PluginSocket(path, False, "permission denied")
        if isinstance(exc, TimeoutError) or exc.errno == errno.EAGAIN:
            return PluginSocket(path, False, f"no answer within {timeout_s:g} s (the listener's queue is full)")
        return PluginSocket(path, False, exc.strerror or str(exc))
    finally:
        s.close()


def read_device_plugins(path: str | None = None) -> DevicePluginsDir | None:
    """None when the directory does not exist (not a Kubernetes node, or not visible here)."""
    path = path or plugins_dir()
    try:
        if not os.path.isdir(path):
            return None
        entries = tuple(sorted(os.listdir(path)))
    except OSError as exc:
        return DevicePluginsDir(path, error=f"{type(exc).__name__}: {exc.strerror or exc}")
    sockets = tuple(probe_socket(os.path.join(path, name)) for name in entries
                    if name.startswith(NVIDIA_PREFIX) and name.endswith(".sock"))
    return DevicePluginsDir(path, entries, KUBELET_SOCKET in entries, sockets)
