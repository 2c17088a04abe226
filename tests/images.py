"""Build the test images offline (no registry is reachable): `python tests/images.py` builds what is missing.

- mltop-test/busybox:1   a busybox-static root filesystem (needs Debian's busybox-static)
- mltop-test/python:1    a Debian bookworm root filesystem with python3 (needs mmdebstrap and a Debian mirror)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

BUSYBOX_IMAGE = "mltop-test/busybox:1"
PYTHON_IMAGE = "mltop-test/python:1"
DEBIAN_MIRROR = os.environ.get("MLTOP_DEBIAN_MIRROR", "http://deb.debian.org/debian")


class ImageBuildError(Exception):
    pass


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def _import(tar_path: str, name: str) -> None:
    cmd = ["docker", "import", "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
           "--change", 'CMD ["sh"]', tar_path, name]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageBuildError(f"docker import {name} failed: {result.stderr.strip()}")


def _find_static_busybox() -> str:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate):
            kind = subprocess.run(["file", "-L", candidate], capture_output=True, text=True).stdout
            if "statically linked" in kind or "static-pie" in kind or not shutil.which("file"):
                return candidate
    raise ImageBuildError("no static busybox found: apt-get install busybox-static")


def build_busybox() -> None:
    busybox = _find_static_busybox()
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc", "data"):
            os.makedirs(os.path.join(root, d))
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        shutil.copy2(busybox, os.path.join(root, "bin", "busybox"))
        for applet in applets:
            if applet != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", applet))
        with open(os.path.join(root, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        tar_path = os.path.join(tmp, "rootfs.tar")
        with tarfile.open(tar_path, "w") as tar:
            tar.add(root, arcname=".")
        _import(tar_path, BUSYBOX_IMAGE)


def build_python() -> None:
    if not shutil.which("mmdebstrap"):
        raise ImageBuildError("mmdebstrap is missing: apt-get install mmdebstrap")
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = os.path.join(tmp, "rootfs.tar")
        cmd = ["mmdebstrap", "--variant=essential", "--include=python3,procps", "--quiet",
               "bookworm", tar_path, DEBIAN_MIRROR]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise ImageBuildError(f"mmdebstrap failed: {result.stderr.strip()[-800:]}")
        _import(tar_path, PYTHON_IMAGE)


BUILDERS = {BUSYBOX_IMAGE: build_busybox, PYTHON_IMAGE: build_python}


def ensure_images(names=tuple(BUILDERS)) -> None:
    for name in names:
        if not image_exists(name):
            print(f"building {name} ...", file=sys.stderr, flush=True)
            BUILDERS[name]()


if __name__ == "__main__":
    try:
        ensure_images()
    except ImageBuildError as err:
        sys.exit(f"images: {err}")
    print("test images ready: " + ", ".join(BUILDERS))
