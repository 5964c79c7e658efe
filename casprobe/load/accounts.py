"""The mailboxes a load run logs on as: an accounts file, CSV with a header row.

Columns: ``smtp`` (the mailbox), ``user`` (the logon name, ``DOMAIN\\user`` or a UPN), and one of
``password_file`` (a file holding the password, like ``--password-file``) or ``password_env`` (the name of an
environment variable). Passwords never sit in the file itself. ``casprobe lab up`` writes one for the lab
(``accounts.csv`` beside ``profile.toml``). Simulated clients take the accounts in turn, so several clients may
share a mailbox (Exchange allows several sessions per mailbox, as a user with two Outlooks has).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from casprobe.errors import ConfigError
from casprobe.net.credentials import Credentials, Secret

__all__ = ["LoadAccount", "read_accounts"]

_MAX_ACCOUNTS = 100_000
_MAX_FILE = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoadAccount:
    """A mailbox and the credentials to log on to it (the password in a :class:`Secret`)."""

    smtp: str
    credentials: Credentials


def _password(row: dict[str, str], where: str) -> Secret:
    file_ref = (row.get("password_file") or "").strip()
    env_ref = (row.get("password_env") or "").strip()
    if bool(file_ref) == bool(env_ref):
        raise ConfigError(f"{where}: give exactly one of password_file and password_env")
    if env_ref:
        value = os.environ.get(env_ref)
        if not value:
            raise ConfigError(f"{where}: the environment variable {env_ref} is not set")
        return Secret(value)
    try:
        text = Path(file_ref).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the password file {file_ref}: {exc.__class__.__name__}") from None
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{where}: the password file {file_ref} is empty")
    return Secret(value)


def read_accounts(path: Path) -> tuple[LoadAccount, ...]:
    """Read and check an accounts file; a :class:`ConfigError` names the line of any problem."""
    try:
        if path.stat().st_size > _MAX_FILE:
            raise ConfigError(f"{path}: larger than {_MAX_FILE // 1024 // 1024} MiB")
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the accounts file {path}: {exc.__class__.__name__}: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    missing = {"smtp", "user"} - set(header)
    if missing:
        raise ConfigError(f"{path}: the header row needs the columns smtp, user and password_file or password_env")
    reader.fieldnames = header
    accounts = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        smtp, user = (row.get("smtp") or "").strip(), (row.get("user") or "").strip()
        if "@" not in smtp or smtp.count("@") != 1 or smtp.startswith("@") or smtp.endswith("@"):
            raise ConfigError(f"{where}: {smtp[:80]!r} is not an SMTP address")
        if not user:
            raise ConfigError(f"{where}: the user column is empty")
        accounts.append(LoadAccount(smtp, Credentials(user, _password(row, where))))
        if len(accounts) > _MAX_ACCOUNTS:
            raise ConfigError(f"{path}: more than {_MAX_ACCOUNTS} accounts")
    if not accounts:
        raise ConfigError(f"{path}: no accounts")
    return tuple(accounts)
