"""A bounded HTTP server for untrusted clients, on the standard library's ``http.server``.

Anyone on the network can reach the webhook listener, so every resource a
client can make it hold is bounded:

- **connections**: at most ``max_connections`` are served at once; one more
  gets a canned ``503`` and is closed at once by the accepting thread, so a
  flood of clients can never take the file descriptors the queue needs;
- **time**: each connection has ``request_timeout`` seconds in total (request
  line, headers and body; not per read): a reaper thread shuts down the
  socket of a client that is still talking after that (slowloris);
- **bytes**: the request line and headers together are capped at
  ``MAX_HEADER_BYTES``; a body is only read after the handler has checked
  what the headers can prove, with a ``Content-Length`` no larger than
  ``max_body``, and only while the bodies held at once stay under
  ``body_budget`` bytes (else ``503``).

Why the standard library and not an asyncio server: the server's model is
threads (workers, the SQLite queue), a webhook answer takes milliseconds, and
the three limits above are a few dozen lines here; no dependency is needed.
Connections are HTTP/1.0 (one request each), so a connection's time limit is
its request's time limit.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 2**10
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nContent-Length: 33\r\n\r\n"
    b'{"error": "too many connections"}'
)


@dataclass(frozen=True)
class Limits:
    """What one client, and all of them together, may make the server hold."""

    max_connections: int = 32
    request_timeout: float = 10.0  # seconds per connection, in total
    max_body: int = 4 * 2**20  # bytes of one request body
    body_budget: int = 32 * 2**20  # bytes of request bodies held at once


class HeadersTooLarge(Exception):
    """The request line and headers went past :data:`MAX_HEADER_BYTES`."""


class CappedReader:
    """The connection's reader, allowed ``allowance`` bytes in total.

    The allowance starts at :data:`MAX_HEADER_BYTES`; :meth:`allow` raises
    it by exactly the body the handler decided to read.
    """

    def __init__(self, raw: BinaryIO, allowance: int = MAX_HEADER_BYTES):
        self._raw = raw
        self._allowance = allowance
        self._used = 0

    def allow(self, more: int) -> None:
        self._allowance = self._used + more

    def readline(self, limit: int = -1) -> bytes:
        room = self._allowance - self._used
        if room <= 0:
            raise HeadersTooLarge
        wanted = room if limit is None or limit < 0 else min(limit, room)
        line = self._raw.readline(wanted)
        self._used += len(line)
        if len(line) == room and not line.endswith(b"\n"):
            raise HeadersTooLarge
        return line

    def read(self, size: int = -1) -> bytes:
        room = max(self._allowance - self._used, 0)
        data = self._raw.read(room if size is None or size < 0 else min(size, room))
        self._used += len(data)
        return data

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)


class ByteBudget:
    """Bytes held at once across connections; :meth:`reserve` says no when full."""

    def __init__(self, limit: int):
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        with self._lock:
            if self._used + size > self.limit:
                return False
            self._used += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self._used -= size

    @property
    def used(self) -> int:
        with self._lock:
            return self._used


@dataclass
class _Connection:
    deadline: float  # monotonic time it is cut off at
    reading: bool = True  # still sending its request (may be evicted)


class BoundedHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a connection cap and a per-connection deadline.

    When all ``max_connections`` slots are taken, a new connection evicts the
    oldest one that is still sending its request (a slow client, since real
    deliveries arrive in milliseconds) and takes its slot; only when every
    slot is busy *working* on a request is the newcomer answered ``503``.
    So slow clients can hold the server no longer than it takes others to
    arrive, and a correctly signed delivery gets through a flood of them.
    ``on_refused(reason)`` is told of each connection refused (``"busy"``),
    evicted (``"evicted"``) or cut off at its deadline (``"timeout"``).
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # a flood is accepted and answered fast, not left in SYN queues
    eviction_wait = 0.5  # seconds the accepting thread waits for an evicted slot

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        limits: Limits,
        on_refused: Callable[[str], None] = lambda reason: None,
    ):
        super().__init__(address, handler)
        self.limits = limits
        self.budget = ByteBudget(limits.body_budget)
        self._on_refused = on_refused
        self._slots = threading.BoundedSemaphore(max(limits.max_connections, 1))
        self._lock = threading.Lock()
        self._open: dict[socket.socket, _Connection] = {}
        self._cut: set[socket.socket] = set()
        self._closing = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="wishbot-http-reaper", daemon=True)
        self._reaper.start()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False) and not self._evict_for_slot():
            self._refuse(request)
            return
        with self._lock:
            self._open[request] = _Connection(time.monotonic() + self.limits.request_timeout)
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # no more threads: treat like a full house
            self._forget(request)
            self._refuse(request)

    def _evict_for_slot(self) -> bool:
        """Cut off the oldest connection still sending its request; True once its
        slot is ours."""
        with self._lock:
            reading = [(c.deadline, s) for s, c in self._open.items() if c.reading]
            reading = [(due, s) for due, s in reading if s not in self._cut]
            if not reading:
                return False
            victim = min(reading, key=lambda item: item[0])[1]
            self._cut.add(victim)
        self._on_refused("evicted")
        with contextlib.suppress(OSError):
            victim.shutdown(socket.SHUT_RDWR)
        return self._slots.acquire(timeout=self.eviction_wait)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._lock:
            if self._open.pop(request, None) is not None:
                self._slots.release()
            self._cut.discard(request)

    def request_read(self, request: socket.socket) -> None:
        """The handler has the whole request: it is working now, not to be evicted."""
        with self._lock:
            connection = self._open.get(request)
            if connection is not None:
                connection.reading = False

    def is_cut(self, request: socket.socket) -> bool:
        """Whether the connection was evicted or cut off at its deadline."""
        with self._lock:
            return request in self._cut

    def _refuse(self, request: socket.socket) -> None:
        self._on_refused("busy")
        try:
            request.setblocking(False)
            request.send(_BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def _reap(self) -> None:
        """Shut down the sockets of connections past their deadline."""
        step = min(max(self.limits.request_timeout / 10, 0.05), 0.5)
        while not self._closing.wait(step):
            now = time.monotonic()
            with self._lock:
                late = [s for s, c in self._open.items() if c.deadline <= now]
                late = [s for s in late if s not in self._cut]
                self._cut.update(late)
            for sock in late:
                self._on_refused("timeout")
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, no traceback: a client that hangs up or is cut off is not news."""
        exc = sys.exc_info()[1]
        log.debug("connection from %s ended: %s", client_address, type(exc).__name__)

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()


class BoundedHandler(BaseHTTPRequestHandler):
    """Reads through a :class:`CappedReader`; a client that breaks the rules or
    hangs up ends its connection quietly."""

    server: BoundedHTTPServer
    protocol_version = "HTTP/1.0"
    rfile: Any

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.limits.request_timeout)  # per read; the reaper
        self.rfile = CappedReader(self.rfile)

    def handle(self) -> None:
        try:
            super().handle()
        except HeadersTooLarge:
            self.close_connection = True
            self.refuse(431, "request headers too large")
        except OSError as exc:  # reset, broken pipe, cut off by the reaper
            self.close_connection = True
            log.debug("connection from %s ended: %s", self.client_address[0], exc)

    def refuse(self, status: int, reason: str) -> None:
        """Hook: answer a request refused before it reached a ``do_*`` method."""
        try:
            self.send_response_only(status)
            self.send_header("Connection", "close")
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.wfile.flush()
        except OSError:
            pass

    def cut_off(self) -> bool:
        """Whether this connection was evicted or ran past its deadline."""
        return self.server.is_cut(self.connection)

    def read_body(self, length: int) -> bytes | None:
        """Exactly ``length`` bytes of body, or None when the client sent fewer
        (hung up, or was cut off at its deadline)."""
        self.rfile.allow(length)
        try:
            body = bytes(self.rfile.read(length))
        except OSError:
            return None
        if len(body) != length:
            return None
        self.server.request_read(self.connection)
        return body

    def discard_body(self, length: int, limit: int = 64 * 2**10) -> None:
        """Read and drop a small refused body, so the answer reaches the client
        (closing on unread bytes resets the connection); a large one is not read."""
        if 0 < length <= limit:
            self.rfile.allow(length)
            with contextlib.suppress(OSError):
                self.rfile.read(length)
