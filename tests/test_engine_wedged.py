"""A wedged engine: dockerd still lists its containers and never answers their inspects (seen on the shared test
engine after a burst of removals). The sweep must not wait on it past a deadline nor fail whole: the containers
the list named stay, provisional, with why; the others are judged; and once the engine answers again they are
inspected. The proxy holds only the inspects of this test's own container, so whatever else runs on the shared
engine is inspected as usual."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import wait_for
from engine_proxy import EngineSocketProxy
from serve_helpers import ServeProcess


def _hold_inspects_of(container_id: str) -> re.Pattern[str]:
    return re.compile(rf"GET /v[\d.]+/containers/{container_id[:12]}[0-9a-f]*/json")


def test_a_snapshot_lists_a_container_whose_inspect_never_answers_and_says_why(containers, tmp_path):
    stuck = containers.run(["sleep", "300"])
    well = containers.run(["sleep", "300"])
    proxy = EngineSocketProxy(tmp_path / "docker.sock", hold=_hold_inspects_of(stuck.id)).start()
    try:
        run = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "snapshot", "--json", "--no-nvml",
                              "--docker-host", proxy.docker_host], capture_output=True, text=True, timeout=120)
    finally:
        proxy.stop()
    assert proxy.held, "the proxy never saw the inspect it was to hold"
    # before: every sweep waited for the engine's 10 s timeout and failed whole ("did not answer in time", exit 3)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    by_id = {c["id"]: c for c in doc["containers"]}
    assert by_id[stuck.id]["config_pending"] is True
    assert "no answer within 5 s: the engine lists its containers" in by_id[stuck.id]["config_error"]
    assert f"docker inspect {stuck.id[:12]}" in by_id[stuck.id]["config_error"]
    assert by_id[well.id]["config_pending"] is False and by_id[well.id]["config_error"] is None
    assert by_id[well.id]["config"]["command"] == ["sleep", "300"]


def test_the_catalog_inspects_the_container_once_the_engine_answers_again(containers, tmp_path):
    from mltop.probes.catalog import ContainerCatalog
    from mltop.probes.engine import Engine

    stuck = containers.run(["sleep", "300"])
    proxy = EngineSocketProxy(tmp_path / "docker.sock", hold=_hold_inspects_of(stuck.id)).start()
    catalog = ContainerCatalog(Engine(proxy.docker_host, timeout_s=2.0), watch_events=False)
    catalog.inspect_deadline_s = 1.0
    try:
        meta = {m.id: m for m in catalog.containers()}[stuck.id]
        assert meta.provisional and "no answer within 1 s" in meta.inspect_error
        # a later sweep does not wait for the same stuck inspect again, and does not fail
        assert {m.id: m for m in catalog.containers()}[stuck.id].provisional
        proxy.hold = None  # the engine recovers: the held request timed out, the next full list asks again
        wait_for(lambda: not {m.id: m for m in catalog.containers()}[stuck.id].provisional, timeout=30,
                 what="the container inspected once the engine answers")
        meta = {m.id: m for m in catalog.containers()}[stuck.id]
        assert meta.inspect_error is None and meta.config.command == ("sleep", "300")
    finally:
        catalog.close()
        proxy.stop()


def test_serve_becomes_healthy_beside_a_wedged_inspect(containers, tmp_path):
    stuck = containers.run(["sleep", "300"])
    proxy = EngineSocketProxy(tmp_path / "docker.sock", hold=_hold_inspects_of(stuck.id)).start()
    serve = ServeProcess("--interval", "0.5", "--doctor-interval", "0", "--no-nvml",
                         "--docker-host", proxy.docker_host)
    try:
        serve.wait_healthy(timeout=60)  # before: "No sweep has finished yet" (503) for as long as the wedge lasted
        status, body = serve.get("/snapshot.json")
        assert status == 200
        listed = {c["id"]: c for c in json.loads(body)["containers"]}
        assert listed[stuck.id]["config_pending"] is True
    finally:
        serve.stop()
        proxy.stop()
