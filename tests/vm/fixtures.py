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
    snapshot, doctor, serve metrics and recording)."""
    from fakenvml import SOURCE, build_fake_nvml

    share = cgroup_v2_guest.share
    shutil.copy(HERE / "v2_driver.py", share / "v2_driver.py")
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
