"""Lab passwords: generated at ``lab up``, one file per user (mode 0600) in ``secrets/`` (mode 0700).

They are printed only when asked (``lab status --show-passwords``); every other command refers to a password by
its file (the lab profile's credentials reference), never by value.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from casprobe.errors import CredentialError
from casprobe.lab.org import Org

__all__ = ["PasswordBook", "generate_passwords"]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)


def generate_passwords(org: Org, folder: Path) -> PasswordBook:
    """A new random password for every user, and the NTLM acceptor's user file beside them."""
    from casprobe.lab.ntlmcreds import format_user_file_line

    secret_dir = folder / "secrets"
    secret_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret_dir.chmod(0o700)
    lines = []
    for user in org.users:
        password = secrets.token_urlsafe(15)
        _write_private(secret_dir / f"{user.alias}.password", password + "\n")
        lines.append(format_user_file_line(org.netbios, user.alias, password))
        lines.append(format_user_file_line("", user.smtp, password))
    _write_private(secret_dir / "ntlm_users", "\n".join(lines) + "\n")
    return PasswordBook(org, folder)


class PasswordBook:
    """Reads the lab's passwords; checks a Basic password without exposing it."""

    def __init__(self, org: Org, folder: Path) -> None:
        self.org = org
        self.dir = folder / "secrets"

    @property
    def ntlm_user_file(self) -> Path:
        return self.dir / "ntlm_users"

    def password_file(self, alias: str) -> Path:
        return self.dir / f"{alias}.password"

    def password(self, alias: str) -> str:
        try:
            return self.password_file(alias).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CredentialError(f"cannot read the lab password of {alias}: {exc.strerror}") from exc

    def verify_basic(self, username: str, password: str) -> str | None:
        """The canonical principal (``LAB\\alice``) when the password is right, else None."""
        user = self.org.find_user(username)
        if user is None:
            return None
        try:
            expected = self.password(user.alias)
        except CredentialError:
            return None
        if hmac.compare_digest(expected.encode(), password.encode()):
            return f"{self.org.netbios}\\{user.alias}"
        return None
