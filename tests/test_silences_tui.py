"""`s` in the diagnostics screen at 80x24: a real container's finding silenced from the box, then shown dimmed with
its reason and end, and out of the counts; refused in replay with the reason."""

from __future__ import annotations

import os
import time

from conftest import until, wait_for
from test_tui import dashboard, make_app
from test_tui_replay_safe import RecordingNotes, record_real_container

from mltop.probes.recording import RecordingSource
from mltop.probes.recording.silences import SilenceBook
from mltop.tui.app import MltopApp
from mltop.tui.screens.diagnostics import DiagnosticsScreen, FindingView
from mltop.tui.screens.silence import SilenceScreen

SIZE = (80, 24)


def shm_full(containers, docker_client, role: str):
    c = containers.run(["sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=100; exec sleep 600"],
                       name=f"mltop-silence-tui-{role}-{os.getpid()}")
    wait_for(lambda: b"No space left" in docker_client.containers.get(c.id).logs(), what="/dev/shm full")
    return c


async def test_s_silences_a_finding_and_it_shows_dimmed_with_its_reason(containers, docker_client, tmp_path):
    c = shm_full(containers, docker_client, "live")
    path = str(tmp_path / "history.db")
    app = make_app(silences=path)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: dashboard(app).table.move_to_key(c.id), what="the container's row")
        await pilot.pause()
        await pilot.press("d")
        screen = app.screen
        assert isinstance(screen, DiagnosticsScreen)
        await until(pilot, lambda: screen.result is not None, what="the doctor")
        assert any(f.code == "shm.too_small" and f.container == c.name for f in screen.result.findings)
        views = list(screen.query(FindingView))
        for _ in range(len(views)):  # ↓ moves the cursor from finding to finding
            if isinstance(screen.focused, FindingView) and screen.focused.finding.code == "shm.too_small":
                break
            await pilot.press("down")
        assert isinstance(screen.focused, FindingView) and screen.focused.finding.code == "shm.too_small"
        await pilot.press("s")
        box = app.screen
        assert isinstance(box, SilenceScreen)
        assert box.targets[0] == (c.name, f"this container: {c.name}")
        await pilot.press(*"OPS-9 [b]new image")  # the reason has the focus; the duration says 2h
        box.query_one("#silence-for").focus()
        await pilot.press("end", "backspace", "backspace", *"soon", "enter")  # refused in the box, with why
        assert app.screen is box and "not a duration" in str(box.query_one("#silence-error").render())
        await pilot.press(*["backspace"] * 4)
        await pilot.press(*"30m", "enter")
        await until(pilot, lambda: app.screen is screen and screen.result is not None and any(
            f.code == "shm.too_small" and f.silenced is not None for f in screen.result.findings),
            what="the finding silenced after the re-run")
        text = screen.findings_text
        assert "silenced until" in text and "OPS-9 [b]new image" in text
        assert any("-silenced" in v.classes for v in screen.query(FindingView) if v.finding.code == "shm.too_small")
        status = str(screen.query_one("#diag-status").render())
        assert "1 silenced" in status and "! 0 warning" in status
    [s] = SilenceBook(path).active()
    assert (s.code, s.target, s.reason) == ("shm.too_small", c.name, "OPS-9 [b]new image")
    assert 29 * 60 < s.until - time.time() <= 30 * 60


async def test_s_is_refused_in_replay_with_the_reason(containers, docker_client, sampler, tmp_path):
    c = shm_full(containers, docker_client, "replay")
    path = str(tmp_path / "h.db")
    record_real_container(path, sampler)
    app = MltopApp(nvml=False, source=RecordingSource(path))
    notes = RecordingNotes(app)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is not None and app.snapshot.container(c.id) is not None,
                    what="the recorded container")
        await pilot.press("d")
        screen = app.screen
        assert isinstance(screen, DiagnosticsScreen)
        await pilot.press("s")
        await pilot.pause()
        assert app.screen is screen  # no box
        assert any("Replay" in m and "silences are set on the live host" in m for m in notes.messages), notes.messages
    assert SilenceBook(path).all() == []
