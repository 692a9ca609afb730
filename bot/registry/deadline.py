"""Total deadlines for HTTP requests, enforced on the socket.

``requests`` (and urllib3 under it) only know per-operation timeouts: a
registry that answers one byte a second never trips a 30 s read timeout and
keeps a request alive for as long as it likes. A :class:`Deadline` bounds the
whole exchange instead::

    with Deadline(120.0) as deadline:      # this thread's requests
        response = session.get(url, stream=True)
        ...read the body...
    deadline.fired                          # True if it had to cut the socket

Every connection of :data:`ADAPTER_POOLS` registers itself, when it sends a
request, with the deadlines active in its thread; when a deadline passes, a
single watchdog thread shuts those sockets down, which wakes the blocked read
at once (it sees end of file and raises). Deadlines nest (a blob download's
deadline around each request's own); each cuts its own sockets.

The TCP connect and the TLS handshake happen before a connection can
register; they are bounded by the per-operation timeout, which the transport
sets to at most the time left.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Any

import requests
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


def _active() -> list[Deadline]:
    stack: list[Deadline] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = []
        _local.stack = stack
    return stack


class Deadline:
    """A point in time after which this thread's requests are cut off."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expires = time.monotonic() + max(0.0, seconds)
        self.fired = False
        self._connections: list[Any] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.fired or self.remaining() <= 0

    def watch(self, connection: Any) -> None:
        with self._lock:
            self._connections.append(connection)
            fired = self.fired
        if fired:
            _cut(connection)

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            connections = list(self._connections)
        for connection in connections:
            _cut(connection)

    def __enter__(self) -> Deadline:
        _active().append(self)
        _WATCHDOG.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        stack = _active()
        if self in stack:
            stack.remove(self)
        _WATCHDOG.discard(self)
        with self._lock:
            self._connections = []


def _cut(connection: Any) -> None:
    """Shut the connection's socket down (the TLS layer is bypassed on
    purpose: its ``shutdown`` would tear down state another thread is using)."""
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError, ValueError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that fires deadlines when they pass."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._live: set[int] = set()
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline.expires, next(self._order), deadline))
            self._live.add(id(deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="wishbot-deadlines", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def discard(self, deadline: Deadline) -> None:
        with self._wake:
            self._live.discard(id(deadline))
            if len(self._heap) > 2 * len(self._live) + 256:
                # most requests finish long before their deadline: drop them
                self._heap = [entry for entry in self._heap if id(entry[2]) in self._live]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            due: list[Deadline] = []
            with self._wake:
                while self._heap and id(self._heap[0][2]) not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait(60.0)
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                _, _, deadline = heapq.heappop(self._heap)
                self._live.discard(id(deadline))
                due.append(deadline)
            for deadline in due:
                deadline.fire()


_WATCHDOG = _Watchdog()


def _register(connection: Any) -> None:
    for deadline in _active():
        deadline.watch(connection)


class _Watched:
    """Registers the connection with this thread's deadlines as it is used."""

    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _register(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:
            _register(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    """A plain-HTTP connection that obeys the thread's deadlines."""


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    """A TLS connection that obeys the thread's deadlines."""


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


ADAPTER_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(requests.adapters.HTTPAdapter):
    """An ``HTTPAdapter`` whose connections (direct or through a proxy) obey
    the thread's :class:`Deadline`\\ s."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = ADAPTER_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> urllib3.ProxyManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = ADAPTER_POOLS
        return manager
