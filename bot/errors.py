"""One error hierarchy for wishbot.

Every error says what is wrong, where, and (where it can) what to do. The
class says whose fault it is: :class:`WishlistError` and :class:`UsageError`
are the user's; :class:`RegistryError`, :class:`PublisherError` and
:class:`ForgeError` are failures of the world around us. The CLI catches
:class:`WishbotError` only and prints it without a traceback.
"""

from __future__ import annotations


class WishbotError(Exception):
    """Root of every error wishbot raises on purpose."""

    exit_code = 1
    #: whether the same work may succeed later (a queue retries it) or never will
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        where: str | None = None,
        retryable: bool | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.where = where
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class UsageError(WishbotError):
    """The command line was wrong."""

    exit_code = 2


class ConfigError(WishbotError):
    """The operator's configuration (TOML file or WISHBOT_* variable) is wrong."""

    exit_code = 2


class WishlistError(WishbotError):
    """The wishlist cannot be used at all (the user's fault)."""


# --- registries -----------------------------------------------------------


class RegistryError(WishbotError):
    """A registry could not give us what we asked for."""

    #: short machine-readable kind used in JSON output and plan rows
    kind = "registry-error"


class NotFound(RegistryError):
    """The image, tag, platform or blob does not exist (a definite answer)."""

    kind = "not-found"


class Unauthorized(RegistryError):
    """The registry refused our credentials (or wants some)."""

    kind = "unauthorized"


class Unavailable(RegistryError):
    """Could not check right now: rate limited, 5xx, timeout, network down.

    Never to be reported as "does not exist".
    """

    kind = "unavailable"
    retryable = True


class Unsupported(RegistryError):
    """The registry served something we do not support (e.g. schema 1)."""

    kind = "unsupported"


class IntegrityError(RegistryError):
    """Bytes did not match their digest or size."""

    kind = "integrity"


class RegistryRefused(RegistryError):
    """The operator's policy forbids talking to this registry."""

    kind = "refused"


# --- publisher ------------------------------------------------------------


class PublisherError(WishbotError):
    """The publisher (local tree or CernVM-FS) failed."""

    retryable = True


class UnsafeLayer(PublisherError):
    """A layer tries to escape its root or to bomb the publisher."""

    retryable = False


class BadLayer(PublisherError):
    """A layer blob is not a readable tar (corrupt, truncated, unknown compression)."""

    retryable = False


class LockedError(PublisherError):
    """Another wishbot run holds the publisher lock."""


class LeaseRefused(PublisherError):
    """A repository gateway would not let a transaction through: its lease path
    stayed busy longer than the wait, or the publish was refused (the lease
    expired or was cancelled). The transaction was aborted; the step can be
    run again."""


class LeaseBusy(LeaseRefused):
    """A gateway lease stayed busy for as long as wishbot waits for one."""


# --- forges ---------------------------------------------------------------


class ForgeError(WishbotError):
    """GitLab, GitHub or the local git forge failed.

    Retryable unless the adapter says otherwise (a 401, 403 or 404 will not go away).
    """

    retryable = True


def is_retryable(exc: BaseException) -> bool:
    """Whether a job that failed with ``exc`` is worth running again: a wishbot error
    says so itself; an OS or network error may go away; anything else is a bug."""
    if isinstance(exc, WishbotError):
        return exc.retryable
    return isinstance(exc, OSError)
