"""Exported reports against a real engine: every format holds the host, GPUs, containers, findings, skipped
checks and action outputs, pastes and renders safely, and never carries a secret."""

from __future__ import annotations

import json
import re
import time
import uuid
from html.parser import HTMLParser

import pytest

from conftest import wait_for
from mltop.diagnostics.actions import ActionLog, ActionRun
from mltop.diagnostics.doctor import DoctorResult, SkippedCheck
from mltop.diagnostics.findings import Finding
from mltop.diagnostics.report import (
    REPORT_SCHEMA_VERSION,
    build_report,
    default_report_path,
    format_for_path,
    render_html,
    render_json,
    render_markdown,
    write_report,
)
from mltop.probes.redaction import REDACTED
from mltop.probes.sampler import ProbeOptions, Sampler
from mltop.tui import cli
from mltop.probes.history import History


def _history(*snapshots):
    history = History(len(snapshots))
    for snap in snapshots:
        history.record(snap)
    return history


def _sweeps(sampler, seconds=0.5):
    first = sampler.sweep()
    time.sleep(seconds)
    return first, sampler.sweep()


def _secrets() -> dict[str, str]:
    """Fresh values each run, so that no fixed string can make the test pass by accident."""
    h = uuid.uuid4().hex + uuid.uuid4().hex
    return {
        "HF_TOKEN": "hf_" + h[:34],
        "AWS_SECRET_ACCESS_KEY": h[:20] + "/K7MDENG+" + h[20:31],  # 40 chars, no token shape of its own
        "GITHUB_TOKEN": "ghp_" + h[:36],
        "DB_PASSWORD": "pw-" + h[5:19],
        "DATABASE_URL_PASSWORD": "dbpw" + h[40:52],  # only ever inside the URL below
        "SLACK": "xoxb-123456789012-1234567890123-" + h[10:34],
        "CLI_TOKEN": "cli" + h[30:50],
    }


@pytest.fixture
def leaky_container(containers):
    """A Python container whose environment, command line and logs all hold secrets."""
    s = _secrets()
    env = {
        "HF_TOKEN": s["HF_TOKEN"],
        "AWS_SECRET_ACCESS_KEY": s["AWS_SECRET_ACCESS_KEY"],
        "GITHUB_TOKEN": s["GITHUB_TOKEN"],
        "DB_PASSWORD": s["DB_PASSWORD"],
        "DATABASE_URL": f"postgres://trainer:{s['DATABASE_URL_PASSWORD']}@db.internal:5432/runs",
        "NOTIFY_CHANNEL": s["SLACK"],  # a token in a variable whose name does not look secret
        "LEARNING_RATE": "0.001",
    }
    program = (
        "import os, time\n"
        "for k in ('HF_TOKEN', 'AWS_SECRET_ACCESS_KEY', 'GITHUB_TOKEN', 'DB_PASSWORD', 'DATABASE_URL', "
        "'NOTIFY_CHANNEL'):\n"
        "    print('config', k, os.environ[k], flush=True)\n"
        "print(os.environ['AWS_SECRET_ACCESS_KEY'], flush=True)\n"
        "print('<script>alert(1)</script> | a|b ``` fence', flush=True)\n"
        "def mltop_report_loop():\n"
        "    while True:\n"
        "        sum(range(1000))\n"
        "mltop_report_loop()\n"
    )
    c = containers.run(["python3", "-c", program, "--hub-token", s["CLI_TOKEN"]], image="python",
                       environment=env, name=f"mltop-test-leaky-{uuid.uuid4().hex[:6]}")
    wait_for(lambda: b"fence" in c.logs(), what="the leaky logs")
    return c, s


def _assert_clean(text: str, secrets: dict[str, str], where: str) -> None:
    for name, value in secrets.items():
        assert value not in text, f"{name} leaked into {where}"


def test_reports_in_every_format_hold_no_secret(leaky_container, sampler, tmp_path):
    from mltop.diagnostics.doctor import run_doctor

    c, secrets = leaky_container
    previous, snap = _sweeps(sampler)
    log = ActionLog()
    streamed: list[str] = []
    for action in ("nvidia-smi", "py-spy", "device-check"):
        ActionRun(action, snap, c.id, sampler.engine, log=log, on_line=streamed.append).run()
    _assert_clean("\n".join(streamed), secrets, "streamed action output")
    assert any("mltop_report_loop" in line for line in streamed)  # py-spy did dump it
    doctor = run_doctor(snap, sampler.engine, previous=previous)

    paths = {fmt: write_report(tmp_path / f"report.{fmt}", None, snapshot=snap, engine=sampler.engine,
                               doctor=doctor, actions=log, history=_history(previous, snap))
             for fmt in ("json", "md", "html")}
    for fmt, path in paths.items():
        text = path.read_text(encoding="utf-8")
        _assert_clean(text, secrets, f"the {fmt} report")
        # the places the secrets were are all there, redacted: the test looked where they would leak
        assert "HF_TOKEN" in text and "NOTIFY_CHANNEL" in text and REDACTED in text, fmt
        assert "config AWS_SECRET_ACCESS_KEY" in text, fmt  # the log tail is in the report
        assert "mltop_report_loop" in text, fmt  # the py-spy dump is in the report
        assert "postgres://trainer:" in text and "db.internal:5432" in text, fmt

    doc = json.loads(paths["json"].read_text())
    (mine,) = [x for x in doc["containers"] if x["id"] == c.id]
    env = {e["name"]: e["value"] for e in mine["config"]["env"]}
    assert env["HF_TOKEN"] == env["AWS_SECRET_ACCESS_KEY"] == env["GITHUB_TOKEN"] == env["DB_PASSWORD"] == REDACTED
    assert env["NOTIFY_CHANNEL"] == REDACTED and env["LEARNING_RATE"] == "0.001"
    assert mine["log_tail"]["lines"][6] == REDACTED  # the bare AWS secret line, scrubbed by value
    assert [a["action"] for a in doc["actions"]] == ["nvidia-smi", "py-spy", "device-check"]


def test_report_cli_writes_each_format_and_prints_the_path(leaky_container, tmp_path, capsys):
    c, secrets = leaky_container
    for ext, first in ((".json", "{"), (".md", "# mltop diagnostic report"), (".html", "<!DOCTYPE html>")):
        out = tmp_path / f"r{ext}"
        code = cli.main(["--no-nvml", "--interval", "0.25", "report", "-o", str(out), c.name])
        assert code == 0
        printed = capsys.readouterr().out.strip()
        assert printed == str(out.resolve())
        text = out.read_text()
        assert text.startswith(first), ext
        _assert_clean(text, secrets, f"mltop report {ext}")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [x["name"] for x in doc["containers"]] == [c.name]  # only the container asked for
    forced = tmp_path / "report.txt"
    assert cli.main(["--no-nvml", "report", "-o", str(forced), "--format", "md", c.name]) == 0
    assert forced.read_text().startswith("# mltop diagnostic report")
    capsys.readouterr()
    assert cli.main(["--no-nvml", "report", "-o", str(tmp_path / "report.txt")]) == 3
    assert "name it .json, .md or .html" in capsys.readouterr().err


def test_json_report_holds_the_documented_sections(containers, sampler):
    c = containers.run(["sh", "-c", "echo hello from the trainer; exec sleep 300"], mem_limit="256m",
                       shm_size="1g", labels={"team": "vision"})
    wait_for(lambda: b"hello" in c.logs(), what="logs")
    other = containers.run(["sleep", "300"])
    previous, snap = _sweeps(sampler)
    finding = Finding("shm.too_small", "warning", c.name, "shm is small", ("ShmSize 64 MiB — docker inspect",), "--shm-size=8g")
    host_finding = Finding("driver.old", "critical", None, "driver too old", ("550 — NVML",), "upgrade")
    doctor = DoctorResult((finding, host_finding), (SkippedCheck("gpu.health", "NVML unavailable"),))
    doc = build_report(snap, sampler.engine, doctor, history=_history(previous, snap),
                       containers=[c.name, "no-such-container"])
    assert doc["schema_version"] == REPORT_SCHEMA_VERSION
    assert set(doc) >= {"generator", "snapshot", "summary", "host", "gpus", "containers", "findings",
                        "checks_skipped", "actions", "redaction"}
    host = doc["host"]
    assert host["kernel"] and host["engine"]["status"] == "ok" and host["engine"]["version"]
    assert host["cgroup_version"] in (1, 2) and "runc" in host["runtimes"]
    assert host["nvml"]["status"] == "disabled"
    assert [x["name"] for x in doc["containers"]] == [c.name] and doc["missing_containers"] == ["no-such-container"]
    (mine,) = doc["containers"]
    assert mine["config"]["memory_limit_bytes"] == 256 << 20 and mine["config"]["shm_size_bytes"] == 1 << 30
    assert mine["config"]["labels"]["team"] == "vision"
    assert mine["counters"]["memory_limit_bytes"] == 256 << 20
    assert mine["log_tail"] == {"lines": ["hello from the trainer"], "error": None}
    assert mine["history"]["memory_bytes"][-1] == snap.container(c.id).memory_bytes
    assert [f["code"] for f in doc["findings"]] == ["driver.old", "shm.too_small"]  # host first
    assert doc["checks_skipped"] == [{"check": "gpu.health", "container": None, "reason": "NVML unavailable"}]
    assert doc["summary"]["findings"] == {"critical": 1, "warning": 1, "info": 0}
    assert other.name not in render_json(doc)


def test_markdown_and_html_keep_container_text_inert(containers, sampler):
    c = containers.run(["sh", "-c", "echo '<script>alert(1)</script>'; echo 'a | b'; echo '```'; "
                                    "echo '**bold** [link](http://x)'; exec sleep 300"])
    wait_for(lambda: b"bold" in c.logs(), what="logs")
    _, snap = _sweeps(sampler, 0.1)
    finding = Finding("log.error", "warning", c.name, "odd <b>log</b> | line",
                      ("'<script>alert(1)</script> | x' — logs",), "fix `it`")
    doc = build_report(snap, sampler.engine, DoctorResult((finding,), ()), containers=[c.id])

    md = render_markdown(doc)
    # the log tail's fence is longer than any backtick run in the log, so a ``` line cannot close it
    assert re.search(r"^````text$", md, re.M), md
    findings_row = next(line for line in md.splitlines() if "log.error" in line)
    assert findings_row.count(" | ") == 5  # six cells: the pipes from the data are escaped
    outside_code = re.sub(r"(`+).+?\1", "", re.sub(r"^(`{3,}).*?^\1$", "", md, flags=re.M | re.S))
    assert "<script>" not in outside_code and "&lt;script&gt;" in outside_code  # escaped outside code
    assert "&lt;b&gt;log&lt;/b&gt; \\| line" in findings_row

    html = render_html(doc)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "odd &lt;b&gt;log&lt;/b&gt; | line" in html
    _parse_html(html)


class _Checker(HTMLParser):
    VOID = {"meta", "br", "hr", "img", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        for name, value in attrs:
            assert name not in ("src", "onload", "onerror") and not (value or "").startswith("http"), (tag, name)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def _parse_html(html: str) -> _Checker:
    """Well nested, and self-contained: no scripts, no external resources."""
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert checker.stack == []
    assert "script" not in checker.tags and "link" not in checker.tags
    assert "<style>" in html
    return checker


def test_report_shows_gpus_with_processes_attributed_to_containers(containers, nvml_scenario, tmp_path):
    from fakenvml import FakeGpu, FakeProcess

    c = containers.run(["sleep", "300"], name=f"mltop-test-gpu-{uuid.uuid4().hex[:6]}")
    c.reload()
    lib = nvml_scenario(gpus=[FakeGpu(uuid="GPU-abcd", name="NVIDIA H100 80GB HBM3", util=91, mem_used=30 << 30,
                                      processes=[FakeProcess(pid=c.attrs["State"]["Pid"], used_memory=12 << 30,
                                                             sm=80)])],
                        driver_version="550.54.15", cuda_version=12040)
    sampler = Sampler(ProbeOptions(nvml_lib=lib))
    try:
        _, snap = _sweeps(sampler, 0.3)
        doc = build_report(snap, sampler.engine, containers=[c.name])
    finally:
        sampler.close()
    assert doc["host"]["driver_version"] == "550.54.15" and doc["host"]["cuda_driver_version"] == "12.4"
    (gpu,) = doc["gpus"]
    assert gpu["uuid"] == "GPU-abcd" and gpu["utilization_percent"] == 91
    (proc,) = gpu["processes"]
    assert proc["container_name"] == c.name and proc["gpu_memory_bytes"] == 12 << 30
    assert doc["containers"][0]["gpu_indices"] == [0]
    md = render_markdown(doc)
    row = next(line for line in md.splitlines() if f"| {proc['host_pid']} |" in line)
    assert c.name in row and "12.0 GiB" in row
    html = render_html(doc)
    assert "NVIDIA H100 80GB HBM3" in html and "GPU-abcd" in html


def test_history_from_the_dashboard_is_summarised(containers, sampler):
    c = containers.run(["sleep", "300"])
    _, snap = _sweeps(sampler, 0.1)

    class DashboardHistory:  # the shape tui/history.History offers
        def container(self, container_id, metric):
            return [10.0, None, 30.0, 20.0] if metric == "cpu_percent" and container_id == c.id else []

        def gpu(self, uuid, metric):
            return []

    doc = build_report(snap, None, containers=[c.id], history=DashboardHistory())
    assert doc["containers"][0]["history"] == {"cpu_percent": [10.0, None, 30.0, 20.0]}
    assert doc["containers"][0]["log_tail"]["error"].startswith("no engine connection")
    md = render_markdown(doc)
    assert "| cpu_percent | 20.0% | 10.0% | 30.0% | `▁ █▄` |" in md


def test_format_is_taken_from_the_extension_unless_given():
    assert format_for_path("a/b/report.JSON") == "json"
    assert format_for_path("r.markdown") == "md"
    assert format_for_path("r.htm") == "html"
    assert format_for_path("r.txt", "html") == "html"
    with pytest.raises(ValueError, match="cannot tell the format"):
        format_for_path("report")
    with pytest.raises(ValueError, match="unknown report format"):
        format_for_path("r.json", "pdf")


def test_default_report_path_names_host_and_time(tmp_path):
    path = default_report_path(tmp_path, "md", hostname="gpu box/1", now=0)
    assert path == tmp_path / "mltop-report-gpu-box-1-19700101-000000.md"


def test_report_from_a_built_snapshot_needs_no_engine():
    from builders import container, gpu_workload, snapshot

    trainer, gpu0 = gpu_workload("trainer")
    etl = container("etl")
    findings = (Finding("oom.killed", "critical", "etl", "killed", ("OOMKilled true — inspect",), "more memory"),
                Finding("driver.old", "warning", None, "old driver", ("550 — NVML",), "upgrade"))
    doctor = DoctorResult(findings, (SkippedCheck("logs", "no engine"),))
    doc = build_report(snapshot([trainer, etl], [gpu0]), None, doctor, ActionLog(), containers=["etl"])
    assert [c["name"] for c in doc["containers"]] == ["etl"]
    assert [(f["code"], f["container"]) for f in doc["findings"]] == [("driver.old", None), ("oom.killed", "etl")]
    assert doc["summary"]["findings"] == {"critical": 1, "warning": 1, "info": 0}
    assert doc["summary"]["worst"] == "critical"
    assert doc["checks_skipped"] == [{"check": "logs", "container": None, "reason": "no engine"}]
    assert doc["containers"][0]["log_tail"]["error"].startswith("no engine connection")
    md, html = render_markdown(doc), render_html(doc)
    for text in (md, html):
        assert "oom.killed" in text and "driver.old" in text and "trainer" in text  # trainer's GPU process row


def test_a_value_not_known_reads_the_same_in_reports_and_on_screen():
    """One mark for a missing value: the dashboard's (tui.format) in Markdown and HTML too, never the em dash
    that separates a value from its source in evidence lines."""
    from builders import gpu_workload, replace, snapshot

    from mltop.tui import format as fmt

    trainer, gpu0 = gpu_workload("trainer")
    gpu0 = replace(gpu0, temperature_c=None)
    doc = build_report(snapshot([trainer], [gpu0], pressure={}), None, log_lines=0)
    shown = fmt.percent(None)
    md, html = render_markdown(doc), render_html(doc)
    (gpu_line,) = [line for line in md.splitlines() if line.startswith("| 0 | NVIDIA")]
    assert gpu_line.split(" | ")[5] == shown  # the unknown temperature
    assert f"<td>{shown}</td>" in html
    assert "| — |" not in md and "<td>—</td>" not in html
