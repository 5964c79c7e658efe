"""The lab's certificates: one CA made with trustme, one leaf per server and one for the load balancer.

Each server's certificate names the server itself and the namespace names, as a real Exchange certificate does
(so that TCP passthrough through HAProxy verifies too); the load balancer's names only the namespace names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from casprobe.lab.org import Org

__all__ = ["LabPki", "cert_der_from_pem", "issue_lab_pki", "load_lab_pki"]


@dataclass(frozen=True, slots=True)
class LabPki:
    """Where the lab's TLS material lives.

    Attributes:
        ca_file: the CA certificate (PEM): what clients must trust.
        server_cert: server name -> (certificate chain PEM, private key PEM) paths.
        lb_pem: key and chain in one file, as HAProxy's ``crt`` wants it.
    """

    ca_file: Path
    server_cert: dict[str, tuple[Path, Path]]
    lb_pem: Path


def issue_lab_pki(org: Org, folder: Path) -> LabPki:
    """Create a new CA and the certificates of every server and of the load balancer in ``folder``."""
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="casprobe lab CA", organization_unit_name=org.domain)
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    shared = [org.namespace, org.autodiscover, f"mail.{org.domain}"]
    server_cert: dict[str, tuple[Path, Path]] = {}
    for server in org.servers:
        leaf = ca.issue_cert(server.fqdn, *shared, server.address)
        crt, key = folder / f"{server.name}.crt", folder / f"{server.name}.key"
        crt.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        server_cert[server.name] = (crt, key)
    lb_leaf = ca.issue_cert(*shared, org.lb_address)
    lb_pem = folder / "lb.pem"
    lb_leaf.private_key_and_cert_chain_pem.write_to_path(str(lb_pem))
    lb_pem.chmod(0o600)
    return LabPki(ca_file=ca_file, server_cert=server_cert, lb_pem=lb_pem)


def load_lab_pki(org: Org, folder: Path) -> LabPki:
    """The paths of the material :func:`issue_lab_pki` wrote."""
    return LabPki(
        ca_file=folder / "ca.pem",
        server_cert={s.name: (folder / f"{s.name}.crt", folder / f"{s.name}.key") for s in org.servers},
        lb_pem=folder / "lb.pem",
    )


def cert_der_from_pem(path: Path) -> bytes:
    """The DER form of the first certificate in a PEM file (the leaf of a chain)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.public_bytes(Encoding.DER)
