"""The cgroup v2 locator on hand-made trees (runs on any host; the v2 tier runs it for real in the guest)."""

from __future__ import annotations

import pytest

from mltop.probes import cgroups
from mltop.probes.cgroups import CgroupLocator

CID = "ab" * 32


@pytest.fixture
def v2_root(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    scope = tmp_path / "system.slice" / f"docker-{CID}.scope"
    scope.mkdir(parents=True)
    return tmp_path, scope


def _locate(monkeypatch, root, proc_cgroup: str) -> CgroupLocator:
    real = cgroups._read
    monkeypatch.setattr(cgroups, "_read", lambda path, *a: proc_cgroup if path == "/proc/4242/cgroup"
                        else real(path, *a))
    return CgroupLocator(root=str(root))


def test_host_view_joins_the_path_to_the_root(monkeypatch, v2_root):
    root, scope = v2_root
    locator = _locate(monkeypatch, root, f"0::/system.slice/docker-{CID}.scope\n")
    assert locator.version == 2
    assert locator.paths_for_pid(4242) == {"unified": str(scope)}


@pytest.mark.parametrize("seen", [f"0::/../docker-{CID}.scope\n", "0::/\n"],
                         ids=["another-container-from-a-namespace", "own-namespace-root"])
def test_a_cgroup_namespace_path_is_found_by_id(monkeypatch, v2_root, seen):
    """In a cgroup namespace of its own (the agent container on v2) a PID's path is relative to that
    namespace: it is not joined to the root (that named a directory that does not exist, or the host's root
    cgroup); the container is found by its id in the host's tree instead."""
    root, scope = v2_root
    locator = _locate(monkeypatch, root, seen)
    assert locator.paths_for_pid(4242) == {}
    assert locator.paths_for_id(CID) == {"unified": str(scope)}
