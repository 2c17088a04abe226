"""The doctor never judges a placeholder: a container whose docker inspect is pending or failed has an empty
configuration, so it is listed under checks_skipped with the reason (in `mltop doctor`, the `d` screen,
reports and serve), never judged on what it lacks. Unreadable cgroup facts are a skip entry too.

Built snapshots first (tests/builders.py), then the real engine: a dense host's held background inspections,
an inspect the engine fails (through a socket proxy that answers 500 for it), and a container removed between
the sweep and the doctor.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from builders import container, placeholder, snapshot
from conftest import until, wait_for
from test_checks import TOOLKIT

from mltop.diagnostics.doctor import CGROUP_FACTS, INSPECT, run_doctor

FAILED = "Error response from daemon: i/o timeout"
REFUSED = "container store busy (refused by the test proxy)"  # what the proxy's 500 says


def scene():
    """A healthy trainer; a restarting job and a job killed with exit 137, both known from the list alone.

    Judged on their empty configurations they would read as a restart loop of "0 restarts" and a crash with
    SIGKILL (where the real configuration may say OOMKilled): the findings this file proves never appear."""
    healthy = container("trainer")
    pending = placeholder("pending-job", "restarting", "Restarting (1) 1 second ago")
    failed = placeholder("failed-job", "exited", "Exited (137) 2 seconds ago", inspect_error=FAILED)
    return snapshot([healthy, pending, failed])


def doctor_of(snap):
    return run_doctor(snap, None, host_facts=TOOLKIT, container_facts={}, action_log=None)


def inspect_skips(result) -> dict[tuple[str, ...], str]:
    return {s.containers: s.reason for s in result.checks_skipped if s.check == INSPECT}


def test_placeholders_are_skipped_with_the_reason_never_judged():
    snap = scene()
    result = doctor_of(snap)
    judged = {f.container for f in result.findings}
    assert not judged & {"pending-job", "failed-job"}, [(f.code, f.container, f.title) for f in result.findings]
    assert result.containers_checked == ("trainer",)
    skips = inspect_skips(result)
    assert "its docker inspect is still pending" in skips[("pending-job",)]
    assert FAILED in skips[("failed-job",)] and "failed" in skips[("failed-job",)]
    # and the logs of a placeholder are not read either: nothing of it is judged
    assert not any("pending-job" in s.containers for s in result.checks_skipped if s.check == "logs")


def test_once_its_configuration_is_read_the_same_container_is_judged():
    """The control: the restarting job with its real configuration is judged (here: a restart loop)."""
    pending = placeholder("pending-job", "restarting", "Restarting (1) 1 second ago")
    read = container("pending-job", status="restarting", config_overrides=dict(restart_count=5,
                                                                             restart_policy="always"))
    assert read.id == pending.id
    result = doctor_of(snapshot([read]))
    assert ("container.restart_loop", "pending-job") in {(f.code, f.container) for f in result.findings}
    assert not inspect_skips(result)


def test_doctor_json_and_text_list_the_placeholders():
    from mltop.tui.cli.doctor import render_text

    snap = scene()
    result = doctor_of(snap)
    doc = json.loads(json.dumps(result.to_json()))
    entries = [s for s in doc["checks_skipped"] if s["check"] == INSPECT]
    assert sorted(s["containers"] for s in entries) == [["failed-job"], ["pending-job"]]
    assert all(set(s) == {"check", "reason", "containers"} for s in doc["checks_skipped"])
    assert not [f for f in doc["findings"] if f["container"] in ("pending-job", "failed-job")]

    text = render_text(result, snap)
    assert "1 container(s) checked" in text
    assert f"{INSPECT}: not judged: its docker inspect is still pending" in text and "pending-job" in text
    assert FAILED in text
    assert "container trainer" in text  # judged
    for name in ("pending-job", "failed-job"):  # listed as not judged, never as a group nor as clean
        assert f"container {name}" not in text
        assert not [line for line in text.splitlines() if line.startswith("no findings:") and name in line]


def test_report_lists_the_placeholders_under_checks_skipped():
    from mltop.diagnostics.report import build_report, render

    snap = scene()
    result = doctor_of(snap)
    doc = build_report(snap, None, doctor=result, log_lines=0)
    skipped = {s["container"]: s["reason"] for s in doc["checks_skipped"] if s["check"] == INSPECT}
    assert set(skipped) == {"pending-job", "failed-job"} and FAILED in skipped["failed-job"]
    assert not [f for f in doc["findings"] if f["container"] in ("pending-job", "failed-job")]
    for fmt in ("md", "html"):
        text = render(doc, fmt)
        assert "docker inspect is still pending" in text and FAILED in text, fmt
    # a report on the trainer alone keeps the host's skips and leaves the other containers' out
    alone = build_report(snap, None, doctor=result, containers=["trainer"], log_lines=0)
    assert not [s for s in alone["checks_skipped"] if s["check"] == INSPECT]
    assert alone["summary"]["checks_skipped"] == len(alone["checks_skipped"])


def test_serve_exposes_the_skipped_checks_per_container():
    from serve_helpers import parse_exposition

    from mltop.tui.serve.loop import ServeState
    from mltop.tui.serve.metrics import Exposition

    snap = scene()
    result = doctor_of(snap)
    state = ServeState(snapshot=snap, swept_at=time.monotonic(), sweeps=1, last_good_gpus=snap.gpus,
                       doctor=result, doctor_at=time.monotonic())
    text = Exposition(lambda: state, "9.9.9").render().decode()
    m = parse_exposition(text)
    skipped = {(labels["check"], labels["container"]) for labels, value in m["mltop_check_skipped"] if value == 1}
    assert {(INSPECT, "pending-job"), (INSPECT, "failed-job")} <= skipped
    assert not [labels for labels, _ in m.get("mltop_finding", ()) if labels["container"] in ("pending-job",
                                                                                               "failed-job")]
    assert FAILED not in text  # free text stays in /findings.json, out of the labels
    promtool = shutil.which("promtool")
    if promtool:
        lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr


async def test_diagnostics_screen_lists_a_placeholder_as_skipped(monkeypatch):
    from mltop.probes.source import StaticSource
    from mltop.tui.app import MltopApp
    from mltop.tui.screens.diagnostics import DiagnosticsScreen

    monkeypatch.setenv("MLTOP_NO_EXEC", "1")
    snap = scene()
    app = MltopApp(source=StaticSource([snap]), docker_host="unix:///nonexistent/mltop-test.sock", nvml=False,
                   interval=1.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.sweeps >= 1, what="a sweep")
        pending = app.snapshot.container("pending-job")
        app.push_screen(DiagnosticsScreen(container_id=pending.id))
        await until(pilot, lambda: isinstance(app.screen, DiagnosticsScreen) and app.screen.result is not None,
                    what="the doctor's result")
        screen = app.screen
        assert not [f for f in screen.result.findings if f.container == "pending-job"]
        text = screen.findings_text
        assert "Checks skipped" in text and "inspect: not judged: its docker inspect is still pending" in text
        assert "No findings" not in text  # not judged is not healthy
        assert "Not judged: its configuration is not read yet" in text


async def test_dashboard_doctor_does_not_wait_for_an_inspect_that_failed(monkeypatch):
    """The dashboard's background doctor waits while inspections are on the way (a dense host's first
    seconds); one that failed is not on the way: the doctor runs, and lists it as not judged."""
    from mltop.probes.source import StaticSource
    from mltop.tui.app import MltopApp

    monkeypatch.setenv("MLTOP_NO_EXEC", "1")
    snap = snapshot([container("trainer"), placeholder("failed-job", inspect_error=FAILED)])
    app = MltopApp(source=StaticSource([snap]), docker_host="unix:///nonexistent/mltop-test.sock", nvml=False,
                   interval=1.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.doctor_result is not None, timeout=20, what="the background doctor")
        assert FAILED in inspect_skips(app.doctor_result)[("failed-job",)]
        assert "failed-job" not in app.finding_severities


# --------------------------------------------------------------------------- the real engine


def test_held_background_inspections_are_skipped_then_judged(containers):
    """A dense host's first sweep: containers known from the list alone. A restarting one and one killed with
    exit 137 are listed as skipped, not judged; once their inspections arrive, they are judged."""
    from mltop.probes.catalog import BACKGROUND_INSPECT_MIN
    from mltop.probes.sampler import ProbeOptions, Sampler

    killed = containers.run(["sh", "-c", "exit 137"], wait_running=False)  # as a SIGKILL leaves it
    wait_for(lambda: _state(killed) == "exited", what="the killed container exited")
    others = [containers.run(["sleep", "300"]) for _ in range(BACKGROUND_INSPECT_MIN)]
    sampler = Sampler(ProbeOptions(nvml=False, inspect_in_background=True))
    try:
        sampler.catalog.hold_background_inspections()
        first = sampler.sweep()
        ours = [killed.name] + [c.name for c in others]
        assert all(first.container(n).config_pending for n in ours)
        result = run_doctor(first, sampler.engine, containers=ours, no_exec=True)
        assert not [f for f in result.findings if f.container in ours], result.findings
        (reason,) = [s.reason for s in result.checks_skipped if s.check == INSPECT]
        assert "its docker inspect is still pending" in reason and killed.name in reason
        assert result.containers_checked == ()

        sampler.catalog.release_background_inspections()
        wait_for(lambda: not any(c.config_pending for c in sampler.sweep().containers if c.name in ours),
                 timeout=20, what="every configuration, inspected in the background")
        read = sampler.sweep()
        result = run_doctor(read, sampler.engine, containers=ours, no_exec=True)
        assert not [s for s in result.checks_skipped if s.check == INSPECT]
        assert set(result.containers_checked) == set(ours)
        crashed = [f for f in result.findings if f.container == killed.name]
        assert [f.code for f in crashed] == ["container.crashed"], crashed
    finally:
        sampler.close()


def _state(c) -> str:
    c.reload()
    return c.status


class InspectFailingProxy:
    """A unix socket in front of the engine's that forwards every request but answers 500 to the inspect of
    one container: an engine that fails mid-way, as a busy daemon does. Requests are GETs one at a time on a
    connection (the engine clients wait for each answer), so answering one locally never reorders replies."""

    def __init__(self, upstream: str, path: str, failing_id: str):
        self.upstream, self.path, self.failing_id = upstream, path, failing_id
        self.failed = 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.upstream)
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        buffered = b""
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                buffered += data
                while b"\r\n\r\n" in buffered:
                    head, _, rest = buffered.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value.strip())
                    if len(rest) < length:
                        break
                    request, buffered = head + b"\r\n\r\n" + rest[:length], rest[length:]
                    target = head.split(b" ")[1].decode()
                    if target.split("?")[0].endswith(f"/containers/{self.failing_id}/json"):
                        self.failed += 1
                        body = b'{"message":"' + REFUSED.encode() + b'"}'
                        client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                                       b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                    else:
                        upstream.sendall(request)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.close()
                except OSError:
                    pass

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def test_an_inspect_the_engine_fails_is_skipped_with_the_engines_words(containers, tmp_path):
    from mltop.probes.catalog import BACKGROUND_INSPECT_MIN
    from mltop.probes.engine import docker_host_in_use
    from mltop.probes.sampler import ProbeOptions, Sampler

    engine_socket = docker_host_in_use(None).removeprefix("unix://")
    started = [containers.run(["sleep", "300"]) for _ in range(BACKGROUND_INSPECT_MIN + 1)]
    victim = started[0]
    proxy = InspectFailingProxy(engine_socket, str(tmp_path / "docker.sock"), victim.id)
    sampler = Sampler(ProbeOptions(nvml=False, inspect_in_background=True,
                                   docker_host=f"unix://{tmp_path / 'docker.sock'}"))
    try:
        names = [c.name for c in started]
        wait_for(lambda: not any(c.config_pending and not c.config_error for c in sampler.sweep().containers
                                 if c.name in names), timeout=20, what="every inspect answered or failed")
        snap = sampler.sweep()
        assert proxy.failed >= 1
        bad = snap.container(victim.name)
        assert bad.config_pending and REFUSED in (bad.config_error or "")
        assert all(not snap.container(n).config_pending for n in names[1:])
        result = run_doctor(snap, sampler.engine, containers=names, no_exec=True)
        (skip,) = [s for s in result.checks_skipped if s.check == INSPECT]
        assert skip.containers == (victim.name,) and REFUSED in skip.reason and "failed" in skip.reason
        assert victim.name not in result.containers_checked and len(result.containers_checked) == len(names) - 1
        assert not [f for f in result.findings if f.container == victim.name]
    finally:
        sampler.close()
        proxy.close()


def test_a_container_removed_before_the_doctor_reads_its_cgroup_is_a_skip_entry(containers, sampler):
    c = containers.run(["sleep", "300"])
    wait_for(lambda: (s := sampler.sweep().container(c.name)) is not None and s.config_pending is False,
             what="the container in a sweep")
    snap = sampler.sweep()
    c.remove(force=True)
    result = run_doctor(snap, sampler.engine, containers=[c.name], no_exec=True)
    facts = [s for s in result.checks_skipped if s.check == CGROUP_FACTS]
    assert [s.containers for s in facts] == [(c.name,)], result.checks_skipped
    assert "cgroup was not found" in facts[0].reason
    assert [s for s in result.checks_skipped if s.check == "logs" and c.name in s.containers]


def test_mltop_doctor_lists_a_container_whose_inspect_the_engine_fails(containers, tmp_path):
    """`mltop doctor` inspects before answering (no background): one inspect failing used to fail the whole
    list, every container gone and the engine said to be in error. Now that container alone is skipped."""
    from mltop.probes.engine import docker_host_in_use

    victim, other = containers.run(["sleep", "300"]), containers.run(["sleep", "300"])
    proxy = InspectFailingProxy(docker_host_in_use(None).removeprefix("unix://"), str(tmp_path / "docker.sock"),
                                victim.id)
    try:
        host = f"unix://{tmp_path / 'docker.sock'}"
        env = dict(os.environ)
        env.pop("DOCKER_HOST", None)
        done = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "doctor", "--docker-host", host, "--no-nvml",
                               "--no-exec", "--interval", "0.25", "--json", victim.name, other.name],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proxy.failed >= 1
        doc = json.loads(done.stdout)
        (skip,) = [s for s in doc["checks_skipped"] if s["check"] == INSPECT]
        assert skip["containers"] == [victim.name] and REFUSED in skip["reason"], skip
        assert not [f for f in doc["findings"] if f["container"] == victim.name]
        assert not [f for f in doc["findings"] if f["code"] == "engine.unreachable"]
        text = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "doctor", "--docker-host", host, "--no-nvml",
                               "--no-exec", "--interval", "0.25", victim.name, other.name],
                              capture_output=True, text=True, timeout=120, env=env).stdout
        assert "1 container(s) checked" in text and f"{INSPECT}: not judged: its docker inspect failed" in text
        assert REFUSED in text and victim.name in text
    finally:
        proxy.close()
