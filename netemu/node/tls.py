"""Self-signed serving certificates for the lab's own TLS servers (the
stand-in API server, stand-in containers' HTTPS ports), made with the
`cryptography` package, and server contexts to serve them.

A lab has no PKI: each certificate is its own issuer, ECDSA P-256 signed
with SHA-256, valid from five minutes ago for `days` (kubeadm's serving
certificates last a year).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_DAYS = 365


def self_signed(
    common_name: str,
    names: Sequence[str] = (),
    ips: Sequence[str] = (),
    *,
    ca: bool = False,
    days: int = CERT_DAYS,
) -> tuple[bytes, bytes]:
    """(certificate, key) in PEM for `common_name`, with `names` and `ips`
    as subject alternative names (and serverAuth usage) when given; `ca`:
    the certificate may be trusted as its own CA (`curl --cacert`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    alt = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def server_context(cert: bytes, key: bytes) -> ssl.SSLContext:
    """A server context for `cert` and `key`. The ssl module loads a chain
    only from files: they live in a private temporary directory for the
    moment of loading."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory(prefix="netemu-tls-") as directory:
        cert_file, key_file = Path(directory, "tls.crt"), Path(directory, "tls.key")
        cert_file.write_bytes(cert)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key)
        context.load_cert_chain(cert_file, key_file)
    return context
