"""What mltop refuses to do, against the real engine and a real py-spy.

--no-exec (MLTOP_NO_EXEC=1) is one rule of the action registry, and every door asks it: `mltop run`, the
dashboard's keys and its action screen, the doctor's read test and device check, the background device check;
each refuses in the registry's words, and py-spy (which attaches from the host) is refused with the rest. py-spy
checks again, right before it attaches, that the snapshot's PID still lives in the container. And one action's
output costs a bounded amount: lines cut at 64 KiB, 4 MiB kept in all, read in linear time.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from conftest import fake_nvidia_smi, until, wait_for
from mltop.diagnostics.actions import (
    ACTIONS,
    BACKGROUND_DEVICE_CHECK,
    DEVICE_CHECK,
    OK,
    PY_SPY,
    READ_TEST,
    UNAVAILABLE,
    ActionLog,
    ActionRun,
    ContainerWork,
    find_py_spy,
    refusal,
)
from mltop.diagnostics.actions.registry import ATTACH, EXEC, SIGNAL, STOP
from mltop.diagnostics.actions.runner import (
    CUT_MARK,
    MAX_LINE_BYTES,
    MAX_OUTPUT_BYTES,
    StepControl,
    exec_in_container,
    run_on_host,
)

SPIN = "def mltop_spin():\n    while True: sum(range(1000))\nmltop_spin()"
CUDA_ENV = {"CUDA_VERSION": "12.1.1", "NVIDIA_REQUIRE_CUDA": "cuda>=12.1"}  # a GPU-looking container


@pytest.fixture
def counted_py_spy(tmp_path, monkeypatch):
    """The real py-spy behind a wrapper first on PATH that notes each run: proof of whether py-spy ran."""
    real = find_py_spy()
    if real is None:
        pytest.fail("py-spy is not installed (it comes with `pip install mltop`)")
    marker = tmp_path / "py-spy-runs"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "py-spy"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    path = f"{bin_dir}:{os.environ.get('PATH', '')}"
    monkeypatch.setenv("PATH", path)
    return SimpleNamespace(path=path, runs=lambda: marker.read_text().splitlines() if marker.exists() else [],
                           forget=lambda: marker.unlink(missing_ok=True))


def exec_ids(container) -> list[str]:
    container.reload()
    return list(container.attrs.get("ExecIDs") or [])


# ----------------------------------------------------------------------------- one rule, every door


def test_the_no_exec_rule_refuses_by_what_the_work_reaches(monkeypatch):
    monkeypatch.delenv("MLTOP_NO_EXEC", raising=False)
    assert all(refusal(a) is None for a in ACTIONS)
    assert refusal(PY_SPY, no_exec=True).startswith("--no-exec forbids docker exec and CRI exec into containers "
                                                    "and attaching to their processes: py-spy dump attaches")
    monkeypatch.setenv("MLTOP_NO_EXEC", "1")
    assert {a.name: refusal(a) for a in ACTIONS} == {
        "nvidia-smi": "MLTOP_NO_EXEC=1 forbids docker exec and CRI exec into containers and attaching to their "
                      "processes: nvidia-smi runs a command inside the container.",
        "py-spy": "MLTOP_NO_EXEC=1 forbids docker exec and CRI exec into containers and attaching to their "
                  "processes: py-spy dump attaches to the container's processes from the host.",
        "device-check": "MLTOP_NO_EXEC=1 forbids docker exec and CRI exec into containers and attaching to their "
                        "processes: Framework device check runs a command inside the container.",
        "stacks": "MLTOP_NO_EXEC=1 forbids docker exec and CRI exec into containers and attaching to their "
                  "processes: Stacks of the job's ranks attaches to the container's processes from the host.",
    }
    # --no-exec is about reaching into the container: work that only signals or stops is another policy's
    for reach, refused in ((EXEC, True), (ATTACH, True), (SIGNAL, False), (STOP, False)):
        work = ContainerWork("test.work", "The work", reaches=frozenset({reach}))
        assert (refusal(work) is not None) == refused, reach
    monkeypatch.setenv("MLTOP_NO_EXEC", "0")
    assert refusal(PY_SPY) is None


def test_mltop_run_py_spy_is_refused_under_no_exec_and_py_spy_never_runs(containers, sampler, counted_py_spy,
                                                                         monkeypatch):
    c = containers.run(["python3", "-c", SPIN], image="python")
    env = {**os.environ, "PATH": counted_py_spy.path}
    env.pop("MLTOP_NO_EXEC", None)
    argv = [sys.executable, "-m", "mltop.tui.cli", "--no-nvml", "run", "py-spy", c.name]
    ran = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)  # the control: it attaches
    assert ran.returncode == 0, ran.stderr
    assert "mltop_spin" in ran.stdout and len(counted_py_spy.runs()) == 1
    counted_py_spy.forget()

    refused = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**env, "MLTOP_NO_EXEC": "1"})
    monkeypatch.setenv("MLTOP_NO_EXEC", "1")
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"mltop run: py-spy refused — {refusal(PY_SPY)}"
    assert "mltop_spin" not in refused.stdout
    assert counted_py_spy.runs() == []  # py-spy never started
    # an ActionRun asks too, for a caller that did not (a script, a screen of later days)
    snap = sampler.sweep()
    result = ActionRun(PY_SPY, snap, snap.container(c.id), sampler.engine).run()
    assert result.status == UNAVAILABLE and result.explanation == refusal(PY_SPY) and result.output == ""
    assert counted_py_spy.runs() == []
    # and `--no-exec` on the command line is the same setting (it sets MLTOP_NO_EXEC=1 for the process)
    flagged = subprocess.run([*argv[:3], "--no-exec", *argv[3:]], capture_output=True, text=True, timeout=120,
                             env=env)
    assert flagged.returncode == 1 and flagged.stderr == refused.stderr
    assert counted_py_spy.runs() == []


async def test_the_dashboard_refuses_every_action_under_no_exec_in_the_registrys_words(
        containers, sampler, counted_py_spy, monkeypatch):
    from mltop.probes.source import StaticSource
    from mltop.tui.app import MltopApp
    from mltop.tui.screens.actions import ActionScreen
    from mltop.tui.screens.dashboard import DashboardScreen

    monkeypatch.setenv("MLTOP_NO_EXEC", "1")
    c = containers.run(["python3", "-c", SPIN], image="python", environment=CUDA_ENV)
    snap = sampler.sweep()
    app = MltopApp(nvml=False, source=StaticSource([snap]), interval=0.25)
    shown: list[str] = []
    notify = app.notify
    app.notify = lambda message, *a, **k: (shown.append(str(message)), notify(message, *a, **k))[1]
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.table.move_to_key(c.id),
                    what="the container's row")
        for action in ACTIONS:
            await pilot.press(action.key)
            await pilot.pause(0.1)
            assert isinstance(app.screen, DashboardScreen), action.name
        assert [m for m in shown if "MLTOP_NO_EXEC" in m] == [refusal(a) for a in ACTIONS]
        # a way in that skips the key (the command palette, a later screen): the screen asks the registry too
        app.push_screen(ActionScreen(kind=PY_SPY, container_id=c.id))
        await until(pilot, lambda: isinstance(app.screen, ActionScreen) and app.screen.status == "unavailable",
                    what="the refused action screen")
        assert app.screen.explanation_text == refusal(PY_SPY)
        await until(pilot, lambda: app.doctor_result is not None, what="the background doctor")
        assert app.device_checks.outcomes == {} and len(app.action_log) == 0  # no background device check either
    assert counted_py_spy.runs() == [] and exec_ids(c) == []


def test_the_doctors_exec_checks_are_skipped_with_the_registrys_words(containers, sampler, monkeypatch):
    from mltop.diagnostics.doctor import BackgroundDeviceChecks, run_doctor

    monkeypatch.setenv("MLTOP_NO_EXEC", "1")
    c = containers.run(["python3", "-c", "import time; time.sleep(300)"], image="python", environment=CUDA_ENV)
    snap = sampler.sweep()
    log = ActionLog()
    result = run_doctor(snap, sampler.engine, containers=[c.name], io_test="/etc/hostname", framework_check=True,
                        action_log=log)
    skipped = {s.check: s.reason for s in result.checks_skipped}
    assert skipped["io.read_test"] == refusal(READ_TEST) and "The read test runs a command" in refusal(READ_TEST)
    assert skipped["framework_check"] == refusal(DEVICE_CHECK)
    background = BackgroundDeviceChecks(log)
    assert background.forbidden == refusal(BACKGROUND_DEVICE_CHECK) and background.due(snap) == []
    assert not list(log.results()) and exec_ids(c) == []


# ----------------------------------------------------------------------------- py-spy's PID, checked again


def _with_host_pid(snap, container_id: str, pid: int):
    """The snapshot with the container's processes all given host PID `pid`: what a snapshot holds when its
    process has exited and the number went to another process since."""
    c = snap.container(container_id)
    moved = dataclasses.replace(c, processes=tuple(dataclasses.replace(p, host_pid=pid) for p in c.processes))
    return dataclasses.replace(snap, containers=tuple(moved if x.id == container_id else x for x in snap.containers))


def test_py_spy_refuses_a_pid_that_exited_since_the_snapshot(containers, sampler, counted_py_spy):
    c = containers.run(["sh", "-c", f"python3 -c '{SPIN}' & wait; exec sleep 600"], image="python")
    wait_for(lambda: any(p.cmdline.startswith("python3") for p in sampler.sweep().container(c.id).processes),
             what="the Python process")
    snap = sampler.sweep()
    (python,) = [p for p in snap.container(c.id).processes if p.cmdline.startswith("python3")]
    os.kill(python.host_pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{python.host_pid}"), what="the Python process to be reaped")
    result = ActionRun(PY_SPY, snap, snap.container(c.id), sampler.engine, pid=python.host_pid).run()
    assert result.status == UNAVAILABLE
    assert result.explanation == (f"Host PID {python.host_pid} has exited since the snapshot mltop took of "
                                  f"{c.name}: nothing to attach to. Refresh and try again.")
    assert counted_py_spy.runs() == []


def test_py_spy_refuses_a_pid_now_in_another_container_or_on_the_host(containers, sampler, counted_py_spy):
    ours = containers.run(["python3", "-c", SPIN], image="python")
    other = containers.run(["python3", "-c", SPIN], image="python")
    snap = sampler.sweep()
    control = ActionRun(PY_SPY, snap, snap.container(ours.id), sampler.engine).run()
    assert control.status == OK, control.explanation  # the snapshot as taken: py-spy attaches
    assert len(counted_py_spy.runs()) == 1
    counted_py_spy.forget()

    other_pid = snap.container(other.id).processes[0].host_pid
    reused = _with_host_pid(snap, ours.id, other_pid)
    result = ActionRun(PY_SPY, reused, reused.container(ours.id), sampler.engine).run()
    assert result.status == UNAVAILABLE
    assert result.explanation.startswith(f"Host PID {other_pid} is no longer a process of {ours.name}: its cgroup "
                                         f"now names container {other.id[:12]}.")
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        on_host = _with_host_pid(snap, ours.id, host.pid)
        result = ActionRun(PY_SPY, on_host, on_host.container(ours.id), sampler.engine).run()
    finally:
        host.kill()
        host.wait()
    assert result.status == UNAVAILABLE
    assert f"Host PID {host.pid} is no longer a process of {ours.name}" in result.explanation
    assert counted_py_spy.runs() == []  # neither was attached to


# ----------------------------------------------------------------------------- what output may cost


FIFTY_MIB = 50 << 20


def test_fifty_mib_without_a_newline_is_taken_in_quickly_and_cut(containers, sampler):
    """The pathological case the issue measured at 26.9 s: one 50 MiB line. Split in linear time, it takes well
    under the budget, and what is kept is one line of 64 KiB with the cut said."""
    started = time.monotonic()
    outcome = run_on_host([sys.executable, "-c", f"import sys; sys.stdout.write('x' * {FIFTY_MIB})"],
                          StepControl.within(60))
    assert time.monotonic() - started < 5.0
    assert outcome.exit_code == 0 and outcome.text == "x" * MAX_LINE_BYTES + CUT_MARK

    c = containers.run(["sleep", "600"])  # the same through a real docker exec
    started = time.monotonic()
    outcome = exec_in_container(sampler.engine, c.id, ["sh", "-c", f"head -c {FIFTY_MIB} /dev/zero | tr '\\0' y"],
                                StepControl.within(60))
    assert time.monotonic() - started < 10.0
    assert outcome.exit_code == 0 and outcome.text == "y" * MAX_LINE_BYTES + CUT_MARK


def test_an_action_keeps_four_mib_of_many_lines_and_says_how_much_it_dropped(containers, sampler):
    line = "0123456789" * 9 + "abcdefghi"  # 99 characters, 100 bytes with its newline
    lines_printed = 500_000  # 50 MB
    smi = fake_nvidia_smi(containers, f"yes {line} | head -n {lines_printed}")
    snap = sampler.sweep()
    streamed: list[str] = []
    started = time.monotonic()
    result = ActionRun("nvidia-smi", snap, snap.container(smi.id), sampler.engine, on_line=streamed.append).run()
    assert time.monotonic() - started < 20.0
    assert result.status == OK, result.explanation
    kept = result.output.split("\n")
    note = kept[-1]
    assert kept[:-1] == [line] * (len(kept) - 1)
    assert MAX_OUTPUT_BYTES - 200 <= sum(len(x) + 1 for x in kept[:-1]) <= MAX_OUTPUT_BYTES
    dropped_lines = lines_printed - (len(kept) - 1)
    assert note == (f"[{dropped_lines * 100} more bytes in {dropped_lines} lines not kept: output is capped at "
                    "4 MiB]")
    assert streamed == kept  # what was shown is what was kept: nothing past the cap reached the viewer
