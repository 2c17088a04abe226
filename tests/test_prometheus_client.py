"""The fleet's Prometheus client against servers that misbehave: a trickle is cut at the deadline, a huge
answer at the size cap, a truncated or garbled answer is a PrometheusError that says so, credentials never
follow a redirect to another origin, and a server's escape sequences never reach the terminal."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest
from misbehaving_http import MisbehavingServer, answer, vector

from mltop.probes.prometheus_api import PrometheusClient, PrometheusError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "tok-3f9c1d-never-elsewhere"
SLACK_S = 1.5  # a loaded 2-core machine; the bug held a 5 s timeout for 24 s


@pytest.fixture
def serve(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    servers = []

    def start(respond, host="127.0.0.1", tls=None):
        server = MisbehavingServer(respond, host, tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def failure(client: PrometheusClient, expr: str = "up") -> PrometheusError:
    with pytest.raises(PrometheusError) as caught:
        client.query(expr)
    return caught.value


def trickle_body(conn, request):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n")
    for _ in range(1000):
        conn.sendall(b'{"aaaaa"')  # 8 bytes, each well inside any per-read timeout
        time.sleep(0.1)


def trickle_headers(conn, request):
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000:
        conn.sendall(bytes([byte]))
        time.sleep(0.1)


@pytest.mark.parametrize("respond", [trickle_body, trickle_headers], ids=["body", "headers"])
def test_a_trickling_server_is_cut_at_the_deadline_not_per_read(serve, respond):
    server = serve(respond)
    client = PrometheusClient(server.url, timeout=1.5)
    start = time.monotonic()
    err = failure(client)
    took = time.monotonic() - start
    assert err.kind == "timeout"
    assert "within 1.5 s" in str(err) and "--query-timeout" in str(err)
    assert took <= 1.5 + SLACK_S, f"held for {took:.1f} s"


def stream_huge(total: int, declare: bool):
    def respond(conn, request):
        head = "HTTP/1.1 200 OK\r\nConnection: close\r\n"
        if declare:
            head += f"Content-Length: {total}\r\n"
        conn.sendall(head.encode() + b"\r\n" + b'{"status":"success","data":{"resultType":"vector","result":[')
        item = json.dumps({"metric": {"job": "x" * 200}, "value": [1, "1"]}).encode() + b","
        block = item * (1 << 20 // len(item))
        sent = 0
        while sent < total:
            conn.sendall(block)
            sent += len(block)
    return respond


def test_a_huge_answer_stops_at_the_cap_with_memory_near_it(serve):
    """Measured in a fresh process: before the cap, a 400 MiB answer took the client to 822 MiB."""
    server = serve(stream_huge(400 << 20, declare=False))
    script = (
        "import resource, sys\n"
        "from mltop.probes.prometheus_api import PrometheusClient, PrometheusError\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n"
        f"client = PrometheusClient({server.url!r}, timeout=60)\n"
        "try:\n"
        "    client.query('up')\n"
        "except PrometheusError as err:\n"
        "    print(err.kind, err, sep='\\t')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 - base)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    (kind, message), peak_mib = out.stdout.splitlines()[0].split("\t"), int(out.stdout.splitlines()[1])
    assert kind == "too_large"
    assert "larger than the 64 MiB cap" in message and "--max-answer-mib" in message
    # what the read added to the peak over the interpreter and mltop's imports: the cap, and a little
    assert peak_mib < 64 + 48, f"the read raised the peak RSS by {peak_mib} MiB"


def test_the_cap_is_the_callers_and_a_declared_length_is_refused_before_reading(serve):
    import tracemalloc

    server = serve(stream_huge(400 << 20, declare=False))
    tracemalloc.start()
    try:
        err = failure(PrometheusClient(server.url, timeout=30, max_answer_bytes=4 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.kind == "too_large" and "4 MiB cap" in str(err)
    assert peak < 2 * (4 << 20), f"peak {peak / 2**20:.1f} MiB of Python memory"

    declared = serve(stream_huge(400 << 20, declare=True))
    start = time.monotonic()
    err = failure(PrometheusClient(declared.url, timeout=30, max_answer_bytes=4 << 20))
    assert err.kind == "too_large" and "declares 400 MiB" in str(err)
    assert time.monotonic() - start < 5  # refused on the header, not after reading 400 MiB

    out = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "fleet", "--json", "--prometheus", server.url,
                          "--max-answer-mib", "1"], capture_output=True, text=True, timeout=60, cwd=REPO,
                         env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
    assert out.returncode == 3 and "larger than the 1 MiB cap" in out.stderr and "--max-answer-mib" in out.stderr


def cut_short(conn, request):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n" + vector()[:40])


def cut_short_chunked(conn, request):
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                 b"28\r\n" + vector()[:40] + b"\r\n")


def closed_without_answer(conn, request):
    pass


def reset_mid_answer(conn, request):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + vector()[:40])
    time.sleep(0.1)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close


@pytest.mark.parametrize("respond, words", [
    (cut_short, "broke off after 40 bytes"),
    (cut_short_chunked, "broke off after"),
    (closed_without_answer, "connection broke before the answer was complete"),
    (reset_mid_answer, "connection broke before the answer was complete"),
], ids=["content-length", "chunked", "no-answer", "reset"])
def test_a_truncated_answer_is_a_prometheus_error_that_says_so(serve, respond, words):
    err = failure(PrometheusClient(serve(respond).url, timeout=5))
    assert err.kind == "truncated", err
    assert words in str(err) and "read again at the next refresh" in str(err)


@pytest.mark.parametrize("body, kind, words", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json{", "bad_response", "did not answer JSON"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\xff\xfe{}", "bad_response", "not UTF-8"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "bad_response", "did not answer HTTP"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", "bad_response", "did not answer HTTP"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", "refused", "refused the query"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 35\r\n\r\n" + b'{"status":"success","data":[1,2,3]}', "bad_response",
     "`data` is not an object"),
], ids=["not-json", "not-utf8", "not-http", "too-many-headers", "json-list", "data-list"])
def test_garbage_is_a_bad_response_not_a_crash(serve, body, kind, words):
    err = failure(PrometheusClient(serve(lambda conn, request: conn.sendall(body)).url, timeout=5))
    assert err.kind == kind and words in str(err), err


@pytest.mark.parametrize("data", [
    {"resultType": "vector", "result": {"not": "a list"}},
    {"resultType": "vector", "result": [{"metric": {"job": 1}, "value": [1, "1"]}]},
    {"resultType": "vector", "result": [{"metric": {"job": "a"}, "value": "1"}]},
    {"resultType": "vector", "result": [{"metric": {"job": "a"}, "value": [1, "one"]}]},
    {"resultType": "vector", "result": ["a string"]},
    {"resultType": "scalar", "result": 7},
], ids=["result-dict", "label-int", "value-str", "value-word", "item-str", "scalar-int"])
def test_json_of_the_wrong_shape_is_a_bad_response(serve, data):
    body = json.dumps({"status": "success", "data": data}).encode()
    err = failure(PrometheusClient(serve(lambda conn, request: answer(conn, body)).url, timeout=5))
    assert err.kind == "bad_response" and "not shaped as Prometheus's" in str(err), err


def redirect_to(target: str):
    def respond(conn, request):
        answer(conn, b"", "302 Found", (f"Location: {target}{request.target}",))
    return respond


@pytest.mark.parametrize("other", ["127.0.0.2", "localhost", "127.0.0.1"], ids=["host", "name", "port"])
def test_the_token_never_follows_a_redirect_to_another_origin(serve, other):
    """127.0.0.1:P → 127.0.0.2:Q, → localhost:P (the same socket under another name), → 127.0.0.1:Q."""
    elsewhere = serve(lambda conn, request: answer(conn, vector()), host="127.0.0.2" if other == "127.0.0.2" else
                      "127.0.0.1")
    first = serve(lambda conn, request: None)
    target = {"localhost": f"http://localhost:{first.port}"}.get(other, f"http://{other}:{elsewhere.port}")
    first.respond = redirect_to(target)
    err = failure(PrometheusClient(first.url, timeout=5, bearer_token=TOKEN))
    assert err.kind == "redirected"
    assert "another origin" in str(err) and target in str(err) and TOKEN not in str(err)
    assert [r.headers.get("authorization") for r in first.requests] == [f"Bearer {TOKEN}"]  # only the first
    assert elsewhere.requests == []


def test_a_same_origin_redirect_is_followed_with_the_credentials_and_loops_are_cut(serve):
    """Prometheus behind a path prefix redirects within its origin: followed, the credentials with it."""
    def prefixed(conn, request):
        if request.path.startswith("/prom/"):
            answer(conn, vector(({"job": "a"}, 1)))
        else:
            answer(conn, b"", "308 Permanent Redirect", (f"Location: /prom{request.target}",))

    server = serve(prefixed)
    samples = PrometheusClient(server.url, timeout=5, basic_auth=("alice", "pw")).query("up")
    assert [s.labels for s in samples] == [{"job": "a"}]
    assert [r.path for r in server.requests] == ["/api/v1/query", "/prom/api/v1/query"]
    assert len({r.headers["authorization"] for r in server.requests}) == 1

    loop = serve(lambda conn, request: answer(conn, b"", "302 Found",
                                              (f"Location: /hop{len(loop.requests)}",)))
    err = failure(PrometheusClient(loop.url, timeout=5))
    assert err.kind == "redirected" and "more than 5 redirects" in str(err)
    assert len(loop.requests) == 6


def test_an_http_proxy_from_the_environment_is_still_used(serve, monkeypatch):
    proxy = serve(lambda conn, request: answer(conn, vector(({"job": "a"}, 1))))
    monkeypatch.setenv("http_proxy", proxy.url)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    samples = PrometheusClient("http://prometheus.invalid:9090", timeout=5).query("up")
    assert [s.labels for s in samples] == [{"job": "a"}]
    assert proxy.requests[0].target.startswith("http://prometheus.invalid:9090/api/v1/query?")


def test_tls_without_the_ca_says_to_give_it_and_tls_cut_short_is_truncated(serve, tmp_path):
    from test_serve_tls import _write_ca_and_server_cert

    ca = _write_ca_and_server_cert(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "tls" / "server.crt", tmp_path / "tls" / "server.key")
    server = serve(cut_short, tls=tls)
    err = failure(PrometheusClient(server.url, timeout=5))
    assert err.kind == "unreachable" and "TLS failed" in str(err) and "--ca-file" in str(err)
    err = failure(PrometheusClient(server.url, timeout=5, ca_file=str(ca)))
    assert err.kind == "truncated", err
    server.respond = lambda conn, request: answer(conn, vector(({"job": "a"}, 1)))
    assert len(PrometheusClient(server.url, timeout=5, ca_file=str(ca)).query("up")) == 1


EVIL = "\x1b]0;owned\x07\x1b[2J\x1b[31mboom\x9b1m" + "A" * 5000


def test_a_servers_escape_sequences_and_length_never_reach_the_terminal(serve):
    """A 500 whose error text holds OSC/CSI sequences and 5000 characters: `mltop fleet --json` says it on one
    short line, the sequences gone."""
    body = json.dumps({"status": "error", "errorType": "internal", "error": EVIL}).encode()
    server = serve(lambda conn, request: answer(conn, body, "500 Internal Server Error"))
    err = failure(PrometheusClient(server.url, timeout=5))
    assert err.kind == "refused" and "boom" in str(err) and len(str(err)) < 600

    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    out = subprocess.run([sys.executable, "-m", "mltop.tui.cli", "fleet", "--json", "--prometheus", server.url],
                         capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert out.returncode == 3 and out.stdout == ""
    line = out.stderr
    assert line.count("\n") == 1 and "500" in line and "boom" in line and len(line) < 600
    assert not any(c in line for c in "\x1b\x07\x9b"), repr(line)


async def test_the_fleet_view_shows_a_truncated_answer_in_its_header_and_keeps_running(serve):
    """Truncated answers, then a 500 full of escape sequences, then a good answer whose host name holds some:
    the view says each in its header (printable), keeps refreshing, and shows the host once it can."""
    from conftest import until

    from mltop.probes.fleet import FleetReader
    from mltop.tui.fleet.app import FleetApp, HostsScreen

    state = {"mode": "truncated"}
    host = {"job": "mltop", "instance": "h1:9400"}

    def respond(conn, request):
        if state["mode"] == "truncated":
            cut_short(conn, request)
        elif state["mode"] == "evil500":
            answer(conn, json.dumps({"status": "error", "error": EVIL}).encode(), "500 Internal Server Error")
        elif request.params.get("query", "").startswith("last_over_time(mltop_host_info"):
            answer(conn, vector(({**host, "Hostname": "\x1b[31mgpu-\x1b]0;x\x07evil\x1b[0m"}, 1)))
        elif request.params.get("query") == "up":
            answer(conn, vector((host, 1)))
        else:
            answer(conn, vector())

    server = serve(respond)
    app = FleetApp(FleetReader(PrometheusClient(server.url, timeout=3)), refresh_s=0.2)

    def header() -> str:
        screen = app.screen
        return str(screen.query_one("#fleet-header").render()) if isinstance(screen, HostsScreen) else ""

    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: "the answer broke off after 40 bytes" in header(), what="the truncation said")
        reads = app.reads
        await until(pilot, lambda: app.reads >= reads + 3, what="refreshes going on after it")
        assert app.is_running and isinstance(app.screen, HostsScreen)

        state["mode"] = "evil500"
        await until(pilot, lambda: "boom" in header(), what="the 500's text")
        assert not any(c in header() for c in "\x1b\x07\x9b") and len(header()) < 800

        state["mode"] = "good"
        await until(pilot, lambda: app.screen.table.row_count == 1, what="the host, once Prometheus answers")
        table = app.screen.table
        name = table.cell_text(table.keys_in_order[0], "host")
        assert name == "gpu-evil", repr(name)
        await until(pilot, lambda: "1 hosts up" in header() and "boom" not in header(), what="the error cleared")
