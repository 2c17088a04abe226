"""Run `mltop serve` and a real Prometheus as subprocesses, scrape and query them (tests and bench_serve)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0, context=None, headers: dict[str, str] | None = None
             ) -> tuple[int, bytes]:
    """(status, body); `context`: an ssl.SSLContext for https, `headers`: e.g. Authorization."""
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def basic_auth(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, ValueError, KeyError, IndexError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def parse_exposition(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """sample name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


class ServeProcess:
    """`mltop serve` on 127.0.0.1:<free port>, as a user would start it."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, port: int | None = None,
                 listen: str = "127.0.0.1", tls=None, auth: tuple[str, str] | None = None,
                 python: str = sys.executable):
        """`tls`: an ssl.SSLContext trusting the agent's certificate (with --web-config); `auth`: (user,
        password) sent with every request of get() and wait_healthy(); `python`: whose mltop runs."""
        self.port = port or free_port()
        self.url = f"{'https' if tls is not None else 'http'}://127.0.0.1:{self.port}"
        self.tls = tls
        self.headers = basic_auth(*auth) if auth else {}
        if "--record" not in args and "--no-record" not in args:
            # serve records by default into one file per host; parallel test instances each get their own
            self.record_path = os.path.join(tempfile.mkdtemp(prefix="mltop-serve-rec-"), "history.db")
            args = (*args, "--record", self.record_path)
        self.command = [python, "-m", "mltop.tui.cli", "serve", "--listen", f"{listen}:{self.port}", *args]
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(self.command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=REPO)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def healthy():
            if self.proc.poll() is not None:
                raise AssertionError(f"mltop serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            return self.get("/healthz", timeout=2)[0] == 200
        wait_until(healthy, timeout, "mltop serve /healthz 200")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        return http_get(self.url + path, timeout, context=self.tls, headers=self.headers)

    def metrics_text(self) -> str:
        code, body = self.get("/metrics")
        assert code == 200, body
        return body.decode()

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        return parse_exposition(self.metrics_text())

    def threads(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        raise AssertionError("no Threads line")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stderr.read() if self.proc.stderr else ""


class PrometheusServer:
    """A real Prometheus scraping `targets` every second, with its TSDB in `workdir`."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[str] = (), job_extra: str = ""):
        """`job_extra`: more of the job's scrape config, YAML indented by 4 (scheme, tls_config, basic_auth)."""
        self.binary = shutil.which("prometheus")
        if self.binary is None:
            raise FileNotFoundError("prometheus is not installed (apt-get install prometheus)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            + ("rule_files:\n" + "".join(f"  - {r}\n" for r in rule_files) if rule_files else "")
            + "scrape_configs:\n  - job_name: mltop\n" + job_extra + "    static_configs:\n      - targets: ["
            + ", ".join(f"'{t}'" for t in targets) + "]\n"
        )
        self.log = open(workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: http_get(self.url + "/-/ready", timeout=2)[0] == 200, 60, "prometheus ready")

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        code, body = http_get(self.url + "/api/v1/query?" + urllib.parse.urlencode(params))
        doc = json.loads(body)
        assert code == 200 and doc["status"] == "success", doc
        return doc["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30.0, what: str | None = None) -> list[dict]:
        return wait_until(lambda: self.query(expr), timeout, what or expr, interval=0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
