"""NVIDIA Fabric Manager on this host: whether its daemon runs (a process named nv-fabricmanager), the systemd
unit's state where systemctl exists, and its version (which must equal the driver's).

HGX boards joined by NVSwitch need it: until it has registered the GPUs with the switches, CUDA fails with error
802 (system not yet initialized). Every location is a parameter, so tests point it at their own process table,
PATH and commands.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

PROCESS_NAME = "nv-fabricmanager"
UNIT = "nvidia-fabricmanager"
COMM_MAX = 15  # the kernel keeps 15 characters of a process name: nv-fabricmanager reads "nv-fabricmanage"
_VERSION = re.compile(r"(\d+\.\d+(?:\.\d+)?)")
COMMAND_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class FabricManagerFacts:
    pids: tuple[int, ...]  # running nv-fabricmanager processes
    unit_state: str | None  # systemd ActiveState ("active", "failed", "inactive", ...); None: no systemctl/unit
    unit_file_state: str | None  # "enabled" | "disabled" | ...; None likewise
    version: str | None  # e.g. "550.54.15"; None: not found
    version_source: str | None  # the command or file it came from
    binary: str | None  # the nv-fabricmanager found (the running process's, else on PATH)

    @property
    def running(self) -> bool:
        return bool(self.pids)


def read_fabric_manager(proc_root: str = "/proc", path: str | None = None) -> FabricManagerFacts:
    """Fabric Manager's facts: processes from `proc_root`, systemctl and nv-fabricmanager / dpkg-query / rpm found
    on `path` (None: $PATH)."""
    pids, exe = _processes(proc_root)
    systemctl = shutil.which("systemctl", path=path)
    unit_state = unit_file_state = None
    if systemctl:
        out = _run([systemctl, "show", UNIT, "--property=LoadState,ActiveState,UnitFileState"])
        props = dict(line.partition("=")[::2] for line in (out or "").splitlines() if "=" in line)
        if props.get("LoadState") not in (None, "", "not-found"):
            unit_state = props.get("ActiveState") or None
            unit_file_state = props.get("UnitFileState") or None
    # The running process's binary, unless it is an interpreter running a script of that name; else PATH's.
    if exe is None or not os.path.basename(exe).startswith(PROCESS_NAME):
        exe = None
    binary = exe or shutil.which(PROCESS_NAME, path=path)
    version, source = _version(binary, path)
    return FabricManagerFacts(tuple(pids), unit_state, unit_file_state, version, source, binary)


def _processes(proc_root: str) -> tuple[list[int], str | None]:
    pids, exe = [], None
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return [], None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, entry, "comm"), "rb") as f:
                comm = f.read(64).strip().decode(errors="replace")
        except OSError:
            continue
        if comm != PROCESS_NAME[:COMM_MAX]:
            continue
        pids.append(int(entry))
        if exe is None:
            try:
                exe = os.readlink(os.path.join(proc_root, entry, "exe"))
            except OSError:
                pass
    return sorted(pids), exe


def _version(binary: str | None, path: str | None) -> tuple[str | None, str | None]:
    """From `nv-fabricmanager --version` ("Fabric Manager version is : 550.54.15"), else the package manager."""
    if binary and os.path.basename(binary).startswith(PROCESS_NAME) and os.access(binary, os.X_OK):
        out = _run([binary, "--version"])
        m = _VERSION.search(out or "")
        if m:
            return m.group(1), f"{binary} --version"
    dpkg = shutil.which("dpkg-query", path=path)
    if dpkg:
        out = _run([dpkg, "-W", "-f", "${Package} ${Version} ${db:Status-Status}\\n", "nvidia-fabricmanager*"])
        for line in (out or "").splitlines():
            name, _, rest = line.partition(" ")
            version, _, status = rest.partition(" ")
            m = _VERSION.search(version)
            if m and status.strip() == "installed":
                return m.group(1), f"dpkg-query -W {name}"
    rpm = shutil.which("rpm", path=path)
    if rpm:
        out = _run([rpm, "-q", "--qf", "%{VERSION}\\n", "nvidia-fabric-manager"])
        m = _VERSION.search(out or "")
        if m and "not installed" not in (out or ""):
            return m.group(1), "rpm -q nvidia-fabric-manager"
    return None, None


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout or "") + (done.stderr or "")
