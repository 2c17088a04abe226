"""Constructing a dashboard app changes nothing in the process; `mltop`'s factory makes the start-up tuning
(collector off until the first full frame, open-file limit, the first sweep before Textual starts)."""

from __future__ import annotations

import gc
import resource
import threading

import pytest

from conftest import until

from mltop.probes.source import StaticSource
from mltop.tui.app import MltopApp
from mltop.tui.cli.dashboard import make_dashboard_app
from mltop.tui.startup import GC_YOUNG_THRESHOLD

from builders import container, snapshot


def process_state():
    return gc.isenabled(), gc.get_threshold(), threading.active_count(), resource.getrlimit(resource.RLIMIT_NOFILE)


@pytest.fixture
def low_file_limit():
    """A soft open-file limit below what the tuning asks for, so that raising it shows; restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    threshold = gc.get_threshold()
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    gc.set_threshold(*threshold)
    gc.unfreeze()
    gc.enable()


@pytest.mark.parametrize("kind", ["live", "built", "replay"])
def test_constructing_an_app_changes_nothing_in_the_process(kind, low_file_limit, tmp_path):
    if kind == "replay":
        from test_recorder import synthetic
        from mltop.probes.recording import RecordingSource

        synthetic(str(tmp_path / "h.db"), sweeps=3).close()
        source = RecordingSource(str(tmp_path / "h.db"))
    else:
        source = None if kind == "live" else StaticSource([snapshot([container("job")])])
    before = process_state()
    app = MltopApp(nvml=False, source=source)
    assert process_state() == before
    assert app.snapshot is None  # and no first sweep was taken behind its back
    app.source.close()


async def test_the_dashboard_factory_tunes_until_the_first_full_frame(containers, low_file_limit):
    containers.run(["sleep", "300"])
    soft_before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert gc.isenabled()
    app = make_dashboard_app(nvml=False, interval=0.5)
    # Before Textual starts: the collector is off, the limit raised, the first sweep taken (or under way)
    assert not gc.isenabled()
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > soft_before
    assert app._first_sweep is not None
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: app.first_frame_s is not None, what="the first full frame")
        await until(pilot, gc.isenabled, what="the collector back on")
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert app.sweeps >= 1
