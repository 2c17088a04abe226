"""The node's container runtime configuration, as far as the GPU checks need it: which runtime handlers it
defines (a pod's `runtimeClassName` names one) and which is the default.

- containerd: config.toml and the drop-ins it imports (`imports = ["/etc/containerd/conf.d/*.toml"]`, as
  nvidia-ctk writes them). Config versions 2 and 3.
- CRI-O: crio.conf, then every file under crio.conf.d in lexical order (later files override; crio.conf.d(5),
  CRI-O's UpdateFromPath walks the directory and reads every file, whatever its extension: nvidia-ctk writes
  `99-nvidia.toml` there). `[crio.runtime] default_runtime` and the `[crio.runtime.runtimes.<name>]` tables; also
  the OCI hooks (`hooks_dir`) that run NVIDIA's hook under any runtime (nvidia-ctk's `--config-mode=oci-hook`).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

CONTAINERD = "containerd"
CRIO = "cri-o"

DEFAULT_PATH = "/etc/containerd/config.toml"
ENV_VAR = "MLTOP_CONTAINERD_CONFIG"
_CRI_PLUGINS = ('io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.runtime')  # v2, v3

CRIO_DEFAULT_PATH = "/etc/crio/crio.conf"
CRIO_ENV_VAR = "MLTOP_CRIO_CONFIG"
CRIO_DROP_IN_DIR = "crio.conf.d"  # next to crio.conf: /etc/crio/crio.conf.d
CRIO_DEFAULT_HOOKS_DIRS = ("/usr/share/containers/oci/hooks.d",)  # CRI-O's hooks_dir default
# CRI-O's built-in default_runtime when no file sets one: crun since CRI-O 1.31 (commit "config: default to crun"),
# runc before
CRIO_BUILTIN_DEFAULT = "crun (CRI-O 1.31 and later; runc before)"
NVIDIA_HOOK_MARKERS = ("nvidia-container-runtime-hook", "nvidia-ctk")


@dataclass(frozen=True)
class NodeRuntimes:
    """One runtime's handlers. `engine` is "containerd" or "cri-o" (probes.identity's names)."""

    path: str  # the main config read (config.toml, crio.conf)
    files: tuple[str, ...]  # it and the drop-ins merged into it, in order (the main file only when it exists)
    runtimes: tuple[str, ...]  # handler names: "runc", "nvidia", ...
    default_runtime: str | None  # None: no file sets it (the runtime's built-in default applies)
    error: str | None = None  # could not be read or parsed: nothing above is known
    engine: str = CONTAINERD
    nvidia_hooks: tuple[str, ...] = ()  # CRI-O: OCI hook files that run NVIDIA's hook under every runtime
    hooks_dirs: tuple[str, ...] = ()  # CRI-O: the hook directories searched

    @property
    def label(self) -> str:
        return "CRI-O" if self.engine == CRIO else "containerd"


def config_path() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


def crio_config_path() -> str:
    return os.environ.get(CRIO_ENV_VAR) or CRIO_DEFAULT_PATH


def _error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:  # the caller names the file
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


def read_containerd_runtimes(path: str | None = None) -> NodeRuntimes | None:
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
        return NodeRuntimes(path, (path,), (), None, _error(exc))
    for name, doc in docs:
        files.append(name)
        for plugin in _CRI_PLUGINS:
            section: Any = ((doc.get("plugins") or {}).get(plugin) or {}).get("containerd") or {}
            runtimes.update(dict.fromkeys(section.get("runtimes") or {}))
            default = section.get("default_runtime_name") or default
    return NodeRuntimes(path, tuple(files), tuple(runtimes), default)


def _walk_lexical(top: str) -> list[str]:
    """Every file under `top` in the order Go's filepath.Walk visits them (lexical, depth first)."""
    out = []
    for name in sorted(os.listdir(top)):
        full = os.path.join(top, name)
        if os.path.isdir(full):
            out += _walk_lexical(full)
        else:
            out.append(full)
    return out


def read_crio_runtimes(path: str | None = None, drop_in_dir: str | None = None) -> NodeRuntimes | None:
    """CRI-O's runtimes from crio.conf and its drop-in directory (default: crio.conf.d next to it). None when
    neither exists (not a CRI-O node, or not visible here); a file that cannot be read or parsed is an error
    (CRI-O itself refuses to start on one)."""
    import tomllib

    path = path or crio_config_path()
    drop_in_dir = drop_in_dir or os.path.join(os.path.dirname(path), CRIO_DROP_IN_DIR)
    has_main, has_dir = os.path.exists(path), os.path.isdir(drop_in_dir)
    if not has_main and not has_dir:
        return None
    files: list[str] = []
    runtimes: dict[str, None] = {}
    default, hooks_dirs = None, None
    try:
        names = ([path] if has_main else []) + (_walk_lexical(drop_in_dir) if has_dir else [])
    except OSError as exc:
        return NodeRuntimes(path, (drop_in_dir,), (), None, f"{drop_in_dir}: {_error(exc)}", engine=CRIO)
    current = path
    try:
        for current in names:
            with open(current, "rb") as f:
                doc = tomllib.load(f)
            files.append(current)
            section: Any = (doc.get("crio") or {}).get("runtime") or {}
            runtimes.update(dict.fromkeys(section.get("runtimes") or {}))
            default = section.get("default_runtime") or default
            if section.get("hooks_dir") is not None:
                value = section["hooks_dir"]
                hooks_dirs = (value,) if isinstance(value, str) else tuple(value or ())
    except (OSError, ValueError) as exc:
        return NodeRuntimes(path, (*files, current), (), None, f"{current}: {_error(exc)}", engine=CRIO)
    hooks_dirs = CRIO_DEFAULT_HOOKS_DIRS if hooks_dirs is None else hooks_dirs
    hooks = []
    for d in hooks_dirs:
        for hook in sorted(glob.glob(os.path.join(d, "*.json"))):
            try:
                with open(hook, encoding="utf-8", errors="replace") as f:
                    text = f.read(1 << 16)
            except OSError:
                continue
            if any(marker in text for marker in NVIDIA_HOOK_MARKERS):
                hooks.append(hook)
    return NodeRuntimes(path, tuple(files), tuple(runtimes), default, engine=CRIO, nvidia_hooks=tuple(hooks),
                        hooks_dirs=tuple(hooks_dirs))
