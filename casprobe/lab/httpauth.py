"""HTTP authentication framing for the lab: Authorization parsing, Basic credentials, challenges, 401 answers.

Follows RFC 9110 §11.3-11.6 (credentials = auth-scheme [ 1*SP token68 ]; one challenge per ``WWW-Authenticate``
field line, as IIS sends them), RFC 7617 §2 (Basic: base64 of ``user-id ":" password``, ``realm`` parameter),
RFC 6750 §3 (Bearer challenge and ``error="invalid_token"``) and the IIS/Exchange behaviour summarised in
/work/shared/docs/protocols.md §5.1 and §5.3. Nothing here logs or returns a password except ``decode_basic``,
whose result goes straight to the lab's verifier.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence

from starlette.types import Receive, Send

__all__ = [
    "KNOWN_SCHEMES",
    "MAX_CREDENTIALS_LEN",
    "UNAUTHORIZED_BODY",
    "authorization_value",
    "challenge_values",
    "decode_base64_token",
    "decode_basic",
    "drain_body",
    "send_unauthorized",
    "split_credentials",
]

#: The schemes the lab can offer, in their canonical spelling (the one sent in ``WWW-Authenticate``).
KNOWN_SCHEMES: tuple[str, ...] = ("Negotiate", "NTLM", "Basic", "Bearer")

#: Longest Authorization value accepted. NTLM AUTHENTICATE messages are well under 2 KiB and SPNEGO wrapping adds
#: little; IIS's default header limit (MaxFieldLength) is 64 KiB, we stay far below that on purpose.
MAX_CREDENTIALS_LEN = 16 * 1024

#: Small IIS-like body of every 401 this layer sends.
UNAUTHORIZED_BODY = (
    b"<!DOCTYPE html><html><head><title>401 - Unauthorized: Access is denied due to invalid credentials."
    b"</title></head><body><h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>"
    b"<h3>You do not have permission to view this directory or page using the credentials that you supplied."
    b"</h3></body></html>"
)


def authorization_value(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """Return the first ``Authorization`` field value of an ASGI header list (names are lower-case), or None."""
    for name, value in headers:
        if name == b"authorization":
            return value
    return None


def split_credentials(value: bytes) -> tuple[str, str] | None:
    """Split an Authorization value into ``(scheme, token68)``; None if it is too long or not plain ASCII.

    The token is returned stripped and may be empty (``Authorization: Negotiate`` alone).
    """
    if len(value) > MAX_CREDENTIALS_LEN:
        return None
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    scheme, _, token = text.partition(" ")
    if not scheme:
        return None
    return scheme, token.strip()


def decode_base64_token(token: str) -> bytes | None:
    """Strictly decode a token68 (standard alphabet, padding required); None if it is not valid base64."""
    try:
        return base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_basic(token: str) -> tuple[str, str] | None:
    """Decode Basic credentials into ``(user, password)``; None if malformed or the user part is empty.

    UTF-8 is tried first (RFC 7617 §2.1 ``charset="UTF-8"``), then Latin-1, which is what older clients send.
    """
    raw = decode_base64_token(token)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    if not sep or not user:
        return None
    return user, password


def challenge_values(offered: Sequence[str], realm: str, *, bearer_error: bool = False) -> list[bytes]:
    """Return one ``WWW-Authenticate`` value per offered scheme, in order.

    Basic carries ``realm="..."``; Bearer is bare, or carries ``error="invalid_token"`` after a rejected token.
    """
    values: list[bytes] = []
    for scheme in offered:
        if scheme == "Basic":
            values.append(f'Basic realm="{realm}"'.encode("ascii"))
        elif scheme == "Bearer" and bearer_error:
            values.append(b'Bearer error="invalid_token"')
        else:
            values.append(scheme.encode("ascii"))
    return values


async def drain_body(receive: Receive) -> tuple[int, bool]:
    """Read and discard the request body chunk by chunk; return ``(bytes discarded, client disconnected)``.

    Nothing is kept, so a body of any size costs only the server's own read buffer.
    """
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return total, True
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            return total, False


async def send_unauthorized(
    send: Send,
    challenges: Sequence[bytes],
    extra_headers: Sequence[tuple[bytes, bytes]],
    *,
    head: bool,
) -> None:
    """Send a complete 401 with one ``WWW-Authenticate`` line per challenge and a small text/html body."""
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"text/html"),
        (b"content-length", str(len(UNAUTHORIZED_BODY)).encode("ascii")),
    ]
    headers.extend((b"www-authenticate", value) for value in challenges)
    headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else UNAUTHORIZED_BODY, "more_body": False})
