"""The HTTP side: /metrics, /snapshot.json, /findings.json, /healthz, answered from the published state by a
small fixed pool of threads (a burst of scrapes queues in the listen backlog instead of spawning threads)."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Callable

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .loop import ServeState

log = logging.getLogger(__name__)

WORKERS = 4
STALE_AFTER_INTERVALS = 3


class PooledHTTPServer(HTTPServer):
    """HTTPServer whose requests run on a bounded thread pool; connections close after each answer
    (HTTP/1.0), so an idle keep-alive client can never hold a worker."""

    request_queue_size = 512
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler, workers: int = WORKERS):
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        # Before binding: a failed bind calls server_close(), which shuts the pool down.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mltop-serve-http")
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        self._pool.submit(self._handle, request, client_address)

    def _handle(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request, client_address):
        log.debug("request from %s failed", client_address, exc_info=True)

    def server_close(self):
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def health(state: ServeState, interval: float, now: float | None = None) -> tuple[int, str]:
    """(HTTP status, reason): 503 before the first sweep and when the last one is older than 3 intervals."""
    now = time.monotonic() if now is None else now
    if state.swept_at is None:
        reason = "no sweep has finished yet"
        if state.sweep_error:
            reason += f": {state.sweep_error}"
        return 503, reason
    age = now - state.swept_at
    if age > STALE_AFTER_INTERVALS * interval:
        reason = f"the last sweep finished {age:.1f} s ago (more than {STALE_AFTER_INTERVALS} intervals of {interval:g} s)"
        if state.sweep_error:
            reason += f"; the last attempt failed: {state.sweep_error}"
        return 503, reason
    return 200, f"ok: last sweep {age:.1f} s ago" + sources_health(state.snapshot)


def sources_health(snapshot) -> str:
    """Each container source's own status: `; sources: docker ok, containerd (CRI) ok`. A source that does not
    answer does not fail the agent (the sweep still measures what the others name): the text says it."""
    sources = getattr(getattr(snapshot, "host", None), "sources", ())
    if not sources:
        return ""
    parts = []
    for s in sources:
        name = (s.runtime or s.kind) + (" (CRI)" if s.kind == "cri" else "")
        parts.append(f"{name} {s.status}" + (f" ({s.error})" if s.error and not s.ok and not s.quiet else ""))
    return "; sources: " + ", ".join(parts)


def make_handler(state: Callable[[], ServeState], metrics: Callable[[], bytes], interval: float,
                 extra_health: Callable[[], str | None] = lambda: None):
    """`metrics` renders /metrics (metrics.Exposition.render)."""
    from mltop.probes.model import snapshot_to_json

    class Handler(BaseHTTPRequestHandler):
        server_version = "mltop-serve"
        timeout = 10  # a client that stops sending cannot pin a worker

        def do_GET(self):  # noqa: N802 (the http.server API)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                # Text format 0.0.4 only: the cached snapshot part and the live self part concatenate.
                self._send(200, metrics(), CONTENT_TYPE_LATEST)
            elif path == "/snapshot.json":
                current = state()
                if current.snapshot is None:
                    self._send(503, b"no snapshot yet\n", "text/plain; charset=utf-8")
                else:
                    self._json(snapshot_to_json(current.snapshot))
            elif path == "/findings.json":
                current = state()
                if current.doctor is None:
                    self._send(503, b"the doctor has not run yet\n", "text/plain; charset=utf-8")
                else:
                    self._json(current.doctor.to_json())
            elif path == "/healthz":
                code, reason = health(state(), interval)
                extra = extra_health()  # the recorder's problem (full disk, read-only path), if any
                if extra:
                    reason += f"; {extra}"
                self._send(code, (reason + "\n").encode(), "text/plain; charset=utf-8")
            elif path == "/":
                self._send(200, b"mltop serve: /metrics /snapshot.json /findings.json /healthz\n",
                           "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")

        def _json(self, doc) -> None:
            self._send(200, json.dumps(doc).encode(), "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            if "gzip" in (self.headers.get("Accept-Encoding") or "") and len(body) > 1024:
                body = gzip.compress(body, compresslevel=1)
                encoding = "gzip"
            else:
                encoding = None
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            if encoding:
                self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 (the http.server API)
            log.debug("%s " + format, self.address_string(), *args)

    return Handler
