"""The dashboard's log pane on a real pod container (the tests' private containerd): its own secret values, echoed
bare in its log where no pattern knows them, are scrubbed by value (read from the CRI's verbose ContainerStatus,
as the report and the doctor read them); when they cannot be read, the lines are withheld and the pane says so,
as it does for a Docker container whose environment cannot be read."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from conftest import until, wait_for
from cri_harness import ContainerSpec

from mltop.probes.redaction import REDACTED, SECRETS_UNREADABLE, redact_text
from mltop.probes.sampler import ProbeOptions, Sampler
from mltop.probes.source import StaticSource
from mltop.tui.app import MltopApp
from mltop.tui.screens.dashboard import DashboardScreen
from mltop.tui.screens.logs import LogPane, LogsScreen

SIZE = (120, 36)


@pytest.fixture
def echoing_pod(cri_pods, monkeypatch):
    """A pod container that prints its DB_PASSWORD bare, and a snapshot of it from the real CRI endpoint."""
    secret = f"plain{uuid.uuid4().hex[:12]}word"  # no token shape: only its value names it
    assert secret in redact_text(f"login refused for {secret}")  # patterns alone would show it
    pod = cri_pods.run("ml-team", f"echo-{uuid.uuid4().hex[:6]}", [ContainerSpec(
        "main", ["sh", "-c", 'echo "epoch 1 loss 0.5"; echo "login refused for $DB_PASSWORD"; exec sleep 600'],
        env={"DB_PASSWORD": secret})])
    cid = pod.containers["main"]
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", cri_pods.node.endpoint)
    sampler = Sampler(ProbeOptions(nvml=False, cri_endpoint=cri_pods.node.endpoint, watch_events=False))
    try:
        wait_for(lambda: (c := sampler.sweep().container(cid)) is not None and c.config.log_path is not None
                 and "login refused" in open(c.config.log_path).read(), what="the pod's log")
        snap = sampler.sweep()
    finally:
        sampler.close()
    return dict(snap=snap, cid=cid, secret=secret)


async def _open_logs(pilot, app: MltopApp, cid: str) -> None:
    """The container's row selected on the dashboard, then `l`."""
    await until(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.table.move_to_key(cid),
                what="the pod container's row")
    await pilot.press("l")
    await until(pilot, lambda: isinstance(app.screen, LogsScreen), what="the log screen")


async def test_the_log_pane_scrubs_the_pods_own_secret_values(echoing_pod):
    snap, cid, secret = echoing_pod["snap"], echoing_pod["cid"], echoing_pod["secret"]
    app = MltopApp(source=StaticSource([snap]), nvml=False, interval=0.5,
                   docker_host="unix:///nonexistent/mltop-test.sock")
    async with app.run_test(size=SIZE) as pilot:
        await _open_logs(pilot, app, cid)
        pane = app.screen.query_one(LogPane)
        await until(pilot, lambda: any("login refused" in line for line in pane.shown_lines), timeout=20,
                    what="the pod's log lines")
        assert f"login refused for {REDACTED}" in pane.shown_lines
        assert "epoch 1 loss 0.5" in pane.shown_lines
        assert not any(secret in line for line in pane.shown_lines)
        assert pane.error is None


async def test_the_log_pane_withholds_a_pods_log_when_its_secrets_cannot_be_read(echoing_pod, monkeypatch, tmp_path):
    """The runtime that named the pod no longer answers (its socket is gone): no line is shown, and the pane says
    why in the words the Docker path uses."""
    snap, cid, secret = echoing_pod["snap"], echoing_pod["cid"], echoing_pod["secret"]
    gone = f"unix://{tmp_path}/gone.sock"
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", gone)
    sources = tuple(dataclasses.replace(s, endpoint=gone) if s.kind == "cri" else s for s in snap.host.sources)
    snap = dataclasses.replace(snap, host=dataclasses.replace(snap.host, sources=sources))
    app = MltopApp(source=StaticSource([snap]), nvml=False, interval=0.5,
                   docker_host="unix:///nonexistent/mltop-test.sock")
    async with app.run_test(size=SIZE) as pilot:
        await _open_logs(pilot, app, cid)
        pane = app.screen.query_one(LogPane)
        await until(pilot, lambda: pane.error is not None, timeout=20, what="the pane's refusal")
        assert pane.error.startswith(SECRETS_UNREADABLE) and "gone.sock" in pane.error
        await pilot.pause(1.5)  # a follow poll or two: still nothing shown
        assert len(pane.lines) == 0 and pane.shown_lines == []
        status = str(app.screen.query_one(".log-status").render())
        assert SECRETS_UNREADABLE in status and secret not in status
