"""Lay out mltop and the Python packages `mltop serve` needs in one folder, for the agent image's Dockerfile.

    python3 scripts/vendor_agent.py build/agent-vendor
    docker build --build-arg BASE_IMAGE=python:3.11-slim -t mltop-agent .

No network and no pip in the image: the packages are copied, file by file (their RECORD), from the Python that
runs this script, so the base image must carry the same Python minor version (compiled extensions such as
psutil's are built for it). Textual is left out: the agent never draws.
"""

from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path

# rich: the CLI's text escaping; PyYAML and bcrypt: --web-config; grpcio and protobuf: the CRI client (pods)
ROOTS = ("docker", "nvidia-ml-py", "psutil", "prometheus-client", "rich", "PyYAML", "bcrypt", "grpcio", "protobuf")
REPO = Path(__file__).resolve().parent.parent
MLTOP_PACKAGES = {"probes": "mltop/probes", "diagnostics": "mltop/diagnostics", "tui": "mltop/tui"}


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    from packaging.requirements import Requirement

    names = []
    for text in dist.requires or ():
        req = Requirement(text)
        # Optional extras (docker[ssh]'s paramiko, ...) and other platforms' packages (pywin32) stay out.
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        names.append(req.name)
    return names


def closure(roots=ROOTS) -> list[metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        dist = metadata.distribution(name)
        seen[key] = dist
        todo += _requirement_names(dist)
    return list(seen.values())


def vendor(out: Path) -> list[str]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    copied = []
    for dist in closure():
        base = Path(dist.locate_file(""))
        for file in dist.files or ():
            parts = Path(file).parts
            if not parts or parts[0] == ".." or "__pycache__" in parts or str(file).endswith(".pyc"):
                continue  # console scripts outside site-packages, bytecode
            src = base / file
            if src.is_file():
                dest = out / file
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
        copied.append(f"{dist.metadata['Name']}=={dist.version}")
    for folder, target in MLTOP_PACKAGES.items():
        shutil.copytree(REPO / folder, out / target,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.tcss", "screenshots"))
    return copied


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: vendor_agent.py OUT_DIR")
    packages = vendor(Path(sys.argv[1]))
    print(f"vendored mltop and {len(packages)} packages for Python {sys.version_info.major}.{sys.version_info.minor}: "
          + ", ".join(sorted(packages)))
