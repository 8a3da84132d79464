"""The project's own errors. Each class carries its exit code and, where useful, a hint for the user.

Exit codes (docs/EXIT_CODES.md): 0 success; 1 partial failure (a result, not an exception);
2 usage or configuration error; 3 nothing could be done.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_FAILED = 3


class JdrError(Exception):
    """Base of every error jdr raises on purpose. ``hint`` tells the user what to do about it."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(JdrError):
    """Bad arguments: an unknown user or run, a malformed time, options that do not go together."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """The configuration is malformed: an unknown key, a wrong type, a missing required value."""


class NotFoundError(UsageError):
    """Something the user named (a run, a user, a path in a run) does not exist."""


class KeyMismatchError(UsageError):
    """The configured encryption keys do not fit: a backup key that is not one of the repository's
    recipients, or no configured key opens a run (the message names the fingerprints it needs)."""


class RepositoryError(JdrError):
    """The repository cannot be read or written (unreachable, denied, corrupt layout)."""


class PermissionDeniedError(RepositoryError):
    """The repository's credentials lack a permission; ``permission`` names the S3 action
    (``s3:DeleteObject`` …) so that the message and the hint can say which role is missing what."""

    def __init__(self, message: str, *, permission: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.permission = permission


class ObjectNotFound(RepositoryError):
    """A key does not exist in the store. Raised by every store for a missing object."""


class TransientStorageError(RepositoryError):
    """A storage error that may succeed if retried (timeouts, throttling, 5xx)."""


class LockHeldError(JdrError):
    """Another jdr process holds the repository lock."""


class LockLostError(JdrError):
    """This process's repository lock was broken or removed while it worked; it commits nothing."""


class IntegrityError(JdrError):
    """Data does not match what was recorded: a checksum, a size, a failed integrity_check."""


class TamperError(IntegrityError):
    """A manifest is not authenticated by a configured MAC key: forged, altered after it was signed,
    signed by a key not configured, or unsigned while MACs are required (docs/SECURITY.md)."""


class UnreadableObjectError(IntegrityError):
    """The store fails to deliver part of an object on every attempt: the object is damaged there."""


class HostileArchiveError(IntegrityError):
    """An archive holds an entry that would escape or subvert the restore target."""


class DeploymentError(JdrError):
    """The deployment (hub, homes, cluster) refused or failed an action."""


class HubApiError(DeploymentError):
    """The JupyterHub REST API refused or failed a request."""


class SchemaError(JdrError):
    """A hub database's schema revision cannot be run by the configured hub."""


class Interrupted(JdrError):
    """The operation was stopped (SIGTERM, Ctrl-C) before it finished; nothing partial was committed."""
