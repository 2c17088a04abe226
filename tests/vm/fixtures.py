"""Pytest fixtures for the cgroup v2 tier: the guest (tests/vm/guest.py) and one run of the in-guest driver."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from vm.guest import Guest, VmError, build

__all__ = ["cgroup_v2_guest", "v2_run"]

REQUIRE = os.environ.get("MLTOP_REQUIRE_DOCKER") == "1"  # CI: a guest that cannot start fails the tier
HERE = Path(__file__).resolve().parent


def _unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"MLTOP_REQUIRE_DOCKER=1 but the cgroup v2 guest is unavailable: {reason}", pytrace=False)
    pytest.skip(f"cgroup v2 guest unavailable: {reason}")


@pytest.fixture(scope="session")
def cgroup_v2_guest():
    """A Debian 12 VM with the unified hierarchy, systemd and Docker's systemd driver, mltop pip-installed in
    it from this checkout's wheel. Restored from the saved Docker-ready state (built and saved once)."""
    for tool in ("qemu-system-x86_64", "qemu-img", "zstd", "mmdebstrap", "ssh"):
        if not shutil.which(tool):
            _unavailable(f"{tool} is not installed (apt-get install qemu-system-x86 qemu-utils zstd mmdebstrap)")
    try:
        build()
        guest = Guest.start()
    except (VmError, OSError) as err:
        _unavailable(str(err))
    try:
        guest.install_mltop()
        yield guest
    finally:
        guest.stop()


@pytest.fixture(scope="session")
def v2_run(cgroup_v2_guest, tmp_path_factory):
    """One run of tests/vm/v2_driver.py in the guest: its JSON (workloads, direct cgroup reads, and mltop's
    snapshot, doctor, serve metrics and recording; the Kubernetes pods' under "pods")."""
    import subprocess

    from cri_harness import PAUSE_IMAGE, build_pause_image
    from fakenvml import SOURCE, build_fake_nvml

    share = cgroup_v2_guest.share
    for name in ("v2_driver.py", "v2_pods.py"):
        shutil.copy(HERE / name, share / name)
    # the pods' CriNode (the host suite's, without its fixtures) and its images: the guest's engine has no
    # pause image, so the host's test images travel as one `docker save` archive
    shutil.copy(HERE.parent / "cri_harness.py", share / "cri_harness.py")
    build_pause_image("mltop-test/busybox:1")
    subprocess.run(["docker", "save", "-o", str(share / "cri-images.tar"), "mltop-test/busybox:1", PAUSE_IMAGE],
                   check=True, capture_output=True)
    (share / "fakenvml").mkdir(exist_ok=True)
    shutil.copy(SOURCE.with_name("__init__.py"), share / "fakenvml" / "__init__.py")
    lib = build_fake_nvml(share)  # glibc matches: the host's build loads in the guest
    result = cgroup_v2_guest.run(f"/opt/mltop/bin/python /mnt/mltop/v2_driver.py /mnt/mltop/{lib.name}",
                                 timeout=900)
    assert result.returncode == 0, f"the driver failed in the guest ({result.returncode}):\n{result.stderr[-4000:]}"
    kept = tmp_path_factory.mktemp("cgroup-v2") / "driver.json"  # to read after a failure
    kept.write_text(result.stdout)
    data = json.loads(result.stdout)
    data["kept_at"] = str(kept)
    data["guest_boot_s"] = cgroup_v2_guest.boot_seconds
    return data
