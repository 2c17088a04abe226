"""The HTTP side: /metrics, /snapshot.json, /findings.json, /healthz, answered from the published state on the
front's few worker threads (front.py reads the requests), behind basic auth when --web-config asks for it.
/snapshot.json and /findings.json (every container's command, mounts, labels, environment) go only to
loopback clients and to clients that passed basic auth, unless --expose-snapshot."""

from __future__ import annotations

import gzip
import http.client
import io
import ipaddress
import json
import logging
import time
from http.server import BaseHTTPRequestHandler
from typing import Callable

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .front import WORKERS  # noqa: F401 (tests size their thread bound by it)
from .loop import ServeState

log = logging.getLogger(__name__)
STALE_AFTER_INTERVALS = 3
PRIVATE_PATHS = ("/snapshot.json", "/findings.json")
PRIVATE_REFUSED = (b"403 Forbidden: this carries every container's command, mounts, labels and environment, so "
                   b"mltop serve answers it only to loopback clients and to clients that pass --web-config's "
                   b"basic auth; start it with --expose-snapshot to serve it to any client that reaches it\n")


def is_loopback_address(host: str) -> bool:
    """Whether `host` (an IP address as a socket gives it) is a loopback address: 127.0.0.0/8, ::1, or
    127.x mapped in IPv6. A client address on the host's own network interfaces is not: anything on the
    network may stand behind it (a pod on the host network, a NAT)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def password_check_needed(auth) -> "Callable[[bytes], bool] | None":
    """front.HttpFront's `costly`: whether answering a request head costs a bcrypt check (its Authorization
    header's verdict is not remembered yet). Parses the head as http.server will (http.client.parse_headers),
    so both read the same header."""
    if auth is None:
        return None

    def costly(head: bytes) -> bool:
        lines = io.BytesIO(head)
        lines.readline()  # the request line
        try:
            headers = http.client.parse_headers(lines)
        except http.client.HTTPException:
            return False  # http.server refuses this head (431) before any check
        return auth.known(headers.get("Authorization")) is None

    return costly


def buffered_answer(handler_class) -> Callable[[bytes, tuple], bytes]:
    """An `Answer` for front.HttpFront: runs `handler_class` (a BaseHTTPRequestHandler) over a request head
    that has already arrived whole, and returns what it wrote. The handler never touches the socket, so
    http.server's parsing (400 for garbage, 431 for more than 100 headers) stays as it was."""

    class Buffered(handler_class):
        def setup(self):
            self.rfile = io.BytesIO(self.request)
            self.wfile = io.BytesIO()

        def finish(self):
            pass

    def answer(head: bytes, client_address: tuple) -> bytes:
        return Buffered(head, client_address, None).wfile.getvalue()

    return answer


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
                 extra_health: Callable[[], str | None] = lambda: None, auth=None, expose_snapshot: bool = False):
    """`metrics` renders /metrics (metrics.Exposition.render); `auth` (webconfig.BasicAuth) or None;
    `expose_snapshot`: serve PRIVATE_PATHS to any client, not only loopback and authenticated ones."""
    from mltop.probes.model import snapshot_to_json

    class Handler(BaseHTTPRequestHandler):
        server_version = "mltop-serve"
        # A request line of one word ("garbage") is HTTP/0.9 to http.server, whose errors have no status line:
        # answer it as HTTP/1.0 so the client sees its 400.
        default_request_version = "HTTP/1.0"

        def do_GET(self):  # noqa: N802 (the http.server API)
            if auth is not None and not auth.allows(self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="mltop serve", charset="UTF-8"')
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", "13")
                self.end_headers()
                self.wfile.write(b"Unauthorized\n")
                return
            path = self.path.split("?", 1)[0]
            if (path in PRIVATE_PATHS and auth is None and not expose_snapshot
                    and not is_loopback_address(self.client_address[0])):
                self._send(403, PRIVATE_REFUSED, "text/plain; charset=utf-8")
            elif path == "/metrics":
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
