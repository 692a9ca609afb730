"""File-system errors of the publisher as clear wishbot errors.

An ``OSError`` while the publisher writes (a read-only target, a directory it
may not write, a full disk) must never reach the user as a traceback. Each one
becomes a :class:`~bot.errors.PublisherError` that says what was being done,
the path, why (the system's words) and what to do about it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from bot.errors import PublisherError
from bot.publisher.tarheader import show_name

_HINTS = {
    errno.EROFS: "the file system is mounted read-only: remount it read-write "
    "(or publish to another target)",
    errno.EACCES: "the user running wishbot may not write there: fix the owner or mode of that "
    "directory (wishbot runs as the publisher's owner)",
    errno.EPERM: "the operation is not permitted there: check the owner, the mode and the "
    "mount options of that directory",
    errno.ENOSPC: "the disk is full: free space (or raise the quota) and run again; nothing "
    "half-written was published",
    errno.EDQUOT: "the disk quota is exhausted: raise it or free space and run again; nothing "
    "half-written was published",
    errno.EMFILE: "too many open files: raise the open-file limit (ulimit -n)",
    errno.ENAMETOOLONG: "the name is longer than the file system allows",
    errno.EIO: "the disk reports an input/output error: check it before running again",
}


def disk_error(exc: OSError, doing: str) -> PublisherError:
    """``exc`` as a :class:`PublisherError`: ``doing``, the path, the reason, a hint."""
    where = f" '{_path(exc.filename)}'" if exc.filename else ""
    if exc.filename2:
        where += f" -> '{_path(exc.filename2)}'"
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _HINTS.get(exc.errno or 0, "check the space and permissions of the publisher's disk")
    return PublisherError(f"{doing}{where}: {reason}", hint=hint)


def _path(name: object) -> str:
    """A path for a message: a layer chooses its names, so they are cut and escaped."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    return show_name(str(name))


@contextmanager
def disk_errors(doing: str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into :func:`disk_error`."""
    try:
        yield
    except OSError as exc:
        raise disk_error(exc, doing) from None
