"""One GET to a server mltop does not trust: one deadline for all of it, a size cap, credentials kept to their origin.

urllib's defaults are made for servers that behave: its timeout is per socket operation (a server that trickles
a byte at a time holds a read for as long as it likes), `read()` takes whatever size it is sent, a redirect to
another host carries the Authorization header along, and a truncated answer is an `http.client` exception that
no caller expects. Here the deadline covers connect, headers and body; the answer is read in chunks and given
up past `max_bytes`; a redirect is followed only within the same origin (scheme, host and port) and at most
`MAX_REDIRECTS` times; every failure is a `PrometheusError` with a kind. urllib stays underneath for what it
does well ($HTTP(S)_PROXY, TLS, chunked bodies).

Text a server sent (an error body, a Location) is cut to `SERVER_TEXT_CHARS` here and kept otherwise as sent:
the screens that show it make it printable (tui/sanitize.py).
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Mapping

MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
ERROR_BODY_BYTES = 64 * 1024  # of a 4xx/5xx answer, enough for Prometheus's error text
SERVER_TEXT_CHARS = 300
_CHUNK = 256 * 1024


class PrometheusError(Exception):
    """A query that got no usable answer. `kind`: unreachable | timeout | unauthorized | refused | redirected |
    too_large | truncated | bad_response."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def server_text(value: object, limit: int = SERVER_TEXT_CHARS) -> str:
    """Text a server chose, cut to `limit` characters with `…` (made printable where it is shown)."""
    text = value if isinstance(value, str) else str(value)
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in: what a credential is scoped to."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return (scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme))


def shown_url(url: str) -> str:
    """`url` without credentials or query, cut: how a server-given address appears in a message."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return server_text(urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", "")), 200)


def get(url: str, headers: Mapping[str, str], *, timeout: float, max_bytes: int = DEFAULT_MAX_BYTES,
        context: ssl.SSLContext | None = None, shown: str | None = None) -> bytearray:
    """GET `url` within `timeout` seconds in all; the body of a 2xx answer. A 4xx/5xx answer raises
    `HttpStatus` (its body cut to ERROR_BODY_BYTES); anything else that goes wrong raises PrometheusError.
    `shown` is how the server is named in messages (the URL without credentials)."""
    shown = shown or shown_url(url)
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(
        _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline, context), _SameOriginRedirects(shown))
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with opener.open(request, timeout=max(deadline - time.monotonic(), 0.001)) as response:
            return read_capped(response, max_bytes, shown)
    except urllib.error.HTTPError as err:
        if 300 <= err.code < 400:
            raise PrometheusError("redirected", f"{shown} answered {err.code} and it was not followed (more than {MAX_REDIRECTS} redirects, or one "
                                  "without a usable Location): give --prometheus the address it serves on"
                                  ) from None
        try:
            body = err.read(ERROR_BODY_BYTES)
        except Exception:  # the status is what matters; a body that breaks off says nothing more
            body = b""
        finally:
            err.close()
        raise HttpStatus(err.code, server_text(err.reason, 80), body) from None
    except PrometheusError:
        raise
    except Exception as err:
        raise transport_error(err, shown, timeout) from None


class HttpStatus(Exception):
    """A 4xx/5xx answer: its code, reason and the start of its body (for the caller to word)."""

    def __init__(self, code: int, reason: str, body: bytes):
        super().__init__(f"{code} {reason}")
        self.code, self.reason, self.body = code, reason, body


def transport_error(err: BaseException, shown: str, timeout: float) -> PrometheusError:
    """What went wrong on the way, as a PrometheusError a user can act on."""
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException):
        if isinstance(err.reason, ssl.SSLError):
            return PrometheusError("unreachable", f"{shown}: TLS failed ({server_text(err.reason, 160)}); give "
                                   "the server's CA with --ca-file")
        if isinstance(err.reason, TimeoutError):
            return _timeout(shown, timeout)
        return PrometheusError("unreachable", f"cannot reach Prometheus at {shown}: {_reason(err.reason)}")
    if isinstance(err, urllib.error.URLError):
        return PrometheusError("unreachable", f"cannot reach Prometheus at {shown}: {server_text(err.reason, 160)}")
    if isinstance(err, TimeoutError):
        return _timeout(shown, timeout)
    if isinstance(err, http.client.IncompleteRead):
        return _truncated(shown, len(err.partial))
    if isinstance(err, (http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
        return PrometheusError("truncated", f"{shown}: the connection broke before the answer was complete "
                               f"({_reason(err)}): a proxy or Prometheus restarting? It is read again at the "
                               "next refresh")
    if isinstance(err, http.client.HTTPException):
        return PrometheusError("bad_response", f"{shown} did not answer HTTP ({_reason(err)}): is it "
                               "Prometheus, and is the scheme (http:// or https://) right?")
    if isinstance(err, OSError):
        return PrometheusError("unreachable", f"cannot reach Prometheus at {shown}: {_reason(err)}")
    return PrometheusError("bad_response", f"{shown}: the answer could not be read ({_reason(err)})")


def read_capped(response: http.client.HTTPResponse, max_bytes: int, shown: str) -> bytearray:
    """The body, read in chunks and given up as soon as it passes `max_bytes` (so memory stays near the cap)."""
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > max_bytes:
        raise _too_large(shown, max_bytes, f"it declares {int(declared) / 2**20:.0f} MiB")
    body = bytearray()
    while True:
        chunk = response.read(min(_CHUNK, max_bytes + 1 - len(body)))
        if not chunk:
            break
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(shown, max_bytes, "it went on past that")
    if response.length:  # a Content-Length that the connection closed short of (read(n) does not raise)
        raise _truncated(shown, len(body))
    return body  # not copied to bytes: at the cap that would be a second 64 MiB


def _truncated(shown: str, got: int) -> PrometheusError:
    return PrometheusError("truncated", f"{shown}: the answer broke off after {got} bytes (the connection closed "
                           "early): a proxy or Prometheus restarting? It is read again at the next refresh")


def _too_large(shown: str, max_bytes: int, how: str) -> PrometheusError:
    return PrometheusError("too_large", f"{shown}: the answer is larger than the {max_bytes / 2**20:g} MiB cap "
                           f"({how}); raise it with --max-answer-mib, or narrow the query")


def _timeout(shown: str, timeout: float) -> PrometheusError:
    return PrometheusError("timeout", f"{shown} did not answer within {timeout:g} s (connect, headers and body "
                           "together); --query-timeout gives it longer")


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return server_text(f"{type(err).__name__}: {text}" if type(err).__name__ not in text else text, 160)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect within the origin it started from (Prometheus behind a path prefix redirects there);
    refuses one to another origin, where the Authorization header must not go."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, shown: str):
        super().__init__()
        self._shown = shown

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        fp.close()  # never read a redirect's body: its size and pace are the server's
        if origin(newurl) != origin(req.full_url):
            raise PrometheusError(
                "redirected", f"{self._shown} redirected to {shown_url(newurl)}, another origin (scheme, host "
                "or port): not followed, so the credentials are not sent there; give --prometheus that address "
                "if it is yours")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _deadline_connection(base: type[http.client.HTTPConnection], deadline: float):
    class DeadlineConnection(base):  # type: ignore[misc, valid-type]
        def connect(self) -> None:
            self.timeout = _remaining(deadline)  # connect, proxy tunnel and TLS handshake
            super().connect()
            self.sock = _DeadlineSocket(self.sock, deadline)  # every send and read after
    return DeadlineConnection


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self._connection = _deadline_connection(http.client.HTTPConnection, deadline)

    def http_open(self, req):
        return self.do_open(self._connection, req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float, context: ssl.SSLContext | None):
        super().__init__(context=context)
        self._connection = _deadline_connection(http.client.HTTPSConnection, deadline)
        self._tls = context  # None: http.client's default context (the system's CAs)

    def https_open(self, req):
        return self.do_open(self._connection, req, context=self._tls)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request's deadline passed")
    return left


class _DeadlineSocket:
    """The connected socket as http.client uses it (sendall, makefile, close), each operation given only what is
    left of the request's deadline: a server that trickles bytes runs out of time instead of resetting it."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def arm(self) -> None:
        self._sock.settimeout(_remaining(self._deadline))

    def sendall(self, data) -> None:
        self.arm()
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock.makefile("rb", buffering=0), self))

    def close(self) -> None:
        self._sock.close()  # the reader above holds its own reference until the response is read


class _DeadlineReader(io.RawIOBase):
    def __init__(self, raw: io.RawIOBase, owner: _DeadlineSocket):
        super().__init__()
        self._raw = raw
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._owner.arm()
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()
