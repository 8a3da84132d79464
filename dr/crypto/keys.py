"""Loading and creating the installation's age key file. Messages name the file, never its contents."""

from __future__ import annotations

import os
from pathlib import Path

from dr.crypto.age import Identity
from dr.errors import ConfigError
from dr.util.timefmt import utcnow

_HINT = "create one with `age-keygen -o FILE` (or jdr's key generation) and keep a copy off the cluster"


def load_identity(path: Path | None = None, text: str | None = None) -> Identity:
    """The (first) identity in key file ``path``, or in ``text`` (e.g. from a Kubernetes Secret).

    Accepts the age key-file format. Raises ConfigError for a missing or unreadable file or a bad format;
    the message never contains the key.
    """
    return load_identities(path, text)[0]


def load_identities(path: Path | None = None, text: str | None = None) -> list[Identity]:
    """Every identity in key file ``path``, or in ``text``, in order; give exactly one of the two.

    An age key file may hold several ``AGE-SECRET-KEY-1…`` lines (as ``age -d -i`` accepts). Raises
    ConfigError as :func:`load_identity` does.
    """
    if (path is None) == (text is None):
        raise ConfigError("load_identity: give exactly one of a key file path or key text")
    where = "the encryption key text"
    if path is not None:
        where = f"encryption key file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{where} does not exist", hint=_HINT) from None
        except (OSError, UnicodeDecodeError) as e:
            # Only the error class: a decode error's message could quote bytes of the key.
            raise ConfigError(f"{where} cannot be read ({type(e).__name__})") from None
    assert text is not None
    try:
        return Identity.parse_all(text)
    except ConfigError as e:
        raise ConfigError(
            f"{where}: {e.message}", hint="expected an age key file (AGE-SECRET-KEY-1…)"
        ) from None


def write_key_file(path: Path, identity: Identity) -> None:
    """Create ``path`` (mode 0600) holding ``identity`` in age key-file format, as ``age-keygen`` writes it.

    Refuses to overwrite an existing file (ConfigError): losing a key loses every backup made with it.
    """
    created = utcnow().replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    content = f"# created: {created}\n# public key: {identity.recipient.text()}\n{identity.secret_text()}\n"
    write_private_file(path, content)


def write_private_file(path: Path, content: str) -> None:
    """Create ``path`` with mode 0600 holding ``content``; refuses to overwrite (ConfigError)."""
    try:
        # O_EXCL: no overwrite, even under a race; the mode is set at creation, never world-readable.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise ConfigError(f"key file {path} already exists; refusing to overwrite it") from None
    except OSError as e:
        raise ConfigError(f"key file {path} cannot be created ({e.strerror})") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may have narrowed it further; never widen beyond 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise
