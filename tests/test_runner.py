"""The action runner ends only processes that are provably the container's, and secrets fail closed.

No engine needed: a stand-in engine object plays the Docker API's part (exec_create / exec_start /
exec_inspect / inspect), the processes it reports are real local processes this test starts.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from builders import container, snapshot

from mltop.diagnostics.actions import ActionLog, ActionRun, runner
from mltop.diagnostics.actions.runner import (
    StepControl,
    end_container_process,
    engine_is_local,
    exec_in_container,
)
from mltop.diagnostics.read_test import timed_direct_read
from mltop.diagnostics.report import build_report
from mltop.probes.engine import Engine, EngineError, SecretsUnreadable
from mltop.probes.redaction import REDACTED, SECRETS_UNREADABLE, ContainerSecrets
from mltop.probes.identity import CgroupIdentity

CONTAINER_ID = "c" * 64


class _BlockingStream:
    """An exec output stream that never ends until closed, like a command that hangs."""

    def __init__(self):
        self._closed = threading.Event()

    def __iter__(self):
        while not self._closed.wait(0.02):
            pass
        return
        yield

    def close(self):
        self._closed.set()


class _Api:
    def __init__(self, pid: int, env: list[str] | None = None, inspect_error: Exception | None = None,
                 output: list[tuple[bytes | None, bytes | None]] | None = None):
        self.pid = pid
        self.env = env or []
        self.inspect_error = inspect_error
        self.output = output
        self.created: list[list[str]] = []

    def exec_create(self, container_id, argv, **kwargs):
        self.created.append(list(argv))
        return {"Id": "e" * 64}

    def exec_start(self, exec_id, stream=False, demux=False):
        return iter(self.output) if self.output is not None else _BlockingStream()

    def exec_inspect(self, exec_id):
        return {"Pid": self.pid, "Running": self.output is None, "ExitCode": 0}

    def inspect_container(self, container_id):
        if self.inspect_error is not None:
            raise self.inspect_error
        return {"Config": {"Env": self.env}}


class _Client:
    def __init__(self, api: _Api):
        self.api = api


class FakeEngine(Engine):
    """The real Engine's logic (secrets, logs) over a stand-in client."""

    def __init__(self, docker_host: str, api: _Api):
        super().__init__(docker_host)
        self._fake = _Client(api)

    @property
    def client(self):
        return self._fake

    def call(self, fn, *args, **kwargs):
        return fn(self._fake, *args, **kwargs)


@pytest.fixture
def local_process():
    """A local process mltop started: the PID a remote engine's exec might report by coincidence."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def pid_claims_container(monkeypatch):
    """/proc/<pid>/cgroup made to name the container for any PID: only the remote check is left to refuse."""
    monkeypatch.setattr(runner, "identity_of_pid", lambda pid: CgroupIdentity("docker", CONTAINER_ID))


@pytest.mark.parametrize("host", ["ssh://gpu-box", "tcp://10.0.0.5:2376", "https://gpu-box:2376"])
def test_a_remote_engines_exec_pid_is_never_signalled_here(local_process, pid_claims_container, host):
    engine = FakeEngine(host, _Api(pid=local_process.pid))
    assert not engine_is_local(engine)
    outcome = exec_in_container(engine, CONTAINER_ID, ["sleep", "100"], StepControl.within(0.2))
    assert outcome.timed_out and outcome.still_running
    time.sleep(0.1)
    assert local_process.poll() is None, "a local process was killed for a remote engine's PID"


def test_a_local_engines_pid_in_the_container_is_ended(local_process, pid_claims_container):
    """The other side of the two tests around it: when both checks pass, the process is ended."""
    engine = FakeEngine("unix:///var/run/docker.sock", _Api(pid=local_process.pid))
    outcome = exec_in_container(engine, CONTAINER_ID, ["sleep", "100"], StepControl.within(0.2))
    assert outcome.timed_out and not outcome.still_running
    assert local_process.wait(timeout=5) == -9


def test_a_local_engines_pid_outside_the_container_is_left_alone(local_process):
    """Local engine, but /proc/<pid>/cgroup does not name the container: no signal."""
    engine = FakeEngine("unix:///var/run/docker.sock", _Api(pid=local_process.pid))
    assert engine_is_local(engine)
    assert end_container_process(engine, local_process.pid, CONTAINER_ID) is False
    outcome = exec_in_container(engine, CONTAINER_ID, ["sleep", "100"], StepControl.within(0.2))
    assert outcome.timed_out and outcome.still_running
    assert local_process.poll() is None


def test_the_read_tests_clean_up_goes_through_the_runner(local_process, pid_claims_container):
    engine = FakeEngine("tcp://10.0.0.5:2376", _Api(pid=local_process.pid))
    result = timed_direct_read(engine, CONTAINER_ID, "/data/x", max_mb=1, timeout_s=0.3)
    assert result.timed_out and not result.ok
    assert local_process.poll() is None


def test_a_timed_out_action_on_a_remote_engine_says_it_may_still_run(local_process, pid_claims_container):
    api = _Api(pid=local_process.pid)
    engine = FakeEngine("ssh://gpu-box", api)
    snap = snapshot(containers=[container("trainer", id=CONTAINER_ID)])
    run = ActionRun("nvidia-smi", snap, CONTAINER_ID, engine, timeout_s=0.3)
    result = run.run()
    assert result.status == "timeout"
    assert "may still be running" in result.explanation
    assert local_process.poll() is None


# -- secrets fail closed ----------------------------------------------------------------------------------


def test_secrets_known_scrub_a_bare_echo():
    api = _Api(pid=0, env=["HF_TOKEN=plain-value-123456", "PATH=/bin"],
               output=[(b"token is plain-value-123456\n", None)])
    engine = FakeEngine("unix:///var/run/docker.sock", api)
    secrets = engine.container_secrets(CONTAINER_ID)
    assert secrets.known and secrets.values == {"plain-value-123456"}
    snap = snapshot(containers=[container("trainer", id=CONTAINER_ID)])
    result = ActionRun("nvidia-smi", snap, CONTAINER_ID, engine, timeout_s=5).run()
    assert result.status == "ok"
    assert result.output == f"token is {REDACTED}"


def test_secrets_unreadable_withhold_action_output():
    api = _Api(pid=0, inspect_error=EngineError("unreachable", "the engine went away"),
               output=[(b"token is plain-value-123456\n", None)])
    engine = FakeEngine("unix:///var/run/docker.sock", api)
    secrets = engine.container_secrets(CONTAINER_ID)
    assert not secrets.known and secrets.error == "the engine went away"
    snap = snapshot(containers=[container("trainer", id=CONTAINER_ID)])
    result = ActionRun("nvidia-smi", snap, CONTAINER_ID, engine, timeout_s=5, log=ActionLog()).run()
    assert result.status == "unavailable"
    assert SECRETS_UNREADABLE in result.explanation
    assert result.output == "" and api.created == []  # nothing ran, nothing shown


def test_secrets_unreadable_withhold_logs_and_are_not_cached():
    api = _Api(pid=0, inspect_error=OSError("connection reset"))
    engine = FakeEngine("unix:///var/run/docker.sock", api)
    with pytest.raises(SecretsUnreadable) as err:
        engine.logs(CONTAINER_ID)
    assert err.value.message.startswith(SECRETS_UNREADABLE)
    api.inspect_error = None
    api.env = ["API_KEY=abcdef123456"]
    assert engine.container_secrets(CONTAINER_ID) == ContainerSecrets(frozenset({"abcdef123456"}))


def test_a_report_says_which_containers_secrets_were_unreadable():
    api = _Api(pid=0, inspect_error=OSError("connection reset"))
    engine = FakeEngine("unix:///var/run/docker.sock", api)
    snap = snapshot(containers=[container("trainer", id=CONTAINER_ID)])
    report = build_report(snap, engine, log_lines=10)
    assert report["redaction"]["secrets_unreadable"] == ["trainer"]
    (doc,) = report["containers"]
    assert doc["log_tail"]["lines"] == [] and SECRETS_UNREADABLE in doc["log_tail"]["error"]


class _NoCallsEngine:
    """An engine that must not be asked for anything: under --no-exec nothing reaches the Docker API."""

    docker_host = "unix:///var/run/docker.sock"

    def call(self, fn):
        raise AssertionError("docker exec was attempted under --no-exec")


def test_no_exec_refuses_every_exec_before_the_engine_is_asked(monkeypatch):
    monkeypatch.setenv("MLTOP_NO_EXEC", "1")
    outcome = exec_in_container(_NoCallsEngine(), CONTAINER_ID, ["nvidia-smi"], StepControl.within(5.0))
    assert outcome.error and "MLTOP_NO_EXEC=1 forbids docker exec" in outcome.error
    monkeypatch.delenv("MLTOP_NO_EXEC")
    allowed = exec_in_container(_NoCallsEngine(), CONTAINER_ID, ["nvidia-smi"], StepControl.within(5.0))
    assert "attempted under --no-exec" in allowed.error  # without the policy, the engine is asked


def test_no_exec_on_the_command_line_reaches_mltop_run(containers, monkeypatch):
    """`mltop --no-exec run nvidia-smi C` says why it ran nothing, and the engine saw no exec."""
    monkeypatch.delenv("MLTOP_NO_EXEC", raising=False)
    c = containers.run(["sleep", "300"])
    done = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "--no-exec", "--no-nvml", "run", "nvidia-smi",
                           c.name], capture_output=True, text=True, timeout=120)
    assert "forbids docker exec" in done.stdout + done.stderr, done.stdout + done.stderr
    c.reload()
    assert not c.attrs.get("ExecIDs")
