"""An HTTP server that misbehaves on purpose, for the Prometheus client's tests: each connection's request head
is recorded and answered by a function the test gives (raw socket writes: trickle, truncate, redirect, garbage)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Callable


class Request:
    def __init__(self, head: bytes):
        lines = head.decode("latin-1").split("\r\n")
        self.method, self.target, _ = (lines[0].split(" ") + ["", "", ""])[:3]
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        parts = urllib.parse.urlsplit(self.target)
        self.path = parts.path
        self.params = dict(urllib.parse.parse_qsl(parts.query))


Respond = Callable[[socket.socket, Request], None]


class MisbehavingServer:
    """Listens on `host`:free port; `respond(sock, request)` writes whatever it likes, then the socket closes."""

    def __init__(self, respond: Respond, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None):
        self.respond = respond
        self.tls = tls
        self.requests: list[Request] = []
        self._listener = socket.create_server((host, 0))
        self.host, self.port = host, self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            head = b""
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)  # closed without close_notify
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        return
                    head += data
                request = Request(head.split(b"\r\n\r\n")[0])
                self.requests.append(request)
                self.respond(conn, request)
            except OSError:  # the client gave up (that is what most tests wait for)
                pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


def answer(conn: socket.socket, body: bytes, status: str = "200 OK", headers: tuple[str, ...] = ()) -> None:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Content-Type: application/json",
            "Connection: close", *headers]
    conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)


def vector(*samples: tuple[dict, float]) -> bytes:
    now = time.time()
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [now, str(value)]} for labels, value in samples]}}).encode()
