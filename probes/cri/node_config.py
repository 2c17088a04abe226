"""The node's containerd configuration, as far as the GPU checks need it: which runtime handlers it defines
(a pod's `runtimeClassName` names one) and which is the default, from config.toml and the drop-ins it imports
(`imports = ["/etc/containerd/conf.d/*.toml"]`, as nvidia-ctk writes them). Config versions 2 and 3."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

DEFAULT_PATH = "/etc/containerd/config.toml"
ENV_VAR = "MLTOP_CONTAINERD_CONFIG"
_CRI_PLUGINS = ('io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.runtime')  # v2, v3


@dataclass(frozen=True)
class ContainerdRuntimes:
    path: str  # the config.toml read
    files: tuple[str, ...]  # it and the drop-ins merged into it, in order
    runtimes: tuple[str, ...]  # handler names: "runc", "nvidia", ...
    default_runtime: str | None
    error: str | None = None  # could not be read or parsed: nothing above is known


def config_path() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


def read_containerd_runtimes(path: str | None = None) -> ContainerdRuntimes | None:
    """None when there is no containerd config at all (not a containerd node, or not visible here)."""
    import tomllib

    path = path or config_path()
    if not os.path.exists(path):
        return None
    files, runtimes, default = [], {}, None
    try:
        with open(path, "rb") as f:
            main = tomllib.load(f)
        docs = [(path, main)]
        for pattern in main.get("imports") or ():
            pattern = pattern if os.path.isabs(pattern) else os.path.join(os.path.dirname(path), pattern)
            for extra in sorted(glob.glob(pattern)):
                with open(extra, "rb") as f:
                    docs.append((extra, tomllib.load(f)))
    except (OSError, ValueError) as exc:
        return ContainerdRuntimes(path, (path,), (), None, f"{type(exc).__name__}: {exc}")
    for name, doc in docs:
        files.append(name)
        for plugin in _CRI_PLUGINS:
            section: Any = ((doc.get("plugins") or {}).get(plugin) or {}).get("containerd") or {}
            runtimes.update(dict.fromkeys(section.get("runtimes") or {}))
            default = section.get("default_runtime_name") or default
    return ContainerdRuntimes(path, tuple(files), tuple(runtimes), default)
