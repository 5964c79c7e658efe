"""Credentials for the probes' authentication flows: a password that never prints, and where it comes from.

Passwords and tokens are read from a reference (environment variable, file, or an interactive prompt) and kept in a
:class:`Secret`, whose ``repr``/``str`` are ``***`` and which refuses to be pickled, so it cannot reach a log line,
an exception, a result file or a ``repr`` by accident (style.md rule 6). Only :meth:`Secret.reveal` gives the value,
and only the authentication flows (:mod:`casprobe.net.auth`) call it.

User names take the three forms Windows accepts: ``DOMAIN\\user`` (down-level logon name), ``user@domain`` (UPN)
and a plain ``user`` ([MS-NLMP] §2.2.1.3 carries domain and user separately; pyspnego splits ``DOMAIN\\user`` and
sends a UPN as the user with an empty domain). Bearer tokens follow RFC 6750 §2.1 (``b64token`` characters).
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from casprobe.errors import CredentialError

__all__ = ["BearerToken", "Credentials", "Secret", "secret_from_env", "secret_from_file", "secret_from_prompt"]

_log = logging.getLogger(__name__)

#: Longest first line read from a password or token file (a JWT is a few KiB; a password far less).
MAX_SECRET_LEN = 16 * 1024

_B64TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class Secret:
    """A password or token: prints as ``***``, cannot be pickled, and gives its value only through :meth:`reveal`.

    Equality is identity (two secrets are never compared by value). Copies return the same object.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """Return the secret value (only for the code that puts it on the wire)."""
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: Any) -> Secret:
        return self


def secret_from_env(var: str, *, what: str = "password") -> Secret:
    """Return the value of the environment variable ``var`` (not stripped; empty is an error)."""
    value = os.environ.get(var)
    if value is None:
        raise CredentialError(f"environment variable {var} (the {what}) is not set")
    if not value:
        raise CredentialError(f"environment variable {var} (the {what}) is empty")
    return Secret(value)


def secret_from_file(path: str | os.PathLike[str], *, what: str = "password") -> Secret:
    """Return the first line of the file ``path``, stripped; warn when group or others may read the file."""
    where = Path(path)
    try:
        with where.open("r", encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise CredentialError(f"{what} file {where} is not a regular file")
            line = handle.readline(MAX_SECRET_LEN + 1)
    except FileNotFoundError:
        raise CredentialError(f"{what} file {where} does not exist") from None
    except UnicodeDecodeError:  # its text would quote the offending bytes: keep it out of the message
        raise CredentialError(f"{what} file {where} is not UTF-8 text") from None
    except OSError as exc:
        raise CredentialError(f"cannot read {what} file {where}: {exc.strerror or type(exc).__name__}") from None
    if len(line) > MAX_SECRET_LEN:
        raise CredentialError(f"{what} file {where}: the first line is longer than {MAX_SECRET_LEN} characters")
    value = line.strip()
    if not value:
        raise CredentialError(f"{what} file {where} is empty (the {what} is its first line)")
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        _log.warning("%s file %s is accessible to group or others (mode %o); chmod 600 it", what, where, mode & 0o777)
    return Secret(value)


def secret_from_prompt(prompt: str, *, what: str = "password") -> Secret:
    """Ask on the terminal (no echo); refuse when standard input is not a terminal."""
    if not sys.stdin or not sys.stdin.isatty():
        raise CredentialError(f"no terminal to ask for the {what}: use an environment variable or a file")
    try:
        value = getpass.getpass(prompt)
    except EOFError:
        raise CredentialError(f"no {what} entered") from None
    if not value:
        raise CredentialError(f"no {what} entered")
    return Secret(value)


def _check_username(username: str) -> None:
    if not isinstance(username, str) or not username or _CONTROL_RE.search(username):
        raise CredentialError("user name must be a non-empty string without control characters")
    domain, backslash, user = username.partition("\\")
    if backslash and (not domain or not user or "\\" in user):
        raise CredentialError(f"user name {username!r}: expected DOMAIN\\user")
    local, at, realm = username.rpartition("@")
    if at and not backslash and (not local or not realm):
        raise CredentialError(f"user name {username!r}: expected user@domain")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and its password.

    Attributes:
        username: ``DOMAIN\\user``, ``user@domain`` (UPN) or ``user``, sent as given.
        secret: the password; prints as ``***``.
    """

    username: str
    secret: Secret

    def __post_init__(self) -> None:
        _check_username(self.username)
        if not isinstance(self.secret, Secret):
            raise TypeError("Credentials.secret must be a Secret (wrap the password: Secret(value))")

    @classmethod
    def from_env(cls, username: str, var: str) -> Credentials:
        """The password is the value of the environment variable ``var``."""
        return cls(username, secret_from_env(var))

    @classmethod
    def from_file(cls, username: str, path: str | os.PathLike[str]) -> Credentials:
        """The password is the first line of ``path`` (stripped); a group/world-readable file logs a warning."""
        return cls(username, secret_from_file(path))

    @classmethod
    def from_prompt(cls, username: str) -> Credentials:
        """Ask for the password on the terminal (only when standard input is a terminal)."""
        _check_username(username)
        return cls(username, secret_from_prompt(f"Password for {username}: "))


@dataclass(frozen=True, slots=True)
class BearerToken:
    """An OAuth 2.0 access token sent as ``Authorization: Bearer`` (RFC 6750 §2.1).

    Attributes:
        secret: the token; prints as ``***``.
    """

    secret: Secret

    def __post_init__(self) -> None:
        if not isinstance(self.secret, Secret):
            raise TypeError("BearerToken.secret must be a Secret")
        if not _B64TOKEN_RE.fullmatch(self.secret.reveal()):
            raise CredentialError("bearer token is empty or has characters a b64token cannot hold (RFC 6750 §2.1)")

    @classmethod
    def from_env(cls, var: str) -> BearerToken:
        """The token is the value of the environment variable ``var`` (surrounding white space removed)."""
        return cls(Secret(secret_from_env(var, what="bearer token").reveal().strip()))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BearerToken:
        """The token is the first line of ``path`` (stripped)."""
        return cls(secret_from_file(path, what="bearer token"))
