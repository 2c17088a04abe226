"""Acts on containers, against the real engine: a signal to one process (the dashboard's `k`, `mltop kill`) and
a stop or restart through the engine. Each is checked again before it is sent (a PID now of another process is
never signalled), refused where mltop may not act (replay, the fleet's host view, --read-only: the action
registry's words), shows what came of it and is recorded in the timeline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest

from builders import replace
from conftest import until, wait_for
from serve_helpers import ServeProcess, wait_until
from fakenvml import FakeGpu, FakeProcess, FakeScenario
from test_tui import dashboard, make_app

from mltop.diagnostics.actions import acts
from mltop.diagnostics.actions.registry import DEVICE_CHECK, RESTART_CONTAINER, SIGNAL_PROCESS, STOP_CONTAINER, refusal
from mltop.probes.fleet_host import CANNOT_ACT as FLEET_CANNOT_ACT
from mltop.probes.model import KubernetesInfo
from mltop.probes.source import StaticSource
from mltop.probes.recording import RecordingSource, RecordingStore
from mltop.tui.screens.acts import ActScreen
from mltop.tui.screens.dashboard import DashboardScreen
from mltop.tui.screens.timeline import TimelineScreen
from mltop.tui.widgets.gpu_panel import GpuCard

PREFIX = f"mltop-acts-{uuid.uuid4().hex[:6]}"
# Ends at once on SIGTERM, and outlives the end of its child `sleep 1234`, which it reaps.
TRAPPING = ["python3", "-c", "import signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
            "child = subprocess.Popen(['sleep', '1234'])\n"
            "while True:\n    child.poll()\n    time.sleep(0.1)"]
FLEET = SimpleNamespace(cannot_act=FLEET_CANNOT_ACT, act_command="ssh -t gpu-7 mltop")


def host_pid_of(container, needle: str) -> int | None:
    """The host PID of the container's process whose command holds `needle` (docker top: host PIDs)."""
    top = container.top()
    pid_at = top["Titles"].index("PID")
    found = [int(row[pid_at]) for row in top["Processes"] if needle in row[-1]]
    return found[0] if found else None


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2:][:1] not in (b"Z", b"X")


def recorded(path, kind: str) -> list:
    store = RecordingStore(str(path))
    try:
        return [e for e in store.events() if e.source == "mltop" and e.kind == kind]
    finally:
        store.close()


def the_job(containers, name: str):
    job = containers.run(TRAPPING, image="python", name=name)
    wait_for(lambda: host_pid_of(job, "sleep 1234"), what="its sleep 1234")
    return job, host_pid_of(job, "sleep 1234")


# --------------------------------------------------------------------------- the dashboard


async def test_k_kills_a_process_holding_gpu_memory_and_it_leaves_the_gpu_panel_at_80x24(
        containers, nvml_scenario, tmp_path):
    job, pid = the_job(containers, f"{PREFIX}-nb")
    lib = nvml_scenario(FakeScenario(gpus=[FakeGpu(uuid="GPU-acts", mem_used=41 << 30, processes=[
        FakeProcess(pid, used_memory=40 << 30, alive=True)])]))  # listed while it runs, as the driver does
    history = tmp_path / "h.db"
    app = make_app(nvml=True, nvml_lib=lib, record=str(history))
    async with app.run_test(size=(80, 24)) as pilot:
        table = dashboard(app).table
        await until(pilot, lambda: table.move_to_key(job.id), what="the job's row")
        processes = app.screen.query_one("#processes")
        await until(pilot, lambda: processes.cell_text(str(pid), "gpu_mem") == "40G", what="its GPU process")
        card = app.screen.query_one(GpuCard)
        users = lambda: str(card.query_one(".gpu-users").render())  # noqa: E731  (shown with the GPUs full screen)
        await pilot.press("g")
        await until(pilot, lambda: job.name in users(), what="the card naming the job")
        await pilot.press("g")
        await pilot.press("tab")  # to the processes pane
        assert processes.has_focus and processes.move_to_key(str(pid))
        await pilot.pause()
        await pilot.press("k")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ActScreen), ([n.message for n in app._notifications], app.screen.focused,
                                               [k for k in app.screen.active_bindings])
        question = screen.prompt_text
        assert f"host PID {pid}" in question and "sleep 1234" in question and job.name in question
        assert "40.0 GiB GPU memory on GPU 0" in question
        await pilot.press("down", "enter")  # TERM, KILL, INT: KILL
        assert f"Send SIGKILL to host PID {pid}?" in screen.prompt_text
        assert running(pid)  # nothing is sent before y
        await pilot.press("y")
        await until(pilot, lambda: app.acts, what="the outcome")
        outcome = app.acts[-1]
        assert (outcome.status, outcome.signal, outcome.pid) == ("exited", "KILL", pid), outcome
        assert not running(pid)
        # gone from the GPU, its card and the processes pane; the container itself still runs
        await until(pilot, lambda: not app.snapshot.gpus[0].processes, what="the GPU process gone")
        await pilot.press("g")
        await until(pilot, lambda: job.name not in users() and "40G" not in users(),
                    what="the card no longer naming the job")
        await pilot.press("g")
        await until(pilot, lambda: str(pid) not in processes.keys_in_order, what="the row gone")
        job.reload()
        assert job.status == "running"
        # the act is on the timeline screen (`e`)
        app.recorder.flush()
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, TimelineScreen) and any(
            e.kind == "signal" and e.title == f"SIGKILL to host PID {pid}: exited" for e in app.screen.shown),
            what="the act on the timeline")
    events = recorded(history, "signal")
    assert len(events) == 1 and events[0].container == job.name and events[0].container_id == job.id
    assert events[0].title == f"SIGKILL to host PID {pid}: exited"
    assert abs(events[0].t - outcome.at) < 1.0


async def test_k_on_a_container_row_restarts_then_stops_it_through_the_engine(containers, tmp_path):
    box = containers.run(TRAPPING, image="python", name=f"{PREFIX}-box")
    started = box.attrs["State"]["StartedAt"]
    history = tmp_path / "h.db"
    app = make_app(record=str(history))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: dashboard(app).table.move_to_key(box.id), what="the row")
        await pilot.press("k")
        screen = app.screen
        assert isinstance(screen, ActScreen) and box.name in screen.prompt_text
        await pilot.press("down", "enter", "y")  # Stop, Restart: Restart
        await until(pilot, lambda: app.acts, timeout=30, what="the restart")
        assert app.acts[-1].status == "restarted", app.acts[-1]
        box.reload()
        assert box.status == "running" and box.attrs["State"]["StartedAt"] != started
        await until(pilot, lambda: isinstance(app.screen, DashboardScreen) and
                    dashboard(app).table.move_to_key(box.id), what="the row again")
        await pilot.press("k", "enter", "y")  # Stop
        await until(pilot, lambda: len(app.acts) == 2, timeout=30, what="the stop")
        assert app.acts[-1].status == "stopped", app.acts[-1]
        box.reload()
        assert box.status == "exited"
    assert [e.title for e in recorded(history, "restart")] == ["restart: restarted"]
    assert [e.title for e in recorded(history, "stop")] == ["stop: stopped"]


async def test_k_under_read_only_is_refused_in_the_registrys_words(containers, monkeypatch):
    monkeypatch.setenv("MLTOP_READ_ONLY", "1")
    job, pid = the_job(containers, f"{PREFIX}-ro")
    app = make_app()
    said: list[str] = []
    real_notify = app.notify
    app.notify = lambda message, *a, **k: (said.append(str(message)), real_notify(message, *a, **k))[1]
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: dashboard(app).table.move_to_key(job.id), what="the row")
        processes = app.screen.query_one("#processes")
        await until(pilot, lambda: processes.move_to_key(str(pid)), what="its process")
        processes.focus()
        await pilot.press("k")
        assert isinstance(app.screen, DashboardScreen)
        dashboard(app).table.focus()
        await pilot.press("k")
        assert isinstance(app.screen, DashboardScreen)
    assert said == [refusal(SIGNAL_PROCESS), refusal(STOP_CONTAINER)]
    assert said[0].startswith("MLTOP_READ_ONLY=1 forbids every act on a container")
    assert running(pid)


async def test_a_pod_container_is_not_stopped_and_k_says_what_to_run_instead(containers, sampler):
    job, pid = the_job(containers, f"{PREFIX}-pod")
    pod = KubernetesInfo(namespace="research", pod="trainer-0", pod_uid="u-1", container="worker", qos=None)
    snapshot = sampler.sweep()
    snapshot = replace(snapshot, containers=tuple(replace(c, kubernetes=pod) if c.id == job.id else c
                                                  for c in snapshot.containers))
    outcome = acts.stop_container(snapshot.container(job.id), sampler.engine)
    assert outcome.status == acts.REFUSED and "the kubelet would start it again" in outcome.message
    assert "`kubectl delete pod -n research trainer-0`" in outcome.message
    assert "`kubectl rollout restart -n research deployment/NAME`" in outcome.message
    app = make_app(source=StaticSource([snapshot, snapshot]))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: dashboard(app).table.move_to_key(job.id), what="the row")
        await pilot.press("k")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ActScreen) and "kubectl delete pod -n research trainer-0" in screen.prompt_text
        await pilot.press("enter", "y", "escape")
        assert isinstance(app.screen, DashboardScreen) and app.acts == []
    job.reload()
    assert job.status == "running" and running(pid)


def test_mltop_serve_is_read_only_and_its_doctor_says_why_it_skips_exec(monkeypatch):
    monkeypatch.delenv("MLTOP_NO_EXEC", raising=False)
    monkeypatch.delenv("MLTOP_READ_ONLY", raising=False)
    serve = ServeProcess("--interval", "0.5", "--doctor-interval", "1", "--no-nvml")
    try:
        serve.wait_healthy()
        wait_until(lambda: serve.get("/findings.json")[0] == 200, 60, "the agent's first doctor run")
        skipped = json.loads(serve.get("/findings.json")[1])["checks_skipped"]
    finally:
        serve.stop()
    words = refusal(DEVICE_CHECK, read_only=True).replace("--read-only", "MLTOP_READ_ONLY=1")
    assert any(s["check"] == "exec" and s["reason"].startswith(words) for s in skipped), skipped


# --------------------------------------------------------------------------- the checks before an act


def test_a_pid_that_now_names_another_process_is_never_signalled(containers, sampler):
    ours, ours_pid = the_job(containers, f"{PREFIX}-ours")
    other, other_pid = the_job(containers, f"{PREFIX}-other")
    snapshot = sampler.sweep()
    mine = snapshot.container(ours.id)
    seen = next(p for p in mine.processes if p.host_pid == ours_pid)
    assert seen.start_ticks is not None
    host = subprocess.Popen(["sleep", "600"])
    try:
        cases = {
            "another container": (dataclasses.replace(seen, host_pid=other_pid),
                                  f"its cgroup now names container {other.id[:12]}"),
            "the host": (dataclasses.replace(seen, host_pid=host.pid), "its cgroup now names a process of the host"),
            # the same PID in the same container, but another program run: reused inside the container
            "another run": (dataclasses.replace(seen, start_ticks=seen.start_ticks - 1), "started at another time"),
        }
        for what, (stale, words) in cases.items():
            outcome = acts.signal_process(mine, stale, "KILL", wait_s=0.5)
            assert outcome.status == acts.REFUSED, what
            assert words in outcome.message and "mltop does not signal it" in outcome.message, outcome.message
        assert running(other_pid) and host.poll() is None and running(ours_pid)
    finally:
        host.kill()
        host.wait()
    # the control: the process as the snapshot saw it is signalled, and its end is seen
    outcome = acts.signal_process(mine, seen, "TERM")
    assert outcome.status == acts.EXITED and outcome.seconds < acts.WAIT_S, outcome
    # a process that ignores TERM still runs: said, not claimed gone
    stubborn = containers.run(["sh", "-c", "trap '' TERM; sleep 1234 & wait; while :; do sleep 1; done"],
                              name=f"{PREFIX}-stubborn")
    wait_for(lambda: host_pid_of(stubborn, "sh -c"), what="its shell")
    snapshot = sampler.sweep()
    shell = next(p for p in snapshot.container(stubborn.id).processes if p.container_pid == 1)
    outcome = acts.signal_process(snapshot.container(stubborn.id), shell, "TERM", wait_s=1.0)
    assert outcome.status == acts.STILL_RUNNING and "still runs 1 s after SIGTERM" in outcome.message


@pytest.mark.parametrize("where", ["replay", "fleet", "read-only"])
def test_every_act_is_refused_in_replay_the_fleet_and_read_only(containers, sampler, monkeypatch, where):
    job, pid = the_job(containers, f"{PREFIX}-{where}")
    snapshot = sampler.sweep()
    container = snapshot.container(job.id)
    process = next(p for p in container.processes if p.host_pid == pid)
    source = {"replay": RecordingSource, "fleet": FLEET, "read-only": None}[where]
    if where == "read-only":
        monkeypatch.setenv("MLTOP_READ_ONLY", "1")
    outcomes = [acts.signal_process(container, process, "KILL", source=source),
                acts.stop_container(container, sampler.engine, source=source),
                acts.stop_container(container, sampler.engine, restart=True, source=source)]
    for outcome, work in zip(outcomes, (SIGNAL_PROCESS, STOP_CONTAINER, RESTART_CONTAINER)):
        assert outcome.status == acts.REFUSED and outcome.message == refusal(work, source)
    words = {"replay": RecordingSource.cannot_act, "fleet": "The fleet view reads Prometheus: Sending a signal",
             "read-only": "MLTOP_READ_ONLY=1 forbids every act on a container"}[where]
    assert outcomes[0].message.startswith(words), outcomes[0].message
    if where == "fleet":
        assert "Run `ssh -t gpu-7 mltop` to act on it now." in outcomes[0].message
    started = job.attrs["State"]["StartedAt"]
    job.reload()
    assert running(pid) and job.status == "running" and job.attrs["State"]["StartedAt"] == started


# --------------------------------------------------------------------------- mltop kill / stop / restart


def mltop(*argv: str, record) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mltop.tui.cli", *argv, "--no-nvml", "--record", str(record)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_mltop_kill_refuses_without_yes_and_a_terminal_and_kills_with_yes(containers, tmp_path):
    job, pid = the_job(containers, f"{PREFIX}-cli")
    history = tmp_path / "h.db"
    asked = mltop("kill", job.name, str(pid), "--signal", "KILL", record=history)
    assert asked.returncode == 1 and "refused — stdin is not a terminal" in asked.stderr, asked.stderr
    assert f"host PID {pid}" in asked.stderr and "Pass --yes" in asked.stderr
    assert running(pid)
    done = mltop("kill", job.name, str(pid), "--signal", "KILL", "--yes", record=history)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"mltop kill: exited — Host PID {pid} exited ") and "after SIGKILL" in done.stdout
    assert not running(pid)
    assert [e.title for e in recorded(history, "signal")] == [f"SIGKILL to host PID {pid}: exited"]
    # a PID that is not the container's is refused before anything is sent
    gone = mltop("kill", job.name, str(pid), "--yes", record=history)
    assert gone.returncode == 3 and f"host PID {pid} is not a process of {job.name}" in gone.stderr
    # stop and restart, the same way; and under --read-only nothing at all
    ro = mltop("--read-only", "stop", job.name, "--yes", record=history)
    assert ro.returncode == 1 and "mltop stop: refused — MLTOP_READ_ONLY=1 forbids every act on a container" \
        in ro.stderr, ro.stderr
    job.reload()
    assert job.status == "running"
    stopped = mltop("stop", job.name, "--yes", record=history)
    assert stopped.returncode == 0 and "mltop stop: stopped" in stopped.stdout, stopped.stderr
    job.reload()
    assert job.status == "exited"
    assert [e.title for e in recorded(history, "stop")] == ["stop: stopped"]


def test_mltop_kill_on_a_terminal_asks_and_does_nothing_without_y(containers, tmp_path):
    import pty

    job, pid = the_job(containers, f"{PREFIX}-tty")
    main, child = pty.openpty()
    try:
        os.write(main, b"n\n")  # the answer waits in the terminal's input
        asked = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "kill", job.name, str(pid), "--no-nvml",
                                "--record", str(tmp_path / "h.db")], stdin=child, capture_output=True, text=True,
                               timeout=60)
    finally:
        os.close(main)
        os.close(child)
    assert f"Send SIGTERM to host PID {pid}" in asked.stderr and "[y/N]" in asked.stderr
    assert asked.returncode == 1 and "not confirmed; nothing done" in asked.stderr, asked.stderr
    assert running(pid)
