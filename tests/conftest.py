"""Shared fixtures: a real Docker engine with offline-built images, containers that clean up after
themselves, and (from fixtures_nvml) the simulated libnvidia-ml.so.1.

Engine tests skip with a reason when no engine answers, unless MLTOP_REQUIRE_DOCKER=1 (set by .ci/run),
in which case they fail.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from fixtures_nvml import *  # noqa: E402,F401,F403  (fake NVML fixtures)
from fixtures_torch import cpu_torch, cuda13_torch_container  # noqa: E402,F401  (PyTorch in containers)
from cri_harness import cri_node, cri_pods  # noqa: E402,F401  (a private containerd with CRI, and pods)
# the cgroup v2 guest and its one driver run, for every test module of the tier (registered once here: a module
# importing them would hold its own session instance, and boot the guest again)
from vm.fixtures import cgroup_v2_guest, v2_run  # noqa: E402,F401
from images import BUSYBOX_IMAGE, PYTHON_IMAGE, ImageBuildError, ensure_images  # noqa: E402

TEST_LABEL = "mltop-test"
SESSION_LABEL = "mltop-test-session"  # the pid of the pytest process that made the container
REQUIRE_DOCKER = os.environ.get("MLTOP_REQUIRE_DOCKER") == "1"

# Property tests (Hypothesis): no per-example deadline (a loaded 2-core CI machine is no measure of speed: the
# budget tests bound time on their own), and under CI the same examples every run, so a red CI names a defect
# in the code, never an unlucky draw; a developer's runs keep exploring.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("mltop", deadline=None)
_hypothesis_settings.register_profile("mltop-ci", deadline=None, derandomize=True, database=None)
_hypothesis_settings.load_profile("mltop-ci" if os.environ.get("CI") else "mltop")


def _no_engine(reason: str):
    if REQUIRE_DOCKER:
        pytest.fail(f"MLTOP_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(f"no Docker engine: {reason} (set MLTOP_REQUIRE_DOCKER=1 to make this a failure)")


@pytest.fixture(scope="session")
def docker_client():
    """A docker SDK client for a reachable engine, or skip/fail with the reason."""
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # engine down, socket missing, permission denied
        _no_engine(f"{type(exc).__name__}: {exc}")
    # Leftovers of an interrupted earlier run: containers whose test session (a pid) is gone. Containers of
    # another pytest session running at the same time are left alone. The low-level list: the SDK's
    # containers.list() inspects each one and fails when another session removes one in between.
    for c in client.api.containers(all=True, filters={"label": TEST_LABEL}):
        owner = (c.get("Labels") or {}).get(SESSION_LABEL, "")
        if not (owner.isdigit() and os.path.exists(f"/proc/{owner}")):
            try:
                client.api.remove_container(c["Id"], force=True)
            except docker.errors.NotFound:
                pass  # another test session cleaned it up at the same moment
    yield client
    mine = {"label": f"{SESSION_LABEL}={os.getpid()}"}
    for c in client.containers.list(all=True, filters=mine, ignore_removed=True):
        try:
            c.remove(force=True)
        except Exception:
            pass
    client.close()


@pytest.fixture(scope="session")
def test_images(docker_client):
    """Build the offline test images once (reused when present)."""
    try:
        ensure_images()
    except ImageBuildError as err:
        _no_engine(f"test images could not be built: {err}")
    return {"busybox": BUSYBOX_IMAGE, "python": PYTHON_IMAGE}


class ContainerFactory:
    """Starts labelled test containers and removes them when the test ends."""

    def __init__(self, client, images):
        self.client = client
        self.images = images
        self.created = []

    def run(self, command, image="busybox", name=None, wait_running=True, **kwargs):
        labels = dict(kwargs.pop("labels", {}) or {})
        labels[TEST_LABEL] = "1"
        labels[SESSION_LABEL] = str(os.getpid())
        name = name or f"mltop-test-{uuid.uuid4().hex[:8]}"
        container = self.client.containers.run(
            self.images.get(image, image), command, name=name, detach=True, labels=labels, **kwargs
        )
        self.created.append(container)
        if wait_running:
            wait_for(lambda: _reload(container).status == "running", what=f"{name} running")
        return container

    def create(self, command, image="busybox", name=None, **kwargs):
        labels = dict(kwargs.pop("labels", {}) or {})
        labels[TEST_LABEL] = "1"
        labels[SESSION_LABEL] = str(os.getpid())
        name = name or f"mltop-test-{uuid.uuid4().hex[:8]}"
        container = self.client.containers.create(
            self.images.get(image, image), command, name=name, labels=labels, **kwargs
        )
        self.created.append(container)
        return container

    def cleanup(self):
        for c in self.created:
            try:
                c.remove(force=True)
            except Exception:
                pass


def _reload(container):
    container.reload()
    return container


def wait_for(predicate, timeout=20.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def containers(docker_client, test_images):
    factory = ContainerFactory(docker_client, test_images)
    yield factory
    factory.cleanup()


@pytest.fixture
def sampler():
    """A Sampler on the real engine with NVML off (tests that need GPUs use the fake NVML fixtures)."""
    from mltop.probes.sampler import ProbeOptions, Sampler

    s = Sampler(ProbeOptions(nvml=False))
    yield s
    s.close()


async def until(pilot, predicate, timeout: float = 15.0, what: str = "condition"):
    """Let a Textual app run until `predicate()` holds (sampling happens in its thread worker meanwhile)."""
    loop_time = 0.0
    while loop_time < timeout:
        try:
            if predicate():
                return
        except Exception:
            pass
        await pilot.pause(0.05)
        loop_time += 0.05
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def fake_nvidia_smi(containers, script: str, **kwargs):
    """A container whose nvidia-smi is a shell script (no GPU here): the exec path is the real one."""
    install = f"printf '%s\\n' '#!/bin/sh' {shlex.quote(script)} > /bin/nvidia-smi && chmod +x /bin/nvidia-smi"
    c = containers.run(["sh", "-c", f"{install} && touch /tmp/ready && exec sleep 600"], **kwargs)
    wait_for(lambda: c.exec_run(["test", "-e", "/tmp/ready"]).exit_code == 0, what="fake nvidia-smi")
    return c


def pytest_terminal_summary(terminalreporter):
    """Which host each test ran on, for the tests that say (the cgroup v2 tier records `host`)."""
    by_host: dict[str, list[str]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            host = dict(getattr(report, "user_properties", ())).get("host")
            if host and getattr(report, "when", "") == "call":
                outcome = "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome
                by_host.setdefault(host, []).append(f"{report.nodeid.split('::')[-1]} {outcome}")
    for host, tests in by_host.items():
        terminalreporter.write_sep("-", f"ran on {host}")
        for line in tests:
            terminalreporter.write_line(f"  {line}")
