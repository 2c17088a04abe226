"""The report's pod section on real pods (the private containerd): each pod's namespace, name, UID, QoS class,
labels and annotations; per container its state, restarts, GPUs allocated (the test's pod-resources server)
beside GPUs used (the simulated NVML listing the pods' real host PIDs), its findings (an OOM-killed child, an
allocation nobody uses, a GPU used without one) and its log tail from the kubelet's file. In JSON, Markdown and
HTML, through build_report and through `mltop report`; secrets from the pod's environment, command line and log
never appear, hostile labels and log lines stay inert."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest
from cri_harness import ContainerSpec
from fakenvml import FakeGpu, FakeProcess, FakeScenario, write_scenario
from pod_resources_server import PodResourcesServer

from conftest import wait_for

GIB = 1 << 30
GPU_A = "GPU-a1000000-0000-0000-0000-00000000000a"  # allocated to trainer/main, which uses it
GPU_B = "GPU-b1000000-0000-0000-0000-00000000000b"  # allocated to trainer/loader, used by nobody
GPU_C = "GPU-c1000000-0000-0000-0000-00000000000c"  # used by trainer/loader, allocated to nobody
WINDOW_S = 1.0
HOSTILE = "[bold]x[/] <script>alert(1)</script> \x1b[31mred\x1b[0m"


def _secrets() -> dict[str, str]:
    """Fresh values each run, so that no fixed string can make the test pass by accident."""
    h = uuid.uuid4().hex + uuid.uuid4().hex
    return {
        "HF_TOKEN": "hf_" + h[:34],
        "AWS_SECRET_ACCESS_KEY": h[:20] + "/K7MDENG+" + h[20:31],  # 40 chars, no token shape of its own
        "DB_PASSWORD": "pw-" + h[5:19],  # also on the command line as --password=
        "ANNOTATION_TOKEN": "tok" + h[40:56],  # only in an annotation with a secret-looking name
    }


# The trainer's main container: prints its secrets (one bare, in no known shape), its --password= argument, and
# a hostile line with markup, HTML and a terminal escape; then sleeps.
_MAIN = (
    'echo "epoch 1 loss 0.5"; echo "config HF_TOKEN $HF_TOKEN"; echo "$AWS_SECRET_ACCESS_KEY"; '
    'echo "connecting with $1"; echo "db $DB_PASSWORD"; '
    "printf '\\033[31mred [bold]x[/] <script>alert(1)</script>\\033[0m\\n'; exec sleep 600"
)


@pytest.fixture(scope="module")
def reported(cri_node, fake_nvml_lib, tmp_path_factory):
    """Two real pods (a trainer with a GPU worker and an OOM-killed loader, a quiet look-alike), the kubelet's
    allocations, the simulated GPUs with the pods' PIDs; two sweeps, the doctor, and the report's document."""
    from mltop.diagnostics.checks import Thresholds
    from mltop.diagnostics.doctor import run_doctor
    from mltop.diagnostics.report import build_report
    from mltop.probes.sampler import ProbeOptions, Sampler

    secrets = _secrets()
    kubelet = PodResourcesServer()
    pods = {}
    sampler = None
    try:
        pods["trainer"] = cri_node.run_pod("ml-team", "trainer", [
            ContainerSpec("main", ["sh", "-c", _MAIN, "trainer", f"--password={secrets['DB_PASSWORD']}"],
                          env={k: secrets[k] for k in ("HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD")}),
            # `tail /dev/zero` buffers a line that never ends until the cgroup's limit kills it
            ContainerSpec("loader", ["sh", "-c", "tail /dev/zero; exec sleep 600"], memory_limit_bytes=32 << 20),
            # fails twice (restarted as the kubelet does, below), then runs: CrashLoopBackOff's aftermath
            ContainerSpec("setup", ["sh", "-c", 'echo "setup failed: login refused for $DB_PASSWORD"; exit 3'],
                          env={"DB_PASSWORD": secrets["DB_PASSWORD"]}),
        ], qos="Burstable", labels={"app": "trainer", "note": HOSTILE},
            annotations={"team": "vision", "deploy.secret-token": secrets["ANNOTATION_TOKEN"],
                         "note": f"pulled with {secrets['HF_TOKEN']}"})
        cri_node.crash_loop(pods["trainer"], "setup", 2, command=["sh", "-c", "echo 'setup ok'; exec sleep 600"])
        pods["quiet"] = cri_node.run_pod("ml-team", "quiet", [ContainerSpec("main", ["sleep", "600"])],
                                         qos="BestEffort", labels={"app": "quiet"})
        kubelet.allocations = {
            ("ml-team", "trainer", "main"): [("nvidia.com/gpu", [GPU_A])],
            ("ml-team", "trainer", "loader"): [("nvidia.com/gpu", [GPU_B])],
        }
        main_id, loader_id = pods["trainer"].containers["main"], pods["trainer"].containers["loader"]
        pid = {"main": cri_node.init_pid(main_id), "loader": cri_node.init_pid(loader_id)}
        scenario = tmp_path_factory.mktemp("pod-report") / "scenario.txt"
        write_scenario(scenario, FakeScenario(gpus=[
            FakeGpu(uuid=GPU_A, pci="00000000:1A:00.0", util=60, mem_used=9 * GIB, processes=[
                FakeProcess(pid["main"], used_memory=8 * GIB, sm=60)]),
            FakeGpu(uuid=GPU_B, pci="00000000:1B:00.0"),
            FakeGpu(uuid=GPU_C, pci="00000000:1C:00.0", util=20, mem_used=2 * GIB, processes=[
                FakeProcess(pid["loader"], used_memory=GIB, sm=20)]),
        ]))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLTOP_FAKE_NVML_SCENARIO", str(scenario))
            mp.setenv("MLTOP_CRI_ENDPOINT", cri_node.endpoint)  # where the report asks for the pods' secrets
            sampler = Sampler(ProbeOptions(nvml_lib=str(fake_nvml_lib), cri_endpoint=cri_node.endpoint,
                                           pod_resources_socket=kubelet.endpoint, watch_events=False))
            deadline = time.monotonic() + 30
            while True:  # until the loader's child was OOM-killed, and at least the doctor's window apart
                previous, snap = sampler.sweep_pair(WINDOW_S + 0.1)
                loader = snap.container(loader_id)
                if (loader is not None and (loader.oom_kills or 0) >= 1) or time.monotonic() > deadline:
                    break
            main = snap.container(main_id)
            wait_for(lambda: "<script>" in open(main.config.log_path).read(), what="the trainer's log")
            names = [c.name for c in snap.containers if c.kubernetes is not None
                     and any(c.id in p.containers.values() for p in pods.values())]
            doctor = run_doctor(snap, sampler.engine, containers=names, previous=previous,
                                thresholds=Thresholds(gpu_alloc_unused_s=WINDOW_S))
            doc = build_report(snap, sampler.engine, doctor, containers=names)
            yield dict(doc=doc, snap=snap, doctor=doctor, names=names, pods=pods, secrets=secrets, kubelet=kubelet,
                       scenario=str(scenario), lib=str(fake_nvml_lib), engine=sampler.engine, node=cri_node)
    finally:
        if sampler is not None:
            sampler.close()
        for pod in pods.values():
            cri_node.remove_pod(pod)
        kubelet.stop()


def _assert_clean(text: str, secrets: dict[str, str], where: str) -> None:
    for name, value in secrets.items():
        assert value not in text, f"{name} leaked into {where}"


def _pod(doc, name):
    (pod,) = [p for p in doc["pods"] if p["pod"] == name]
    return pod


def _container(pod, name):
    (c,) = [c for c in pod["containers"] if c["container"] == name]
    return c


def test_the_json_report_has_each_pod_with_its_containers(reported):
    from mltop.probes.redaction import REDACTED

    doc, pods = reported["doc"], reported["pods"]
    assert doc["summary"]["pods"] == 2 and doc["summary"]["containers"] == 4
    trainer = _pod(doc, "trainer")
    assert (trainer["namespace"], trainer["pod_uid"], trainer["qos"]) == ("ml-team", pods["trainer"].uid, "Burstable")
    assert trainer["labels"] == {"app": "trainer", "note": HOSTILE}  # the kubelet's own pod labels are fields
    annotations = trainer["annotations"]
    assert annotations["team"] == "vision" and annotations["deploy.secret-token"] == REDACTED
    assert annotations["note"] == f"pulled with {REDACTED}"
    assert _pod(doc, "quiet")["qos"] == "BestEffort"

    main, loader = _container(trainer, "main"), _container(trainer, "loader")
    assert (main["id"], main["name"], main["state"]) == (pods["trainer"].containers["main"], "ml-team/trainer/main",
                                                         "running")
    assert main["restart_count"] == 0 and main["last_exit"]["exit_code"] is None
    # the restarted container: its third attempt runs; the last exit is its previous attempt's, with that log
    setup = _container(trainer, "setup")
    assert (setup["id"], setup["state"], setup["restart_count"]) == (pods["trainer"].containers["setup"], "running", 2)
    assert setup["last_exit"] == {"attempt": 1, "exit_code": 3, "reason": "Error", "message": None,
                                  "finished_at": setup["previous_attempts"][0]["finished_at"]}
    assert [(a["attempt"], a["exit_code"]) for a in setup["previous_attempts"]] == [(1, 3), (0, 3)]
    previous_tail = setup["previous_log_tail"]
    assert previous_tail["source"].endswith("/setup/1.log") and previous_tail["error"] is None
    assert previous_tail["lines"] == [f"setup failed: login refused for {REDACTED}"]  # its secret, bare
    assert setup["gpus_allocated"] == setup["gpu_use"] == [] and main["previous_log_tail"] is None
    assert main["log_source"].endswith("/main/0.log") and os.path.exists(main["log_source"])
    # GPU allocation beside GPU use: main uses its GPU; loader's sits unused while it runs on another one
    (alloc,) = main["gpus_allocated"]
    assert (alloc["device_id"], alloc["index"], alloc["in_use"], alloc["unused_since"]) == (GPU_A, 0, True, None)
    (use,) = main["gpu_use"]
    assert (use["index"], use["gpu_memory_bytes"], use["sm_percent"]) == (0, 8 * GIB, 60)
    (alloc,) = loader["gpus_allocated"]
    assert (alloc["device_id"], alloc["index"], alloc["in_use"]) == (GPU_B, 1, False) and alloc["unused_since"]
    assert [u["index"] for u in loader["gpu_use"]] == [2]
    assert loader["oom_kills"] >= 1
    # each container's findings, planted ones under the right container, none on the quiet look-alike
    assert {"oom.killed", "k8s.gpu_allocated_unused", "k8s.gpu_used_unallocated"} <= set(loader["findings"])
    assert not {"oom.killed", "k8s.gpu_allocated_unused", "k8s.gpu_used_unallocated"} & set(main["findings"])
    assert _container(_pod(doc, "quiet"), "main")["findings"] == []

    # the log tail, from the kubelet's file, scrubbed of the pod's own secrets even where echoed bare
    (full,) = [c for c in doc["containers"] if c["id"] == main["id"]]
    tail = full["log_tail"]
    assert tail["error"] is None and tail["source"] == main["log_source"]
    assert tail["lines"][:3] == ["epoch 1 loss 0.5", f"config HF_TOKEN {REDACTED}", REDACTED]
    assert f"connecting with --password={REDACTED}" in tail["lines"]
    env = {e["name"]: e["value"] for e in full["config"]["env"]}
    assert env["HF_TOKEN"] == env["AWS_SECRET_ACCESS_KEY"] == env["DB_PASSWORD"] == REDACTED
    assert f"--password={REDACTED}" in full["config"]["command"]
    assert "secrets_unreadable" not in doc["redaction"]


def test_markdown_and_html_show_the_pod_section_and_no_secret(reported, tmp_path):
    from mltop.diagnostics.report import write_report

    doc, secrets, pods = reported["doc"], reported["secrets"], reported["pods"]
    texts = {fmt: write_report(tmp_path / f"report.{fmt}", None, report=doc).read_text(encoding="utf-8")
             for fmt in ("json", "md", "html")}
    for fmt, text in texts.items():
        _assert_clean(text, secrets, f"the {fmt} report")
        assert "\x1b" not in text, fmt  # a terminal escape is written out, never carried raw
        assert pods["trainer"].uid in text and "epoch 1 loss 0.5" in text, fmt

    md = texts["md"]
    pods_part = md[md.index("\n## Pods\n"):md.index("\n## Containers\n")]
    assert "### Pod ml-team/trainer — Burstable" in pods_part and "### Pod ml-team/quiet — BestEffort" in pods_part
    trainer = pods_part[:pods_part.index("### Pod ml-team/quiet")]
    assert "| **Namespace** | ml-team |" in trainer and f"| **Pod UID** | `{pods['trainer'].uid}` |" in trainer
    assert "| `app` | trainer |" in trainer and "| `team` | vision |" in trainer
    # the hostile label: markup and HTML escaped, the escape written out
    assert ("| `note` | \\[bold\\]x\\[/\\] &lt;script&gt;alert(1)&lt;/script&gt; "
            "\\\\x1b\\[31mred\\\\x1b\\[0m |") in trainer
    row = next(line for line in trainer.splitlines() if line.startswith("| setup |"))
    assert row.startswith("| setup | running | 2 | attempt 1: exit code 3 (Error) at 20") and "| none | none |" in row
    assert "setup: the previous attempt's log (last 1 lines of " in trainer
    assert "setup failed: login refused for [REDACTED]" in trainer and "setup ok" in trainer
    row = next(line for line in trainer.splitlines() if line.startswith("| loader |"))
    assert "GPU 1" in row and "GPU 2" in row and "oom.killed" in row and "OOM kill(s)" in row
    assert re.search(r"^\| main \| running \| 0 \| . \| GPU 0 \| GPU 0 \| `[^`]*` \|$", trainer, re.M), trainer
    alloc = {line.split(" | ")[1]: line for line in trainer.splitlines()
             if line.startswith(("| main | ", "| loader | ")) and "allocated" in line}
    assert f"`nvidia.com/gpu {GPU_A}`" in alloc["0"] and "8.0 GiB, 60.0%" in alloc["0"]
    assert alloc["0"].endswith("| allocated and in use |")
    assert "| allocated, unused since 20" in alloc["1"] and alloc["2"].endswith("| used, not allocated |")
    findings = trainer[trainer.index("**Findings**"):]
    assert "| ml-team/trainer/loader | `oom.killed` |" in findings
    assert "#### ml-team/trainer/main" in trainer and "Log tail (last" in trainer
    assert "No findings." in pods_part[pods_part.index("### Pod ml-team/quiet"):]
    # pod containers are not listed again among the Docker containers
    assert "None outside the pods above." in md[md.index("\n## Containers\n"):]

    html = texts["html"]
    assert "<script" not in html.lower() and '<h2 id="pods">Pods</h2>' in html
    assert "[bold]x[/] &lt;script&gt;alert(1)&lt;/script&gt; \\x1b[31mred" in html
    assert "Pod ml-team/trainer" in html and "allocated and in use" in html and "used, not allocated" in html
    assert "<p>None outside the pods above.</p>" in html
    from test_report import _parse_html

    _parse_html(html)


def test_secrets_that_cannot_be_read_withhold_the_pod_logs(reported, monkeypatch, tmp_path):
    """The CRI runtime that named the pods is gone by the time the report is written (its socket no longer
    answers): the pods' log tails are withheld (fail closed) and the report says why, as for a Docker container
    whose inspect fails."""
    import dataclasses

    from mltop.diagnostics.report import build_report

    gone = f"unix://{tmp_path}/gone.sock"
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", gone)
    snap = reported["snap"]
    sources = tuple(dataclasses.replace(s, endpoint=gone) if s.kind == "cri" else s for s in snap.host.sources)
    snap = dataclasses.replace(snap, host=dataclasses.replace(snap.host, sources=sources))
    doc = build_report(snap, reported["engine"], reported["doctor"], containers=reported["names"])
    (main,) = [c for c in doc["containers"] if c["name"] == "ml-team/trainer/main"]
    assert main["log_tail"]["lines"] == [] and "not shown: secrets could not be read" in main["log_tail"]["error"]
    setup = _container(_pod(doc, "trainer"), "setup")
    assert setup["previous_log_tail"]["lines"] == [] and "gone.sock" in setup["previous_log_tail"]["error"]
    assert "ml-team/trainer/main" in doc["redaction"]["secrets_unreadable"]
    _assert_clean(json.dumps(doc), reported["secrets"], "the report without the pod's secrets")


def test_the_doctor_reads_no_pod_log_whose_secrets_cannot_be_read(reported, monkeypatch, tmp_path):
    """As the report and the log pane: with the runtime gone, the doctor does not judge and quote a pod's log
    scrubbed by pattern only (a secret echoed bare would pass); it says which logs it did not read, and why."""
    import dataclasses

    from mltop.diagnostics.doctor import run_doctor

    gone = f"unix://{tmp_path}/gone.sock"
    monkeypatch.setenv("MLTOP_CRI_ENDPOINT", gone)
    snap = reported["snap"]
    sources = tuple(dataclasses.replace(s, endpoint=gone) if s.kind == "cri" else s for s in snap.host.sources)
    snap = dataclasses.replace(snap, host=dataclasses.replace(snap.host, sources=sources))
    result = run_doctor(snap, reported["engine"], containers=reported["names"])
    skipped = {name: s.reason for s in result.checks_skipped if s.check == "logs" for name in s.containers}
    assert "ml-team/trainer/main" in skipped, result.checks_skipped
    assert "secrets could not be read" in skipped["ml-team/trainer/main"]
    _assert_clean(json.dumps([dataclasses.asdict(f) for f in result.findings], default=str), reported["secrets"],
                  "the doctor without the pod's secrets")


def test_mltop_report_writes_the_pod_section_without_the_docker_engine(reported, tmp_path):
    """The real CLI, with the Docker engine unreachable: the pods come from the CRI, the allocations from the
    kubelet's socket, the GPU use from NVML; the report holds them and no secret."""
    out = tmp_path / "pods.md"
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/dead.sock",
           "MLTOP_FAKE_NVML_SCENARIO": reported["scenario"]}
    env.pop("MLTOP_CRI_ENDPOINT", None)
    done = subprocess.run(
        [sys.executable, "-m", "mltop.tui.cli", "--cri-endpoint", reported["node"].endpoint,
         "--pod-resources-socket", reported["kubelet"].endpoint, "--nvml-lib", reported["lib"], "--interval", "0.5",
         "report", "-o", str(out), "ml-team/trainer/main", "ml-team/trainer/loader"],
        capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out.resolve())
    md = out.read_text(encoding="utf-8")
    _assert_clean(md, reported["secrets"], "mltop report's Markdown")
    assert "### Pod ml-team/trainer — Burstable" in md and reported["pods"]["trainer"].uid in md
    assert "allocated and in use" in md and "epoch 1 loss 0.5" in md
    assert "`oom.killed`" in md[md.index("\n## Pods\n"):]
    assert "None outside the pods above." in md
