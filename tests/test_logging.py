"""Errors never vanish: soft failures are logged with their exception, to --log-file at $MLTOP_LOG's level,
and a dead Docker events watcher is surfaced in the snapshot (the header shows host limitations)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from mltop.probes.catalog import ContainerCatalog
from mltop.probes.model import EngineStatus
from mltop.probes.sampler import Sampler


def test_log_file_gets_the_engine_error_at_the_level_mltop_log_names(tmp_path):
    log_file = tmp_path / "mltop.log"
    env = {**os.environ, "MLTOP_LOG": "info"}
    env.pop("MLTOP_LOG_FILE", None)
    done = subprocess.run(
        [sys.executable, "-m", "mltop.tui.cli", "--log-file", str(log_file), "snapshot", "--json", "--no-nvml",
         "--docker-host", "unix:///nonexistent/docker.sock", "--interval", "0.25"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 3, done.stderr
    text = log_file.read_text()
    assert "INFO mltop.probes.sampler" in text and "unix:///nonexistent/docker.sock" in text
    assert "INFO" not in done.stderr  # the file took it, not the terminal


def test_without_mltop_log_info_is_not_written(tmp_path):
    log_file = tmp_path / "mltop.log"
    env = {k: v for k, v in os.environ.items() if k not in ("MLTOP_LOG", "MLTOP_LOG_FILE")}
    subprocess.run(
        [sys.executable, "-m", "mltop.tui.cli", "--log-file", str(log_file), "snapshot", "--json", "--no-nvml",
         "--docker-host", "unix:///nonexistent/docker.sock", "--interval", "0.25"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert "INFO" not in log_file.read_text()  # warnings and worse only, by default


class _FailingEvents:
    """An engine whose listing works and whose events stream breaks at once."""

    docker_host = "unix:///var/run/docker.sock"

    def list_containers(self):
        return []

    def events(self, since=None):
        raise ConnectionError("events stream reset by peer")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def test_a_dead_events_watcher_is_surfaced_as_a_limitation():
    # A handler on the module's own logger: in-process CLI runs may have configured the `mltop` logger
    # not to propagate, which pytest's caplog (on the root logger) relies on.
    records = _Records()
    logger = logging.getLogger("mltop.probes.engine_events")
    logger.addHandler(records)
    try:
        catalog = ContainerCatalog(_FailingEvents())  # type: ignore[arg-type]
        catalog.containers()
        catalog.start_background_work()  # as the sampler does once its sweep has read the cgroups
        deadline = time.monotonic() + 5
        while catalog.watch_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        logger.removeHandler(records)
    assert catalog.watch_error == "ConnectionError: events stream reset by peer"
    assert any(r.exc_info and "events watcher failed" in r.getMessage() for r in records.records)

    sampler = Sampler.__new__(Sampler)  # only the catalog is needed to word the limitation
    sampler.catalog = catalog
    (note,) = sampler._watch_limitations(EngineStatus("ok", None, "unix:///var/run/docker.sock"))
    assert "events watcher failed (ConnectionError: events stream reset by peer)" in note
    assert sampler._watch_limitations(EngineStatus("unreachable", "down", "x")) == ()
    catalog.close()
