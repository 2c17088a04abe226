"""Pytest fixtures that put the simulated libnvidia-ml.so.1 under the real pynvml bindings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

from fakenvml import SCENARIO_ENV, FakeNvmlBuildError, FakeScenario, build_fake_nvml, write_scenario

__all__ = ["fake_nvml_lib", "fake_nvml_old_lib", "nvml_scenario"]


def _build(tmp_path_factory: pytest.TempPathFactory, name: str, old_driver: bool) -> Path:
    try:
        return build_fake_nvml(tmp_path_factory.mktemp(name), old_driver=old_driver)
    except FakeNvmlBuildError as err:
        # A fresh machine without gcc still runs the rest of the suite; CI (which provisions gcc) fails.
        if os.environ.get("MLTOP_REQUIRE_DOCKER") == "1":
            pytest.fail(str(err), pytrace=False)
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def fake_nvml_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated current driver's libnvidia-ml.so.1."""
    return _build(tmp_path_factory, "fakenvml", old_driver=False)


@pytest.fixture(scope="session")
def fake_nvml_old_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An older driver's library: no _v3 process calls, no ClocksEventReasons, no process utilisation."""
    return _build(tmp_path_factory, "fakenvml-old", old_driver=True)


@pytest.fixture
def nvml_scenario(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., str]:
    """Write a scenario and point the fake library at it; returns the library path to hand the probe.

    Call it again in the same test to change the scenario: the library re-reads it at the next init.
        lib = nvml_scenario(FakeScenario(gpus=[FakeGpu()]))          # or nvml_scenario(gpus=[...])
        lib = nvml_scenario(init_error=18, old_driver=True)
    """
    path = tmp_path / "nvml-scenario.txt"
    monkeypatch.setenv(SCENARIO_ENV, str(path))

    def use(scenario: FakeScenario | None = None, *, old_driver: bool = False, **fields) -> str:
        write_scenario(path, scenario, **fields)
        lib = request.getfixturevalue("fake_nvml_old_lib" if old_driver else "fake_nvml_lib")
        return str(lib)

    return use
