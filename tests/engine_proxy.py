"""A unix-socket proxy in front of the real engine that a test can cut and restore (stop(), start() on the same
path), or that holds each of the engine's answers a while (a slow engine), without touching the dockerd other
tests share; it notes each request line that passes. The one proxy of the tests (engine events, the recorder,
serve with its engine gone, rates behind a slow engine)."""

from __future__ import annotations

import os
import re
import socket
import threading
import time


class EngineSocketProxy:
    def __init__(self, path: str, target: str = "/var/run/docker.sock", delay_s: float = 0.0,
                 hold: "re.Pattern[str] | None" = None):
        self.path, self.target = str(path), target
        # A request whose line matches `hold` is never passed on: its client waits as on a wedged engine
        # (seen: a dockerd that still lists containers and never answers their inspects).
        self.hold = hold
        self.held: list[str] = []
        # Each answer's first bytes after a request wait delay_s (a stream's later events pass at once).
        self.delay_s = delay_s
        self.answers_delayed = 0
        self.requests: list[str] = []  # "GET /v1.41/events?..." as clients sent them
        self.connections = 0  # clients that connected (a turned-off engine must see none)
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def events_requests(self) -> list[str]:
        return [r for r in self.requests if "/events" in r]

    def start(self) -> "EngineSocketProxy":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(self.path)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            asked = threading.Event()
            threading.Thread(target=self._pipe, args=(client, upstream, True, asked), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False, asked), daemon=True).start()

    @property
    def stopped(self) -> bool:
        return self._listener is None

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool, asked: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if from_client:
                    asked.set()
                    held = False
                    for line in data.split(b"\r\n"):
                        if line[:4] in (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE"):
                            request = line.decode(errors="replace")
                            self.requests.append(request)
                            if self.hold is not None and self.hold.search(request):
                                self.held.append(request)
                                held = True
                    if held:
                        continue
                elif self.delay_s and asked.is_set():
                    asked.clear()
                    self.answers_delayed += 1
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        """Cut: no new connection is accepted and every open one (an events stream too) is broken."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            listener.close()
            os.unlink(self.path)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
