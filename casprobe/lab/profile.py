"""The lab profile: what every other casprobe command needs to point at the lab (``--lab``).

Written by ``lab up`` as ``profile.toml`` in the lab folder: the namespace and server names with the addresses
they resolve to (casprobe pins them itself; nothing edits /etc/hosts), the port, the CA bundle, a mailbox and a
credentials *reference* (a password file), never a password.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from casprobe.lab.org import Org
from casprobe.lab.secrets import PasswordBook

__all__ = ["render_accounts", "render_profile", "write_profile"]


def _s(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_profile(org: Org, folder: Path, book: PasswordBook) -> str:
    user = org.users[0]
    lines = [
        "# casprobe lab profile, written by 'casprobe lab up'. Use it with --lab.",
        f"namespace = {_s(org.namespace)}",
        f"autodiscover = {_s(org.autodiscover)}",
        f"servers = [{', '.join(_s(s.fqdn) for s in org.servers)}]",
        f"port = {org.config.port}",
        f"ca_file = {_s(str(folder / 'tls' / 'ca.pem'))}",
        f"lb = {_s(org.config.lb)}",
        f"lab_dir = {_s(str(folder))}",
        "",
        "[resolve]",
        *(f"{_s(name)} = {_s(address)}" for name, address in org.names().items()),
        "",
        "[mailbox]",
        f"smtp = {_s(user.smtp)}",
        f"user = {_s(org.netbios + chr(92) + user.alias)}",
        f"password_file = {_s(str(book.password_file(user.alias)))}",
        "",
    ]
    return "\n".join(lines)


def render_accounts(org: Org, book: PasswordBook) -> str:
    """``accounts.csv``: every lab mailbox for load runs (``casprobe load``), passwords by file reference only."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["smtp", "user", "password_file"])
    writer.writerows([u.smtp, f"{org.netbios}\\{u.alias}", str(book.password_file(u.alias))] for u in org.users)
    return out.getvalue()


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_profile(org: Org, folder: Path, book: PasswordBook) -> Path:
    """Write ``profile.toml`` (and ``accounts.csv`` beside it); returns the profile's path."""
    path = folder / "profile.toml"
    _write(path, render_profile(org, folder, book))
    _write(folder / "accounts.csv", render_accounts(org, book))
    return path
