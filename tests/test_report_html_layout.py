"""The HTML report reads well: container names and check codes never break inside a word, at 1280 px and
at a printed page's width. Checked in the stylesheet, and in a real browser (headless Chromium) when one is
installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from builders import GIB, MIB, container, gpu_request, gpu_workload, process, replace, snapshot

from mltop.diagnostics.findings import Finding
from mltop.diagnostics.report import build_report
from mltop.diagnostics.doctor import DoctorResult
from mltop.diagnostics.report.html import CSS, render_html

LONG_NAME = "acc-notoolkit-trainer-llama-7b"


def _report_html() -> str:
    c, g = gpu_workload(LONG_NAME, 0)
    c = replace(c, processes=(process(4242, cmdline="python3 -c import time\nwhile True:\n\ttime.sleep(1)",
                                      gpu_memory_bytes=4 * GIB, gpu_indices=(0,)),))
    other = container("acc-notoolkit", config_overrides=dict(device_requests=(gpu_request(),)))
    oom = container("preprocess-oom", status="exited", config_overrides=dict(oom_killed=True, exit_code=137,
                                                                               memory_limit_bytes=256 * MIB))
    long_evidence = ("/dev/shm holds 0 bytes — /sys/fs/cgroup/memory/docker/" + "a63a85a12de3b66bbea61f6d2ec9" * 3
                     + "/memory.stat shmem")
    findings = [
        Finding("toolkit.missing", "critical", "acc-notoolkit", "GPUs requested but the NVIDIA toolkit is absent",
                ("requests GPUs — docker inspect acc-notoolkit", long_evidence), "Install nvidia-container-toolkit"),
        Finding("gpu.dev_char_missing", "warning", None, "GPU containers will lose their GPUs at the next "
                "`systemctl daemon-reload`", ("CgroupDriver systemd — docker info",) * 4, "sudo nvidia-ctk system "
                "create-dev-char-symlinks --create-all"),
        Finding("shm.too_small", "info", LONG_NAME, "/dev/shm is only 64.0 MiB: PyTorch DataLoader workers and NCCL "
                "often need more", (long_evidence,) * 3, "Run with `--ipc=host` or `--shm-size=8g`"),
        Finding("oom.killed", "critical", "preprocess-oom", "The container was killed for running out of memory",
                ("State.OOMKilled true, ExitCode 137",), "Raise the limit (`--memory`)"),
    ]
    return render_html(build_report(snapshot([c, other, oom], [g]), None, DoctorResult(tuple(findings), ())))


def test_names_and_codes_are_marked_never_to_break():
    html = _report_html()
    rule = re.search(r"td\.name, td\.code, td\.num \{([^}]*)\}", CSS)
    assert rule and "white-space: nowrap" in rule.group(1) and "word-break: keep-all" in rule.group(1)
    assert "overflow-wrap: anywhere" not in re.search(r"th, td \{([^}]*)\}", CSS).group(1)
    findings = html.split('<h2 id="findings">')[1].split("<h3>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", findings)[1:]  # after the header
    assert len(rows) == 4
    for row in rows:
        cells = re.findall(r"<td( class=\"[a-z]+\")?>", row)
        assert cells[1:3] == [' class="name"', ' class="code"'], row
    assert "@media print" in CSS


# The page is loaded with this script added (the report itself carries none): it counts the lines each
# name and code cell's text takes, and how wide the page ends up.
_MEASURE = """<script>
window.addEventListener('load', () => {
  const cells = [...document.querySelectorAll('td.name, td.code')].map(td => {
    const range = document.createRange(); range.selectNodeContents(td);
    const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
    return {text: td.textContent, lines: tops.size};
  });
  const out = document.createElement('pre'); out.id = 'measured';
  out.textContent = JSON.stringify({cells, page: document.documentElement.scrollWidth,
                                    view: window.innerWidth});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium installed (apt-get install chromium)")
@pytest.mark.parametrize("width", [1280, 1024])  # a wide window and a small laptop
def test_in_a_browser_no_name_or_code_breaks_and_the_page_keeps_its_width(width):
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(_report_html().replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
        done = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp}/profile",
             f"--window-size={width},1000", "--virtual-time-budget=2000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="measured">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    names = {cell["text"]: cell["lines"] for cell in measured["cells"]}
    assert {LONG_NAME, "toolkit.missing", "gpu.dev_char_missing", "shm.too_small"} <= set(names)
    assert all(lines == 1 for lines in names.values()), names
    assert measured["page"] <= measured["view"]  # long evidence wraps instead of widening the page
