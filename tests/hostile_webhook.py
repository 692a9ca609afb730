"""A hostile webhook client: what anyone on the network can send to ``wishbot serve``.

Written from issue 10's description, over raw sockets (an HTTP library would
refuse to misbehave): floods of unsigned and falsely signed deliveries,
slowloris clients that send a byte at a time, oversized bodies with and
without a (lying) ``Content-Length``, chunked bodies, the same signed body
replayed under new delivery ids, and many idle connections. Each attack
reports what the server answered (:class:`Answer`), so a test can check it
was refused or contained; :func:`signed` is the one honest delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """What one connection got: an HTTP status, or None when the server closed
    (or reset) it without one; and how long the connection lived."""

    status: int | None
    seconds: float
    error: str = ""


Address = tuple[str, int]


def head(length: int | None, headers: dict[str, str], *, path: str = "/webhook") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: wishbot", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _status(data: bytes) -> int | None:
    first = data.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[1].isdigit() else None


def exchange(
    address: Address,
    parts: Iterable[bytes],
    *,
    pause: float = 0.0,
    timeout: float = 30.0,
) -> Answer:
    """Send ``parts`` (sleeping ``pause`` between them), then read the answer
    until the server closes. A reset or a refused send ends it early."""
    started = time.monotonic()
    received = b""
    error = ""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            try:
                for part in parts:
                    sock.sendall(part)
                    if pause:
                        time.sleep(pause)
            except OSError as exc:  # the server stopped listening to us
                error = type(exc).__name__
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except OSError as exc:
                error = error or type(exc).__name__
    except OSError as exc:
        error = type(exc).__name__
    return Answer(_status(received), time.monotonic() - started, error)


def in_parallel(attacks: list[Callable[[], Answer]]) -> list[Answer]:
    """Run the attacks at once, one thread each; their answers in order."""
    answers: list[Answer | None] = [None] * len(attacks)

    def run(n: int) -> None:
        answers[n] = attacks[n]()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(attacks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [a if a is not None else Answer(None, 0.0, "no answer") for a in answers]


def _chunks(size: int, chunk: int = 256 * 2**10) -> Iterable[bytes]:
    block = b"x" * chunk
    sent = 0
    while sent < size:
        yield block[: min(chunk, size - sent)]
        sent += chunk


class HostileClient:
    """The attacks, against the server at ``address`` whose secret is ``secret``."""

    def __init__(self, address: Address, secret: str):
        self.address = address
        self.secret = secret

    # --- the honest delivery --------------------------------------------------

    def signed(self, body: bytes, event: str, delivery: str | None = None) -> Answer:
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": signature(body, self.secret),
        }
        return exchange(self.address, [head(len(body), headers), body], timeout=10)

    # --- floods ---------------------------------------------------------------

    def unsigned(self, size: int, event: str = "push") -> Answer:
        """A full body with no signature at all."""
        headers = {"X-GitHub-Event": event}
        return exchange(self.address, [head(size, headers), *_chunks(size)])

    def forged(self, size: int, event: str = "push") -> Answer:
        """A full body with a signature that has the right shape and is wrong:
        the server must read the body to find out."""
        headers = {"X-GitHub-Event": event, "X-Hub-Signature-256": "sha256=" + "0" * 64}
        return exchange(self.address, [head(size, headers), *_chunks(size)])

    def wrong_token(self, size: int) -> Answer:
        headers = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "guess"}
        return exchange(self.address, [head(size, headers), *_chunks(size)])

    def flood(self, attack: Callable[[], Answer], clients: int) -> list[Answer]:
        return in_parallel([attack] * clients)

    # --- slow clients ---------------------------------------------------------

    def slowloris(self, interval: float = 1.0, limit: float = 60.0) -> Answer:
        """Headers one byte every ``interval`` seconds, for up to ``limit`` seconds."""
        text = head(100, {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64})
        count = max(int(limit / interval), 1)
        return exchange(self.address, [text[n : n + 1] for n in range(count)], pause=interval)

    def slow_body(self, interval: float = 1.0, limit: float = 60.0) -> Answer:
        """Honest-looking headers, then the body one byte every ``interval`` seconds."""
        size = max(int(limit / interval), 1)
        headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}
        parts = [head(size, headers)] + [b"x"] * size
        return exchange(self.address, parts, pause=interval)

    def idle(self, count: int) -> list[socket.socket]:
        """``count`` connections that never send a byte (the caller closes them)."""
        opened: list[socket.socket] = []
        for _ in range(count):
            try:
                opened.append(socket.create_connection(self.address, timeout=5))
            except OSError:
                break
        return opened

    # --- sizes ----------------------------------------------------------------

    def declared_too_large(self, size: int) -> Answer:
        """A ``Content-Length`` over the cap; the body follows anyway."""
        headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}
        return exchange(self.address, [head(size, headers), *_chunks(size)])

    def no_length(self, size: int) -> Answer:
        """No ``Content-Length``; the body is simply sent until the connection closes."""
        headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}
        return exchange(self.address, [head(None, headers), *_chunks(size)])

    def chunked(self, size: int) -> Answer:
        headers = {
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": "sha256=" + "0" * 64,
            "Transfer-Encoding": "chunked",
        }
        parts = [head(None, headers)]
        parts += [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in _chunks(size)]
        return exchange(self.address, [*parts, b"0\r\n\r\n"])

    def lying_short(self, declared: int, size: int, body: bytes, event: str = "push") -> Answer:
        """Declares ``declared`` bytes, signed for the first ``declared`` bytes of
        ``body``, then sends ``size`` bytes: the extra must never be read."""
        headers = {
            "X-GitHub-Event": event,
            "X-Hub-Signature-256": signature(body[:declared], self.secret),
        }
        return exchange(self.address, [head(declared, headers), body, *_chunks(size)])

    def lying_long(self, declared: int, sent: bytes) -> Answer:
        """Declares ``declared`` bytes, sends far fewer and waits."""
        headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}
        return exchange(self.address, [head(declared, headers), sent])

    def huge_headers(self, count: int = 100, size: int = 8000) -> Answer:
        """Many long headers: each within the standard library's own line limit."""
        headers = {f"X-Junk-{n}": "j" * size for n in range(count)}
        return exchange(self.address, [head(10, headers), b"x" * 10])

    # --- replays --------------------------------------------------------------

    def replay(self, body: bytes, event: str, times: int) -> list[Answer]:
        """The same signed body, each time under a new delivery id."""
        return [self.signed(body, event, delivery=str(uuid.uuid4())) for _ in range(times)]
