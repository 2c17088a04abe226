"""The Kubernetes Container Runtime Interface (CRI): where its socket is. The gRPC client (client.py) is
imported only once an endpoint exists, so a host without one never pays for grpc (tens of ms)."""

from __future__ import annotations

import os
import stat

# Where CRI runtimes listen by default: containerd, k3s's containerd, CRI-O.
DEFAULT_ENDPOINTS = (
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
)
ENV_VAR = "MLTOP_CRI_ENDPOINT"
DISABLED = ("none", "off", "")


def normalise_endpoint(value: str) -> str:
    """`unix:///path` for a path or a unix:// URL (crictl's spelling; grpc accepts it as is)."""
    if value.startswith("unix:"):
        return "unix:///" + value[len("unix:"):].lstrip("/")
    if value.startswith("/"):
        return "unix://" + value
    return value


def socket_path(endpoint: str) -> str | None:
    return endpoint[len("unix://"):] if endpoint.startswith("unix://") else None


def cri_endpoints(cli_value: str | None = None) -> tuple[tuple[str, bool], ...]:
    """The CRI endpoints to ask, each with whether the user named it: --cri-endpoint, then
    $MLTOP_CRI_ENDPOINT (`none` turns CRI off), else every default socket that exists on this host.

    A named endpoint is asked even when its socket is missing (the header says so); a default one only
    when its socket is there, so a host without Kubernetes neither imports grpc nor shows anything."""
    named = cli_value if cli_value is not None else os.environ.get(ENV_VAR)
    if named is not None:
        if named.strip().lower() in DISABLED:
            return ()
        return tuple((normalise_endpoint(v.strip()), True) for v in named.split(",") if v.strip())
    found = []
    for path in DEFAULT_ENDPOINTS:
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                found.append((normalise_endpoint(path), False))
        except OSError:
            continue
    return tuple(found)
