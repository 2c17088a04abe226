"""The agent's HTTP front: one asyncio loop accepts connections, does TLS, reads each request's line and
headers under a deadline, and hands only complete requests to a few worker threads.

A connection that has not sent a whole request costs a socket and a few bytes, never a worker: idle or
trickling clients (slowloris) cannot make scrapes wait. A client address keeps at most 64 connections that
have waited over a second for their request: a newcomer past that closes the oldest of them (a burst of
fresh connections, e.g. 200 parallel scrapes, is let in), and at most 256 connections in all. At the total
cap the oldest connection still waiting for its request, of the client holding the most, is closed to make
room (else its oldest answer that the client stopped reading). Either way a newcomer that sends its request
at once, as Prometheus does, is served.

Answers the clients do not read are bounded too: a client with 8 MiB of answers waiting to be sent gets 503
for its next request; past 32 MiB in all (answers waiting, and those being made at the size of the largest
recent answer) the stalled answers of the client with the most waiting are dropped to make room, else the
newcomer gets 503. At most 8 answers are made and not yet handed to their connection. An answer of which the
client takes no byte for 10 s, or not all in 60 s, is dropped. A request whose password has not been checked
yet (`costly`) waits for a check thread of its own, never for the workers: at most 2 per client and 16 in
all wait, the rest get 429 at once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

log = logging.getLogger(__name__)

WORKERS = 4
HEAD_DEADLINE_S = 5.0  # the TLS handshake, then the request line and headers, each within this
WRITE_DEADLINE_S = 60.0  # an answer not taken whole after this is dropped
WRITE_STALL_S = 10.0  # ... and one of which the client takes no byte for this long
STALLED_AFTER_S = 1.0  # an answer that made no progress for this long may be dropped to make room
MAX_HEAD_BYTES = 65536  # http.server's limit for one line; a head past it is refused (414 or 431)
MAX_CONNECTIONS = 1024
MAX_CONNECTIONS_PER_CLIENT = 64  # waiting over IDLE_AFTER_S for their request
MAX_OPEN_PER_CLIENT = 256  # in any state
IDLE_AFTER_S = 1.0  # a connection without its request after this long counts against its client's cap
MAX_PENDING_PER_CLIENT = 8 << 20  # bytes of answers waiting to be sent to one client address
MAX_PENDING = 32 << 20  # ... to all (/metrics is 1.3 MB at 200 containers; the DaemonSet's limit is 256 Mi)
SEND_BUFFER_BYTES = 64 << 10  # per connection in the kernel: 1.3 MB in 20 RTTs, 64 MiB for 1024 stalled clients
ANSWER_SIZE_WINDOW_S = 300.0
CHECK_THREADS = 1
ANSWERS_MADE = 2 * WORKERS  # answers made and not yet handed to their connection, at most
CHECKS_PER_CLIENT = 2  # requests waiting for (or in) a password check, per client address
CHECKS_WAITING = 16  # ... in all
_FD_RESERVE = 256  # descriptors left for cgroup files, the engine, the recorder (see probes/openfiles)

Answer = Callable[[bytes, tuple], bytes]  # (request head, client address) -> the whole HTTP response
Costly = Callable[[bytes], bool]  # request head -> whether answering it costs a password check


def _canned(code: int, reason: str, why: str = "", headers: str = "") -> bytes:
    body = f"{code} {reason}{': ' + why if why else ''}\n".encode()
    return (f"HTTP/1.0 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n{headers}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


URI_TOO_LONG = _canned(414, "Request-URI Too Long")
HEADERS_TOO_LARGE = _canned(431, "Request Header Fields Too Large")
SERVER_ERROR = _canned(500, "Internal Server Error")
BUSY = _canned(503, "Service Unavailable", "too many answers are waiting to be read", "Retry-After: 1\r\n")
TOO_MANY_CHECKS = _canned(429, "Too Many Requests", "too many password checks are waiting", "Retry-After: 1\r\n")


def head_end(buffer: bytearray, start: int) -> int:
    """Where the request head ends (after its blank line), searching from `start`; -1 while incomplete.
    Lines may end in CRLF or, as http.server accepts, a bare LF."""
    crlf = buffer.find(b"\n\r\n", start)
    lf = buffer.find(b"\n\n", start)
    ends = [i + 3 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends) if ends else -1


def connection_cap(open_file_limit: int) -> int:
    """How many connections the front holds at most under this open-file limit. The sampler keeps up to three
    quarters of the limit as open cgroup files (probes/openfiles): connections get half of the rest."""
    room = max(16, (open_file_limit - max(_FD_RESERVE, open_file_limit * 3 // 4)) // 2)
    return min(MAX_CONNECTIONS, room)


class _NoRoom(Exception):
    """A worker found no room for one more answer made and not yet written."""


class _Connection(asyncio.Protocol):
    """One client connection: reading its head, then waiting on a worker, then writing the answer."""

    def __init__(self, front: "HttpFront", peer: tuple):
        self.front = front
        self.peer = peer
        self.client = peer[0]
        self.state = "head"  # head -> busy -> writing
        self.opened = front.loop.time()
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.start_task: asyncio.Future | None = None  # accepting (and the TLS handshake), until it is made
        self.written_at = self.progress_at = 0.0  # when the answer was handed over; when it last moved
        self.left = 0  # bytes of the answer still waiting to be sent, as last seen
        self.reserved = 0  # while busy: the bytes its answer is expected to take (counted against the caps)
        self.timer = front.loop.call_later(2 * HEAD_DEADLINE_S if front.ssl_context else HEAD_DEADLINE_S,
                                           self.close)

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.state != "head":
            return
        start = max(0, len(self.buffer) - 2)
        self.buffer += data
        end = head_end(self.buffer, start)
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                first_line_ends = self.buffer.find(b"\n", 0, MAX_HEAD_BYTES + 1)
                self.write_and_close(URI_TOO_LONG if first_line_ends < 0 else HEADERS_TOO_LARGE)
            return
        if end > MAX_HEAD_BYTES + 2:
            self.write_and_close(URI_TOO_LONG if self.buffer.find(b"\n") > MAX_HEAD_BYTES else HEADERS_TOO_LARGE)
            return
        self.state = "busy"
        self.timer.cancel()
        self.transport.pause_reading()
        head, self.buffer = bytes(self.buffer[:end]), bytearray()
        self.front.dispatch(self, head)

    def eof_received(self) -> bool:
        if self.state == "head":
            self.close()
        # A plain client that half-closes after its request still gets the answer (TLS cannot half-close).
        return self.front.ssl_context is None

    def connection_lost(self, exc) -> None:
        self.timer.cancel()
        self.transport = None
        self.front.forget(self)

    # ------------------------------------------------------------ states

    def answered(self, future: asyncio.Future) -> None:
        granted, self.reserved = self.reserved, 0
        if self.transport is None or future.cancelled():
            return
        try:
            response = future.result()
        except Exception:
            log.exception("answering %s failed", self.client)
            response = SERVER_ERROR
        self.front.note_answer_size(len(response))
        if not self.front.room_to_answer(self.client, len(response), granted):
            response = BUSY
        self.write_and_close(response)

    def write_and_close(self, response: bytes) -> None:
        if self.transport is None:
            return
        self.state = "writing"
        self.timer.cancel()
        self.transport.write(response)
        self.transport.close()  # after the buffer is flushed
        self.written_at = self.progress_at = self.front.loop.time()
        self.left = self.transport.get_write_buffer_size()
        # Also with nothing left here: a TLS close waits for the client's answer, and it may never come.
        self.timer = self.front.loop.call_later(STALLED_AFTER_S, self._watch_write)

    def pending(self) -> int:
        """Bytes of this connection's answer waiting in the agent (0 before its answer, and once dropped)."""
        if self.state != "writing" or self.transport is None:
            return 0
        return self.transport.get_write_buffer_size()

    def stalled_for(self, now: float) -> float:
        """Seconds since the client last took a byte of its answer (0 while it takes them)."""
        if self.state != "writing" or self.transport is None:
            return 0.0
        left = self.transport.get_write_buffer_size()
        if left < self.left:
            self.left, self.progress_at = left, now
        return now - self.progress_at

    def _watch_write(self) -> None:
        now = self.front.loop.time()
        if self.stalled_for(now) > WRITE_STALL_S or now - self.written_at > WRITE_DEADLINE_S:
            self.abort()
        elif self.transport is not None:
            self.timer = self.front.loop.call_later(STALLED_AFTER_S, self._watch_write)

    def close(self) -> None:
        """Close without answering (a deadline passed, a cap made room, the front stops)."""
        self.timer.cancel()
        if self.transport is not None:
            self.transport.abort()
        elif self.start_task is not None:
            self.start_task.cancel()  # still accepting or in the TLS handshake

    def abort(self) -> None:
        """Drop the connection, its unsent answer with it."""
        self.timer.cancel()
        self.state = "dropped"
        if self.transport is not None:
            self.transport.abort()


class HttpFront:
    """Listens on `address`; `answer(head, client_address)` runs on one of `workers` threads and returns the
    whole response, after which the connection closes. A head for which `costly(head)` is true (its password
    is not checked yet) is answered on the check thread instead. Same life cycle as socketserver:
    serve_forever() on one thread, shutdown() from any other, server_close()."""

    def __init__(self, address: tuple[str, int], answer: Answer, *, ssl_context: ssl.SSLContext | None = None,
                 workers: int = WORKERS, max_connections: int | None = None,
                 max_per_client: int = MAX_CONNECTIONS_PER_CLIENT, costly: Costly | None = None,
                 max_pending: int = MAX_PENDING, max_pending_per_client: int = MAX_PENDING_PER_CLIENT):
        from mltop.probes.openfiles import raise_open_file_limit

        self.answer = answer
        self.costly = costly
        self.ssl_context = ssl_context
        self.max_per_client = max_per_client
        self.max_open_per_client = max(max_per_client, MAX_OPEN_PER_CLIENT)
        self.max_pending, self.max_pending_per_client = max_pending, max_pending_per_client
        self.max_connections = max_connections or connection_cap(raise_open_file_limit())
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(512)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mltop-serve-http")
        self.check_pool = ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="mltop-serve-check")
        self._checks: dict[str, int] = {}  # client -> requests waiting for (or in) a password check
        self._made = threading.Semaphore(ANSWERS_MADE)
        self._largest = [0, 0]  # the largest answer of this ANSWER_SIZE_WINDOW_S and of the one before
        self._largest_since = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._shutdown_requested = threading.Event()
        self._finished = threading.Event()
        self._by_client: dict[str, list[_Connection]] = {}  # oldest first
        self._count = 0
        self._warned_at = float("-inf")

    # ------------------------------------------------------------ life cycle

    def serve_forever(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            self._finished.set()

    def shutdown(self) -> None:
        """Stop serve_forever (from another thread or a signal handler) and wait for it."""
        self._shutdown_requested.set()
        loop = self.loop
        if loop is not None and self._stopped is not None:
            try:
                loop.call_soon_threadsafe(self._stopped.set)
            except RuntimeError:  # the loop has closed already
                pass
        if threading.current_thread() is not threading.main_thread():
            self._finished.wait(10)

    def server_close(self) -> None:
        self.socket.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.check_pool.shutdown(wait=False, cancel_futures=True)

    def connections(self) -> int:
        return self._count

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if self._shutdown_requested.is_set():
            return
        accepting = asyncio.create_task(self._accept_forever())
        try:
            await self._stopped.wait()
        finally:
            accepting.cancel()
            for conns in list(self._by_client.values()):
                for conn in list(conns):
                    conn.close()
            await asyncio.sleep(0)

    async def _accept_forever(self) -> None:
        while True:
            try:
                sock, peer = await self.loop.sock_accept(self.socket)
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if self.loop.time() - self._warned_at > 60:  # once a minute, not once an accept
                        self._warned_at = self.loop.time()
                        log.warning("accepting a connection failed (%s): closing idle ones", err.strerror)
                    self._make_room()
                    await asyncio.sleep(0.05)
                    continue
                log.debug("accept failed", exc_info=True)
                continue
            self._admit(sock, peer)

    def _admit(self, sock: socket.socket, peer: tuple) -> None:
        client = peer[0]
        if len(self._by_client.get(client, ())) >= self.max_per_client:
            self._close_idle(client, keep=self.max_per_client - 1)
        if len(self._by_client.get(client, ())) >= self.max_open_per_client and self._drop_stalled(client) is None:
            sock.close()
            return
        if self._count >= self.max_connections and not self._make_room():
            sock.close()
            return
        sock.setblocking(False)
        try:
            # A fixed send buffer: the kernel would otherwise grow it to megabytes per client that does not
            # read (memory the caps above do not see, and that the agent's cgroup pays for).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:
            pass
        conn = _Connection(self, peer)
        self._by_client.setdefault(client, []).append(conn)
        self._count += 1
        started = asyncio.ensure_future(self.loop.connect_accepted_socket(
            lambda: conn, sock, ssl=self.ssl_context,
            ssl_handshake_timeout=HEAD_DEADLINE_S if self.ssl_context else None))
        conn.start_task = started
        # A done callback runs even when the task is cancelled before it began (a cap closed the connection
        # at once): the socket is closed whatever happened.
        started.add_done_callback(lambda task: self._started(conn, sock, task))

    def _started(self, conn: _Connection, sock: socket.socket, task: asyncio.Future) -> None:
        conn.start_task = None
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.debug("connection from %s failed before its request: %s", conn.client, task.exception())
            sock.close()
            conn.timer.cancel()
            self.forget(conn)

    def forget(self, conn: _Connection) -> None:
        conns = self._by_client.get(conn.client)
        if conns is None or conn not in conns:
            return
        conns.remove(conn)
        self._count -= 1
        if not conns:
            del self._by_client[conn.client]

    def _close_idle(self, client: str, keep: int) -> None:
        """Close `client`'s oldest connections that have waited over IDLE_AFTER_S for their request, until it
        holds `keep`."""
        conns = self._by_client.get(client, [])
        now = self.loop.time()
        for conn in [c for c in conns if c.state == "head" and now - c.opened > IDLE_AFTER_S]:
            if len(conns) <= keep:
                return
            conn.close()
            self.forget(conn)

    def _make_room(self) -> bool:
        """Close the oldest connection still waiting for its request, of the client holding the most
        connections, else the oldest stalled answer of such a client. False when every connection is busy."""
        biggest = sorted(self._by_client.items(), key=lambda item: len(item[1]), reverse=True)
        for conns in (conns for _, conns in biggest):
            for conn in conns:
                if conn.state == "head":
                    conn.close()
                    self.forget(conn)
                    return True
        return any(self._drop_stalled(client) is not None for client, _ in biggest)

    # ------------------------------------------------------------ answering, within the caps

    def note_answer_size(self, size: int) -> None:
        now = self.loop.time()
        if now - self._largest_since > ANSWER_SIZE_WINDOW_S:
            self._largest, self._largest_since = [self._largest[1], 0], now
        self._largest[1] = max(self._largest[1], size)

    def expected_answer_size(self) -> int:
        """What an answer is expected to take before it is made: the largest of the last minutes (/metrics)."""
        return max(self._largest)

    def dispatch(self, conn: _Connection, head: bytes) -> None:
        """Hand a complete request to a worker, or to the check thread, or refuse it at once (a cap). The
        answer's expected size is counted against the caps from now on, so answers that could not be sent are
        not made (and do not pile up in memory) in the first place."""
        expected = self.expected_answer_size()
        if not self.room_to_answer(conn.client, expected):
            conn.write_and_close(BUSY)
            return
        conn.reserved = expected
        try:
            costly = self.costly is not None and self.costly(head)
        except Exception:  # a head the triage cannot read: the bounded queue, not a worker, pays for it
            log.debug("sorting the request of %s failed", conn.client, exc_info=True)
            costly = True
        if not costly:
            future = self.loop.run_in_executor(self.pool, self._answer, head, conn.peer)
            future.add_done_callback(self._finished_answer(conn))
            return
        waiting = self._checks.get(conn.client, 0)
        if waiting >= CHECKS_PER_CLIENT or sum(self._checks.values()) >= CHECKS_WAITING:
            conn.write_and_close(TOO_MANY_CHECKS)
            return
        self._checks[conn.client] = waiting + 1
        future = self.loop.run_in_executor(self.check_pool, self._answer, head, conn.peer)
        answered = self._finished_answer(conn)
        future.add_done_callback(lambda f: (self._checked(conn.client), answered(f)))

    def _answer(self, head: bytes, peer: tuple) -> bytes:
        """On a worker: make the answer once fewer than ANSWERS_MADE answers wait for the loop to write them,
        so workers that outrun the loop (the GIL, 1000 requests at once) do not pile answers up in memory."""
        if not self._made.acquire(timeout=WRITE_STALL_S):
            raise _NoRoom  # the loop has not taken an answer for 10 s (it is stopping)
        return self.answer(head, peer)

    def _finished_answer(self, conn: _Connection):
        def finished(future: asyncio.Future) -> None:
            if not future.cancelled():
                if isinstance(future.exception(), _NoRoom):
                    conn.reserved = 0
                    conn.write_and_close(BUSY)
                    return
                self._made.release()
            conn.answered(future)
        return finished

    def _checked(self, client: str) -> None:
        left = self._checks.get(client, 1) - 1
        if left > 0:
            self._checks[client] = left
        else:
            self._checks.pop(client, None)

    def pending(self, client: str | None = None) -> int:
        """Bytes of answers waiting to be sent, to `client` or to all."""
        groups = [self._by_client.get(client, [])] if client is not None else self._by_client.values()
        return sum(conn.pending() for conns in groups for conn in conns)

    def committed(self) -> int:
        """Bytes of answers waiting to be sent, and expected of those being made, to all."""
        return sum(conn.pending() + conn.reserved for conns in self._by_client.values() for conn in conns)

    def room_to_answer(self, client: str, size: int = 0, granted: int = 0) -> bool:
        """Whether an answer of `size` bytes to `client` fits the caps on bytes waiting to be sent (asked when a
        request arrives, and again when its answer is ready); at the total cap, stalled answers of the clients
        with the most waiting are dropped to make room, never the asker's own. A client with nothing waiting
        gets its answer even if that alone is past its cap. The total counts the answers being made (by their
        expected size), so a flood is refused before its answers are made; a client's own share counts only
        what it has not read, so a burst of parallel scrapes from one reader is answered. `granted`: what the
        request was let in with; only an answer larger than that asks the total again."""
        mine = self.pending(client)
        if mine and mine + size > self.max_pending_per_client:
            return False
        need = size - granted
        total = self.committed()
        if need <= 0 or total + need <= self.max_pending or not total:
            return True
        others = {other: self.pending(other) for other in self._by_client if other != client}
        for other in sorted(others, key=others.__getitem__, reverse=True):
            while total + need > self.max_pending:
                dropped = self._drop_stalled(other)
                if dropped is None:
                    break
                total -= dropped
            if total + need <= self.max_pending:
                return True
        return False

    def _drop_stalled(self, client: str) -> int | None:
        """Drop `client`'s oldest answer that has made no progress for STALLED_AFTER_S: the bytes it held, or
        None when there is none."""
        now = self.loop.time()
        for conn in self._by_client.get(client, []):
            if conn.stalled_for(now) > STALLED_AFTER_S:
                held = conn.pending()
                conn.abort()
                self.forget(conn)
                return held
        return None
