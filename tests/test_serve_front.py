"""`mltop serve` under idle, half-open and malformed connections: the real agent as a subprocess, attacked over
loopback from several source addresses (127.0.0.0/8 all reaches it), scraped from 127.0.0.1."""

from __future__ import annotations

import os
import resource
import select
import socket
import statistics
import time

import pytest

from serve_helpers import ServeProcess, wait_until

NO_ENGINE = ("--no-nvml", "--docker-host", "unix:///nonexistent/mltop-test-docker.sock")


@pytest.fixture(scope="module")
def agent():
    # The attack needs 500+ descriptors here; the agent raises its own soft limit (front.py).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    serve = ServeProcess("--interval", "1", "--doctor-interval", "0", *NO_ENGINE)
    try:
        serve.wait_healthy()
        yield serve
    finally:
        serve.stop()


def _sockets_held(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def _open(port: int, source: str, send: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    if send:
        s.sendall(send)
    return s


def _closed_by_peer(s: socket.socket, wait: float = 0.0) -> bool:
    readable, _, _ = select.select([s], [], [], wait)
    if not readable:
        return False
    try:
        return s.recv(1) == b""
    except ConnectionError:
        return True


def _scrape_seconds(serve: ServeProcess) -> float:
    started = time.monotonic()
    code, body = serve.get("/metrics", timeout=10)
    elapsed = time.monotonic() - started
    assert code == 200 and b"mltop_build_info" in body
    return elapsed


def _raw(serve: ServeProcess, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", serve.port), timeout=10) as s:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole payload was taken: the answer is still there to read
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_500_idle_half_open_connections_do_not_delay_a_scrape(agent):
    from mltop.tui.serve.front import connection_cap

    baseline = agent.threads()
    with open(f"/proc/{agent.proc.pid}/limits") as f:
        limit = next(int(line.split()[3]) for line in f if line.startswith("Max open files"))
    # Under a hard open-file limit of 1024 the agent holds 128 and closes the oldest idle ones for the rest.
    holds = min(500, connection_cap(limit))
    # Ten clients of 50 each (under the per-client cap): silent ones, ones that sent the request line only
    # (as in the report: `GET /metrics HTTP/1.1` and nothing more), ones stopped inside their headers.
    partial = (b"", b"GET /metrics HTTP/1.1\r\n", b"GET /metrics HTTP/1.1\r\nHost: agent\r\nAccept: te")
    idle = [_open(agent.port, f"127.0.0.{2 + i // 50}", partial[i % 3]) for i in range(500)]
    try:
        wait_until(lambda: _sockets_held(agent.proc.pid) >= holds, 10, f"the agent to hold {holds} connections")
        timings = [_scrape_seconds(agent) for _ in range(7)]
        held = _sockets_held(agent.proc.pid)
        # The goal is 100 ms; a busy 2-core host stretches single scrapes, so the median is held to it.
        assert statistics.median(timings) < 0.1, timings
        assert held >= holds, held  # the attack was still in place while the scrapes ran
        if holds == 500:
            assert not any(_closed_by_peer(s) for s in idle)  # none was dropped to make room
        assert agent.threads() <= baseline + 4  # idle connections take no thread (WORKERS = 4 at most)
    finally:
        for s in idle:
            s.close()


def test_a_request_not_finished_within_the_deadline_is_closed(agent):
    from mltop.tui.serve.front import HEAD_DEADLINE_S

    slow = _open(agent.port, "127.0.0.30", b"GET /metrics HTTP/1.1\r\n")
    silent = _open(agent.port, "127.0.0.30")
    try:
        opened = time.monotonic()
        assert _closed_by_peer(slow, HEAD_DEADLINE_S + 10) and _closed_by_peer(silent, 5)
        assert time.monotonic() - opened >= HEAD_DEADLINE_S - 0.5  # not dropped before its deadline either
    finally:
        slow.close()
        silent.close()


def test_one_client_is_capped_and_its_own_scrape_still_answers(agent):
    from mltop.tui.serve.front import IDLE_AFTER_S
    from mltop.tui.serve.front import MAX_CONNECTIONS_PER_CLIENT as CAP

    client = "127.0.0.40"
    idle = [_open(agent.port, client) for _ in range(CAP + 36)]
    try:
        time.sleep(IDLE_AFTER_S + 0.5)  # fresh connections (a burst of scrapes) are let in; idle ones are not
        # A scrape from the same address: the oldest idle connections make room for it, down to the cap.
        with socket.create_connection(("127.0.0.1", agent.port), timeout=10, source_address=(client, 0)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.0 200")
        time.sleep(0.5)
        closed = [_closed_by_peer(s) for s in idle]  # at once: the deadline (5 s) runs for the rest
        assert sum(not c for c in closed) <= CAP, sum(not c for c in closed)
        assert all(closed[:37])  # the oldest went first
        assert not any(closed[-20:])
    finally:
        for s in idle:
            s.close()


def test_garbage_an_oversized_request_line_and_too_many_headers_get_their_4xx(agent):
    assert _raw(agent, b"garbage\r\n\r\n").startswith(b"HTTP/1.0 400 ")
    assert _raw(agent, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n").startswith(b"HTTP/1.0 400 ")
    assert _raw(agent, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 414 ")
    many = b"".join(b"X-Header-%d: 1\r\n" % i for i in range(101))
    assert _raw(agent, b"GET /metrics HTTP/1.1\r\n" + many + b"\r\n").startswith(b"HTTP/1.0 431 ")
    assert _raw(agent, b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n").startswith(
        b"HTTP/1.0 431 ")
    assert _raw(agent, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").startswith(b"HTTP/1.0 501 ")
    # ... and the agent answers as before: nothing above held or broke it.
    assert _raw(agent, b"GET /healthz HTTP/1.1\nHost: agent\n\n").startswith(b"HTTP/1.0 200 ")


def test_at_the_total_cap_the_oldest_idle_connection_of_the_biggest_client_makes_room():
    import threading

    from mltop.tui.serve.front import HttpFront

    front = HttpFront(("127.0.0.1", 0), lambda head, peer: b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n",
                      max_connections=20)
    port = front.server_address[1]
    serving = threading.Thread(target=front.serve_forever)
    serving.start()
    hog = [_open(port, "127.0.0.60") for _ in range(15)]
    other = [_open(port, "127.0.0.61") for _ in range(5)]
    try:
        wait_until(lambda: front.connections() == 20, 10, "the front to hold 20 connections")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert s.recv(64).endswith(b"\r\n\r\nok\n")
        assert _closed_by_peer(hog[0], 2) and not _closed_by_peer(hog[1], 0.1)
        assert not any(_closed_by_peer(s, 0.05) for s in other)
        assert front.connections() <= 20
    finally:
        for s in hog + other:
            s.close()
        front.shutdown()
        serving.join(10)
        front.server_close()
    assert not serving.is_alive()


def test_connections_over_the_cap_are_closed_not_leaked_even_before_they_start():
    import threading

    from mltop.tui.serve.front import HttpFront

    front = HttpFront(("127.0.0.1", 0), lambda head, peer: b"HTTP/1.0 204 No Content\r\n\r\n", max_connections=5)
    serving = threading.Thread(target=front.serve_forever)
    serving.start()
    # Thirty at once: many are accepted and pushed out again within one turn of the loop, before their
    # connection was set up; each must still be closed, none left open unanswered.
    flood = [_open(front.server_address[1], "127.0.0.70") for _ in range(30)]
    try:
        time.sleep(1.0)
        still_open = [s for s in flood if not _closed_by_peer(s)]
        assert len(still_open) <= 5 and front.connections() <= 5, (len(still_open), front.connections())
        assert len(still_open) == front.connections()
    finally:
        for s in flood:
            s.close()
        front.shutdown()
        serving.join(10)
        front.server_close()
