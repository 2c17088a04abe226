"""Rates are measured against the moment each counter was read (issue 18, point 4), on the real engine.

A container capped at half a CPU and always busy must read its share in `mltop snapshot --json`, in the
dashboard and in `mltop serve`, when whatever comes before the counters in a sweep takes a different time in
each sweep: a slow nvmlInit (only the first sweep initialises NVML) or an engine that answers slowly (the first
sweep lists and inspects, the next ones do less). Before, rates divided by the sweep-to-sweep interval and read
28 % for this container with an 0.8 s nvmlInit.

The figure mltop shows is compared with the container's own cgroup CPU counter, read here by the test over the
whole run: a quota-capped busy loop given the CPU before anything else runs at a steady rate, so both must agree
and be near the quota.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import types

import pytest

from conftest import until
from cpu_placement import steady_cpu
from engine_proxy import EngineSocketProxy
from fakenvml import FakeGpu, FakeScenario
from serve_helpers import ServeProcess, wait_until

QUOTA_PERCENT = 50.0  # half a CPU
TOLERANCE = 3.0  # points
SLOW_S = 0.8  # how long the slow part takes: nvmlInit, or each answer of the engine
INTERVAL = "2"  # seconds between sweeps


# --------------------------------------------------------------------------- the kernel's own figure


def _cpu_usage_file(pid: int) -> tuple[str, float]:
    """(the container's cgroup CPU counter file, its unit in seconds), found from /proc/<pid>/cgroup."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    unified = [p for _, controllers, p in lines if controllers == ""]
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers") and unified:
        return f"/sys/fs/cgroup{unified[0]}/cpu.stat", 1e-6
    (path,) = [p for _, controllers, p in lines if "cpuacct" in controllers.split(",")]
    for mount in ("/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct"):
        if os.path.exists(f"{mount}{path}/cpuacct.usage"):
            return f"{mount}{path}/cpuacct.usage", 1e-9
    raise AssertionError(f"no cpuacct.usage for cgroup {path}")


class KernelCpu:
    """The container's CPU % between two readings of its cgroup counter, as the kernel counts it."""

    def __init__(self, container):
        container.reload()
        self.path, self.unit = _cpu_usage_file(container.attrs["State"]["Pid"])
        self.start = self._read()

    def _read(self) -> tuple[float, float]:
        with open(self.path) as f:
            text = f.read()
        value = int(text.split("usage_usec ", 1)[1].split()[0]) if self.path.endswith("cpu.stat") else int(text)
        return time.monotonic(), value * self.unit

    def percent_since_start(self) -> float:
        (t0, c0), (t1, c1) = self.start, self._read()
        return (c1 - c0) / (t1 - t0) * 100.0


def _check(shown: float, kernel: float, where: str, interval_s: float | None) -> None:
    where = f"{where}, over {interval_s} s between its readings"
    assert kernel > QUOTA_PERCENT - 10, f"the capped loop got {kernel:.1f} % of a CPU: the machine is too busy to tell"
    assert abs(shown - kernel) <= TOLERANCE, f"{where} shows {shown:.1f} %, the kernel's counter {kernel:.1f} %"
    assert abs(shown - QUOTA_PERCENT) <= TOLERANCE, f"{where} shows {shown:.1f} % of a CPU for a 0.5 CPU quota"


# --------------------------------------------------------------------------- the slow parts


@pytest.fixture(params=["slow nvmlInit", "slow engine"])
def slow(request, nvml_scenario):
    """How mltop is pointed at the slow part: `args` for the command line, `docker_host` and `nvml_lib`."""
    directory = tempfile.mkdtemp(prefix="mltop-rates-", dir="/tmp")  # a short path: unix sockets take ~100 bytes
    proxy = None
    try:
        if request.param == "slow nvmlInit":
            lib = nvml_scenario(FakeScenario(gpus=[FakeGpu()], init_delay_s=SLOW_S))
            docker_host = None
        else:
            lib = nvml_scenario(FakeScenario(gpus=[FakeGpu()]))
            proxy = EngineSocketProxy(os.path.join(directory, "docker.sock"), delay_s=SLOW_S).start()
            docker_host = proxy.docker_host
        args = ["--nvml-lib", lib] + (["--docker-host", docker_host] if docker_host else [])
        yield types.SimpleNamespace(kind=request.param, args=args, docker_host=docker_host, nvml_lib=lib,
                                    proxy=proxy)
    finally:
        if proxy is not None:
            proxy.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _was_slow(slow, nvml_status: str) -> None:
    """The slow part really was in the way (so the test would catch a rate divided by the sweep interval)."""
    assert nvml_status == "ok", "mltop used the simulated NVML (its init_delay is tested in test_nvml)"
    if slow.proxy is not None:
        assert slow.proxy.answers_delayed >= 2, "the engine's answers went through the slow proxy"


@pytest.fixture
def capped(containers, docker_client):
    """A busy loop capped at half a CPU that gets its half whatever else the shared machine runs (steady_cpu),
    so its rate is steady and the test measures mltop, not the machine's load.

    The quota is 5 ms in every 10 ms (what --cpus=0.5 sets as 50 ms in every 100 ms): CFS hands the CPU out a
    period at a time, so over a window the counter moves by up to one period's quota more or less than half the
    window, which at the default period is 2.5 points over 2 s and 10 over the 0.5 s a slow first sweep can
    leave before the next; at 10 ms it is a tenth of that."""
    return containers.run(["sh", "-c", "while :; do :; done"], cpu_period=10_000, cpu_quota=5_000,
                          **steady_cpu(docker_client))


# --------------------------------------------------------------------------- the three places


def test_snapshot_json_shows_the_quota_of_a_capped_busy_container(capped, slow):
    kernel = KernelCpu(capped)
    result = subprocess.run(
        [sys.executable, "-m", "mltop.tui.cli", "snapshot", "--json", "--interval", INTERVAL, *slow.args],
        capture_output=True, text=True, timeout=120)
    kernel_percent = kernel.percent_since_start()
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    (ours,) = [c for c in doc["containers"] if c["id"] == capped.id]
    _was_slow(slow, doc["host"]["nvml"]["status"])
    assert ours["interval_s"] >= float(INTERVAL) - 0.1  # between its two readings: the sleep and then some
    _check(ours["cpu_percent"], kernel_percent, f"snapshot --json ({slow.kind})", ours["interval_s"])


async def test_the_dashboard_shows_the_quota_of_a_capped_busy_container(capped, slow):
    from mltop.tui.app import MltopApp
    from mltop.tui.screens.dashboard import DashboardScreen

    kernel = KernelCpu(capped)
    app = MltopApp(docker_host=slow.docker_host, nvml_lib=slow.nvml_lib, nvml=True, interval=float(INTERVAL))
    async with app.run_test(size=(140, 40)) as pilot:
        first = {}

        def rated() -> bool:
            # The first rate the dashboard shows for it: the one the slow first sweep skewed.
            c = app.snapshot.container(capped.id) if app.snapshot else None
            if c is not None and c.cpu_percent is not None and not first:
                first["sample"], first["nvml"] = c, app.snapshot.host.nvml.status
            return bool(first)

        await until(pilot, rated, timeout=30, what="a CPU % for the capped container")
        await pilot.pause(0.1)
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        cell = screen.table.cell_text(capped.id, "cpu")
        kernel_percent = kernel.percent_since_start()
    shown = float(re.match(r"\s*([\d.]+)", cell).group(1))
    _was_slow(slow, first["nvml"])
    interval_s = first["sample"].interval_s
    _check(first["sample"].cpu_percent, kernel_percent, f"the dashboard's first rate ({slow.kind})", interval_s)
    _check(shown, kernel_percent, f"the dashboard's CPU% cell {cell!r} ({slow.kind})", None)


def test_serve_shows_the_quota_of_a_capped_busy_container(capped, slow):
    """serve's CPU figure is a counter (container_cpu_usage_seconds_total, Prometheus takes its rate); the CPU %
    mltop itself computes is in /snapshot.json: its first one is the one a slow first sweep skewed."""
    kernel = KernelCpu(capped)
    serve = ServeProcess("--interval", INTERVAL, "--doctor-interval", "0", *slow.args)
    try:
        serve.wait_healthy(timeout=60)

        def rated():
            code, body = serve.get("/snapshot.json")
            if code != 200:
                return None
            doc = json.loads(body)
            ours = [c for c in doc["containers"] if c["id"] == capped.id]
            return (ours[0], doc["host"]["nvml"]["status"]) if ours and ours[0]["cpu_percent"] is not None else None

        ours, nvml_status = wait_until(rated, 30, "a CPU % for the capped container", interval=0.1)
        kernel_percent = kernel.percent_since_start()
    finally:
        serve.stop()
    _was_slow(slow, nvml_status)
    _check(ours["cpu_percent"], kernel_percent, f"serve's /snapshot.json ({slow.kind})", ours["interval_s"])


# --------------------------------------------------------------------------- counter differences in the doctor


def test_throttled_periods_count_over_the_interval_between_the_containers_own_readings():
    """The throttling share divides by the periods between the two readings of the container's counters, not
    between two sweeps (here the sweep came 4 s after the last, its counters 1 s after their last reading)."""
    from builders import container, replace, snapshot
    from test_checks import codes, find, run

    from mltop.diagnostics.workload import _throttled_share

    before = container("busy", cpu_throttled_periods=100, config_overrides=dict(cpu_period=100_000))
    after = replace(before, cpu_throttled_periods=108, interval_s=1.0)  # 8 of ~10 periods
    now, previous = snapshot([after], interval_s=4.0), snapshot([before])
    f = find(run(now, previous=previous), "cpu.throttled", "busy")
    assert any("8 of ~10 periods in the last 1.0 s = 80%" in e for e in f.evidence), f.evidence
    assert _throttled_share(after, now, previous) == pytest.approx(0.8)
    # the periods are estimated from the interval; the kernel's own count is never below those it throttled
    # (a pod at its quota on the cgroup v2 tier read "nr_throttled 900: 23 of ~23 periods in the last 2.3 s = 101%")
    every = replace(before, cpu_throttled_periods=124, interval_s=2.3)
    f = find(run(snapshot([every], interval_s=2.3), previous=previous), "cpu.throttled", "busy")
    assert any("24 of ~24 periods in the last 2.3 s = 100%" in e for e in f.evidence), f.evidence
    assert f.title.startswith("CPU-throttled in 100% of scheduler periods")
    legacy = replace(after, interval_s=None)  # a recording made before the field: the sweep's interval
    assert "cpu.throttled" not in codes(run(snapshot([legacy], interval_s=4.0), previous=previous))  # 8 of ~40
