"""Files mltop writes never follow a link another user planted (issue 27, point 3).

Each test plants, in a directory every user may write to, a symbolic link owned by `nobody` (uid 65534) that
points at a root-owned 0600 file, then runs the real command (`mltop report -o`, `mltop serve --record`, the
Recorder, `--log-file`, the dashboard's action output) and checks the target is untouched (content and mode)
and what mltop wrote is 0600. Both a sticky directory (like /tmp) and one without the sticky bit: Linux's
fs.protected_symlinks would refuse to follow a link in a sticky directory on its own, so the non-sticky one
proves mltop's own behaviour wherever that setting is on.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time

import pytest

from mltop.probes import safe_files
from mltop.probes.recording import Recorder

NOBODY = 65534
SECRET = b"root:$6$do-not-touch:19000:0:99999:7:::\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plants links as another user: needs root")


@pytest.fixture(params=[0o1777, 0o777], ids=["sticky", "not-sticky"])
def shared(request, tmp_path):
    """(a world-writable directory, plant(name) -> the link it planted there, the target's checker)."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    target = private / "shadow"
    target.write_bytes(SECRET)
    os.chmod(target, 0o600)
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, request.param)

    def plant(name: str):
        link = directory / name
        os.symlink(target, link)
        os.lchown(link, NOBODY, NOBODY)
        return link

    def untouched():
        info = os.stat(target)
        assert target.read_bytes() == SECRET, "the link's target was written"
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0, oct(info.st_mode)

    return directory, plant, untouched


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _mltop(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLTOP_LOG", "MLTOP_LOG_FILE")}
    return subprocess.run([sys.executable, "-m", "mltop.tui.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_mltop_report_replaces_a_planted_link_and_leaves_its_target_alone(shared):
    directory, plant, untouched = shared
    link = plant("report.json")
    done = _mltop("--no-nvml", "--docker-host", "none", "--interval", "0.25", "report", "--no-doctor",
                  "--log-lines", "0", "-o", str(link))
    assert done.returncode == 0, done.stderr
    untouched()
    assert not os.path.islink(link) and _mode(link) == 0o600  # the link itself was replaced by the report
    assert os.lstat(link).st_uid == 0
    assert "containers" in json.loads(link.read_text())
    assert done.stdout.strip() == str(link)
    assert [p.name for p in directory.iterdir()] == ["report.json"]  # no temporary file left behind


def test_mltop_report_mode_asks_for_more(tmp_path):
    out = tmp_path / "r.md"
    done = _mltop("--no-nvml", "--docker-host", "none", "--interval", "0.25", "report", "--no-doctor",
                  "--log-lines", "0", "--mode", "644", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert _mode(out) == 0o644
    bad = _mltop("report", "--mode", "u+rw", "-o", str(out))
    assert bad.returncode == 2 and "not a file mode" in bad.stderr


def test_report_under_another_users_directory_link_is_refused(tmp_path):
    """The name's directory reached through a link someone else owns: they could point it at /etc."""
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "passwd").write_bytes(SECRET)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o1777)
    link = shared / "out"
    os.symlink(elsewhere, link)
    os.lchown(link, NOBODY, NOBODY)
    done = _mltop("--no-nvml", "--docker-host", "none", "--interval", "0.25", "report", "--no-doctor",
                  "--log-lines", "0", "-o", str(link / "passwd"), "--format", "json")
    assert done.returncode == 3
    assert "symbolic link owned by another user" in done.stderr, done.stderr
    assert (elsewhere / "passwd").read_bytes() == SECRET and os.listdir(elsewhere) == ["passwd"]


def test_a_new_recording_is_0600_in_a_0700_directory(tmp_path):
    path = tmp_path / "state" / "mltop" / "history.db"
    recorder = Recorder(str(path), watch_engine=False).start()
    try:
        assert recorder.status.ok, recorder.status
        _wait_for(lambda: os.path.exists(f"{path}-wal") and os.path.exists(f"{path}-shm"), "the WAL and SHM")
        assert _mode(path.parent) == 0o700
        for name in (path, f"{path}-wal", f"{path}-shm", f"{path}.lock"):
            assert _mode(name) == 0o600, name
    finally:
        recorder.close()


@pytest.mark.parametrize("planted", ["history.db", "history.db.lock", "history.db-wal", "history.db-shm"])
def test_the_recorder_refuses_a_planted_link(shared, planted):
    directory, plant, untouched = shared
    plant(planted)
    # A handler on mltop's own logger, not caplog's on the root: an in-process CLI run earlier in the session
    # may have configured the `mltop` logger not to propagate (tests/test_logging.py does the same).
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("mltop")
    logger.addHandler(handler)
    try:
        recorder = Recorder(str(directory / "history.db"), watch_engine=False).start()
    finally:
        logger.removeHandler(handler)
    recorder.close()
    untouched()
    assert recorder.status.state == "error"
    assert "symbolic link" in recorder.status.message and planted in recorder.status.message
    if not stat.S_ISVTX & os.stat(directory).st_mode:
        assert any("writable by every user and has no sticky bit" in w for w in warnings)  # the loose directory


def test_mltop_serve_record_into_a_planted_link_serves_without_recording(shared):
    from serve_helpers import ServeProcess

    directory, plant, untouched = shared
    plant("history.db.lock")
    serve = ServeProcess("--no-nvml", "--docker-host", "none", "--interval", "0.5",
                         "--record", str(directory / "history.db"))
    try:
        serve.wait_healthy(60)
    finally:
        stderr = serve.stop()
    untouched()
    assert "refusing to open" in stderr and "symbolic link" in stderr, stderr
    assert not (directory / "history.db").exists()  # nothing was written beside the planted lock


def test_log_file_through_a_planted_link_is_refused(shared):
    directory, plant, untouched = shared
    link = plant("mltop.log")
    done = _mltop("--log-file", str(link), "serve", "--print-systemd-unit")
    assert done.returncode == 2
    assert "cannot log to" in done.stderr and "symbolic link" in done.stderr, done.stderr
    untouched()


def test_a_new_log_file_is_0600_and_appended_to(tmp_path):
    log = tmp_path / "mltop.log"
    log_env = {**os.environ, "MLTOP_LOG": "info"}
    for _ in range(2):
        subprocess.run([sys.executable, "-m", "mltop.tui.cli", "--log-file", str(log), "snapshot", "--json",
                        "--no-nvml", "--docker-host", "unix:///nonexistent/docker.sock", "--interval", "0.25"],
                       capture_output=True, text=True, timeout=60, env=log_env)
    assert _mode(log) == 0o600
    assert log.read_text().count("unix:///nonexistent/docker.sock") >= 2  # the second run appended


def test_the_dashboards_action_output_replaces_a_planted_link(shared, monkeypatch):
    from mltop.tui.screens.actions import write_output

    directory, plant, untouched = shared
    link = plant("mltop-py-spy-trainer.txt")
    monkeypatch.chdir(directory)
    written = write_output("Thread 1 (idle)\n", link.name)
    untouched()
    assert written == link and not os.path.islink(link) and _mode(link) == 0o600
    assert link.read_text() == "Thread 1 (idle)\n"


def test_open_private_refuses_a_hard_link_and_a_fifo_without_hanging(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(SECRET)
    os.link(victim, tmp_path / "second-name")
    with pytest.raises(safe_files.UnsafeFile, match="hard links"):
        safe_files.open_append(tmp_path / "second-name")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(safe_files.UnsafeFile, match="not a regular file"):
        safe_files.open_append(tmp_path / "fifo")
    assert victim.read_bytes() == SECRET


def test_the_systemd_unit_keeps_what_it_creates_private():
    done = _mltop("serve", "--print-systemd-unit")
    lines = done.stdout.splitlines()
    assert "UMask=0077" in lines and "StateDirectoryMode=0700" in lines


def _wait_for(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
