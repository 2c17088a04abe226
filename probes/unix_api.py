"""The engine's read-only API calls straight over a local unix socket, with the standard library.

The docker SDK costs ~60 ms of CPU to import (requests, urllib3, charset_normalizer) and ~0.5 ms of CPU a
call. On a local engine mltop's hot calls — version, the container list, info, inspect and the events
stream — need none of it: they are GETs that answer JSON. `Engine` (engine.py) tries this path first and
asks the SDK whenever it cannot answer (no socket, permission denied, an unexpected status, a broken
stream): the SDK then explains the failure as before, and still does everything else (logs, exec, ping,
remote engines over tcp:// or ssh://).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any, Iterator
from urllib.parse import quote, urlencode


class Unanswered(Exception):
    """This path cannot answer the call (the caller asks the SDK instead)."""


class NoSuchContainer(LookupError):
    """The engine answered 404 for a container: it was removed."""


class _UnixConnection(http.client.HTTPConnection):
    """http.client over the unix socket, for the events stream only: one long-lived chunked answer read line
    by line, opened once a session, where http.client's cost does not matter (GETs use _GetConnection)."""

    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _GetConnection:
    """One kept-alive HTTP/1.1 connection for GETs: the request written whole, the answer read with a buffered
    reader (status line, headers, a Content-Length, chunked or read-to-close body). http.client parses every
    answer's headers with the email package: an inspect cost 110 us of CPU that way, 76 this way (a cold
    start on a dense host inspects every container)."""

    def __init__(self, path: str, timeout: float | None):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._reader = sock.makefile("rb")
        self.answered = 0  # answers read on this connection

    def get(self, url: str) -> tuple[int, bytes, bool]:
        """(status, body, whether the server closes the connection after it)."""
        self._sock.sendall(b"GET " + url.encode("ascii") + b" HTTP/1.1\r\nHost: docker\r\n\r\n")
        reader = self._reader
        status_line = reader.readline(_LINE_MAX)
        if not status_line:
            raise _Dropped("the engine closed the connection")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ConnectionError(f"no HTTP status line ({b' '.join(parts)[:40]!r})")
        status = int(parts[1])
        length = None
        chunked = closes = False
        while True:
            line = reader.readline(_LINE_MAX)
            if not line:
                raise ConnectionError("the engine closed the connection mid-answer")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                closes = b"close" in value.lower()
        if chunked:
            body = self._read_chunked()
        elif length is not None:
            body = reader.read(length)
            if len(body) < length:
                raise ConnectionError("the engine closed the connection mid-answer")
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body, closes = reader.read(), True  # no length: the body runs to the end of the connection
        self.answered += 1
        return status, body, closes

    def _read_chunked(self) -> bytes:
        reader = self._reader
        chunks = []
        while True:
            size = int(reader.readline(_LINE_MAX).split(b";", 1)[0], 16)
            if size == 0:
                while reader.readline(_LINE_MAX) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunk = reader.read(size)
            if len(chunk) < size:
                raise ConnectionError("the engine closed the connection mid-answer")
            chunks.append(chunk)
            reader.readline(_LINE_MAX)

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            self._sock.close()


_LINE_MAX = 65536


class _Dropped(ConnectionError):
    """The engine closed a kept connection before answering (an idle keep-alive it let go)."""


class UnixSocketAPI:
    """GETs to the engine at `socket_path`, one kept-alive connection per thread."""

    def __init__(self, socket_path: str, timeout_s: float):
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.api_version: str | None = None  # the server's, from /version: what the SDK would negotiate
        self._local = threading.local()

    def version(self) -> dict[str, Any]:
        """GET /version (unversioned); remembers the API version for the calls that follow."""
        status, doc = self._get("/version")
        if status != 200 or not isinstance(doc, dict) or not doc.get("ApiVersion"):
            raise Unanswered(f"/version answered {status}")
        self.api_version = str(doc["ApiVersion"])
        return doc

    def get(self, path: str, **query: Any) -> Any:
        """GET /v<api>/<path>, the JSON it answers. NoSuchContainer on 404, Unanswered on anything else."""
        if self.api_version is None:
            self.version()
        url = f"/v{self.api_version}{path}"
        if query:
            url += "?" + urlencode(query)
        status, doc = self._get(url)
        if status == 404:
            raise NoSuchContainer(f"No such container: {path}")
        if status != 200:
            raise Unanswered(f"{path} answered {status}")
        return doc

    def inspect(self, container_id: str) -> dict[str, Any]:
        return self.get(f"/containers/{quote(container_id, safe='')}/json")

    def events(self, filters: dict[str, list[str]], since: float | None = None) -> "EventStream":
        """The events stream (its own connection, which close() ends)."""
        if self.api_version is None:
            self.version()
        query: dict[str, str] = {"filters": json.dumps(filters)}
        if since is not None:
            query["since"] = f"{since:.9f}"
        conn = _UnixConnection(self.socket_path, None)  # waits as long as no event comes
        try:
            conn.request("GET", f"/v{self.api_version}/events?{urlencode(query)}")
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise Unanswered(f"events: {exc}") from exc
        if response.status != 200:
            conn.close()
            raise Unanswered(f"events answered {response.status}")
        return EventStream(conn, response)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _get(self, url: str) -> tuple[int, Any]:
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            try:
                if conn is None:
                    conn = self._local.conn = _GetConnection(self.socket_path, self.timeout_s)
                reused = conn.answered > 0
                status, body, closes = conn.get(url)
            except (OSError, ValueError) as exc:
                if conn is not None:
                    conn.close()
                self._local.conn = None
                dropped = isinstance(exc, (_Dropped, BrokenPipeError, ConnectionResetError))
                if attempt == 1 and conn is not None and reused and dropped:
                    continue  # a kept connection the engine had closed meanwhile: once more on a new one
                raise Unanswered(f"{url}: {type(exc).__name__}: {exc}") from exc
            if closes:
                conn.close()
                self._local.conn = None
            break
        if status != 200:
            return status, None
        try:
            return 200, json.loads(body)
        except (ValueError, RecursionError) as exc:  # not JSON, or nested past the parser's depth
            raise Unanswered(f"{url}: not JSON") from exc


class EventStream:
    """Iterates the engine's events as dicts (one JSON object a line); close() from another thread ends it."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self._conn = conn
        self._response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            line = self._response.readline()
            if not line:
                return
            line = line.strip()
            if line:
                yield json.loads(line)

    def close(self) -> None:
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in readline()
            except OSError:
                pass
        self._conn.close()
