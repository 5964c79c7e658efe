"""NTLM acceptor credentials and channel bindings for the lab.

- ``NTLM_USER_FILE`` lines in the smbpasswd format that pyspnego's acceptor reads (spnego ``_ntlm.py``
  ``_get_credential``: ``USER:UID:LM_HASH:NT_HASH:FLAGS:LCT``, only user and the two hashes used), with the hashes of
  [MS-NLMP] §3.3.1 (LMOWFv1, NTOWFv1). Hash lines cost about a quarter of plaintext ones per handshake
  (field-notes.md §1 "Numbers"). MD4 is not available from this machine's OpenSSL (hashlib), so pyspnego's own
  pure-Python helpers are used.
- RFC 5929 §4 ``tls-server-end-point`` channel bindings ([MS-NLMP] §3.1.5.2.2 MsvAvChannelBindings) for Extended
  Protection: the certificate hashed with its signature's hash algorithm, SHA-256 when that is MD5 or SHA-1.
"""

from __future__ import annotations

import base64
import re

from spnego.channel_bindings import GssChannelBindings

from casprobe.net.tls import channel_binding_hash

__all__ = ["certificate_hash", "channel_bindings_for", "format_user_file_line"]

_HASH_PAIR_RE = re.compile(r"[0-9a-fA-F]{32}:[0-9a-fA-F]{32}")


def certificate_hash(cert_der: bytes) -> bytes:
    """Return the RFC 5929 §4.1 ``tls-server-end-point`` hash of a DER certificate (the client's own rule)."""
    return channel_binding_hash(cert_der)


def channel_bindings_for(cert_der: bytes) -> GssChannelBindings:
    """Return the channel bindings an Extended-Protection acceptor expects for this server certificate."""
    return GssChannelBindings(application_data=b"tls-server-end-point:" + certificate_hash(cert_der))


def format_user_file_line(domain: str, user: str, password: str) -> str:
    """Return one smbpasswd-style ``NTLM_USER_FILE`` line (no newline) holding the LM and NT hashes of a password.

    ``domain`` may be empty for a UPN user (``carol@lab.test``). The hashes are those pyspnego itself derives from a
    plaintext entry ([MS-NLMP] §3.3.1 LMOWFv1, NTOWFv1), so both file formats authenticate the same clients.
    """
    for part in (domain, user):
        if any(c in part for c in ":\\\r\n"):
            raise ValueError("domain and user must not contain ':', '\\' or line breaks")
    if not user:
        raise ValueError("user must not be empty")
    if _HASH_PAIR_RE.fullmatch(password):
        # pyspnego would read such a password as an "LM:NT" hash pair instead of hashing it.
        raise ValueError("password must not have the form of an LM:NT hash pair")
    from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1  # private helpers (checked: pyspnego 0.12.4)

    name = f"{domain}\\{user}" if domain else user
    lm_hash = base64.b16encode(lmowfv1(password)).decode("ascii")
    nt_hash = base64.b16encode(ntowfv1(password)).decode("ascii")
    return f"{name}:1000:{lm_hash}:{nt_hash}:[U]:LCT-00000000"
