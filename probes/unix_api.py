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
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _UnixConnection(self.socket_path, self.timeout_s)
        try:
            conn.request("GET", url)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._local.conn = None
            raise Unanswered(f"{url}: {type(exc).__name__}: {exc}") from exc
        if response.status != 200:
            return response.status, None
        try:
            return 200, json.loads(body)
        except ValueError as exc:
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
