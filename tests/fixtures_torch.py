"""PyTorch in test containers: the real CPU build (cached outside the repository) and a stand-in CUDA 13.0
build that finds no GPU. Fixtures for conftest.py, shared by the action, doctor and dashboard tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REQUIRE_DOCKER = os.environ.get("MLTOP_REQUIRE_DOCKER") == "1"

TORCH_VERSION = "2.13.0"
TORCH_DIR = Path(os.environ.get("MLTOP_TEST_TORCH_DIR", "/var/cache/mltop-test/torch"))
TORCH_IN_CONTAINER = "/opt/mltop-torch"
LIBSTDCXX_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
                        "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6")


def _libstdcxx() -> str | None:
    for path in LIBSTDCXX_CANDIDATES:
        if os.path.exists(path):
            return os.path.realpath(path)
    return None


@pytest.fixture(scope="session")
def cpu_torch() -> Path:
    """The CPU build of PyTorch, installed once into a cache outside the repository.

    Provisioning command (what this fixture runs when the cache is empty):
        python3 -m pip install --target /var/cache/mltop-test/torch torch==2.13.0
    """
    marker = TORCH_DIR / "torch" / "version.py"
    if marker.exists() and f"__version__ = '{TORCH_VERSION}" in marker.read_text():
        return TORCH_DIR
    staging = Path(f"{TORCH_DIR}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(staging),
               f"torch=={TORCH_VERSION}"]
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        done = None
        reason = str(exc)
    if done is None or done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        reason = reason if done is None else done.stderr.strip()[-600:]
        message = f"could not install the CPU build of torch ({' '.join(command)}): {reason}"
        if REQUIRE_DOCKER:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        staging.rename(TORCH_DIR)
    except OSError:  # another session finished first
        shutil.rmtree(staging, ignore_errors=True)
    return TORCH_DIR


def torch_container(containers, cpu_torch, **kwargs):
    """A python container with the CPU build of PyTorch on its PYTHONPATH (mounted read-only)."""
    volumes = {str(cpu_torch): {"bind": TORCH_IN_CONTAINER, "mode": "ro"}}
    lib = _libstdcxx()
    if lib:  # the test image is a minimal Debian without libstdc++, which the torch wheel links against
        volumes[lib] = {"bind": "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "mode": "ro"}
    return containers.run(["sleep", "600"], image="python", volumes=volumes,
                          environment={"PYTHONPATH": TORCH_IN_CONTAINER}, **kwargs)


# A stand-in for a CUDA 13.0 wheel of PyTorch in a container given no GPU: exactly what device_check.py's
# check_torch touches, and the warning real PyTorch gives when it finds no driver.
FAKE_TORCH = {
    "torch/version.py": '__version__ = "2.9.0"\ncuda = "13.0"\nhip = None\n',
    "torch/__init__.py": '''"""Not PyTorch: a CUDA 13.0 build's answers, without a GPU."""
import warnings
from types import SimpleNamespace

from . import version

__version__ = version.__version__


def _is_available():
    warnings.warn("CUDA initialization: Found no NVIDIA driver on your system. Please check that you have an "
                  "NVIDIA GPU and installed a driver from http://www.nvidia.com/Download/index.aspx")
    return False


cuda = SimpleNamespace(is_available=_is_available, device_count=lambda: 0)
backends = SimpleNamespace(cudnn=SimpleNamespace(version=lambda: 91002))


class _Tensor(object):
    def __init__(self, values, device):
        self.values, self.device = list(values), device

    def __mul__(self, k):
        return _Tensor([v * k for v in self.values], self.device)

    def sum(self):
        return _Tensor([sum(self.values)], self.device)

    def item(self):
        return self.values[0]


def ones(n, device="cpu"):
    return _Tensor([1.0] * n, device)
''',
}
FAKE_TORCH_IN_CONTAINER = "/opt/mltop-fake-torch"


@pytest.fixture
def cuda13_torch_container(containers, tmp_path):
    """A python container whose PyTorch (on PYTHONPATH, mounted read-only) says: built with CUDA 13.0, no GPU."""
    root = tmp_path / "fake-torch"
    for rel, text in FAKE_TORCH.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return containers.run(["sleep", "300"], image="python",
                          volumes={str(root): {"bind": FAKE_TORCH_IN_CONTAINER, "mode": "ro"}},
                          environment={"PYTHONPATH": FAKE_TORCH_IN_CONTAINER})
