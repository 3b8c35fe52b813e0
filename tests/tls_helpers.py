"""Throwaway PKI for the TLS tests: a CA, a server certificate (DNS localhost, IP 127.0.0.1) and a
client certificate for mutual TLS, all signed by the CA (``cryptography``, a dev dependency)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)
CLIENT_NAME = "linkner-test-client"  # the client certificate's common name
Key = ec.EllipticCurvePrivateKey
Extensions = list[tuple[x509.ExtensionType, bool]]  # (extension, critical)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key: Key, issuer: x509.Name, issuer_key: Key,
                 extensions: Extensions) -> x509.Certificate:
    """A certificate of ``key`` for ``subject``, signed by ``issuer_key``, valid from an hour ago."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + VALIDITY))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf(subject: str, usage: x509.ObjectIdentifier, ca: x509.Certificate, ca_key: Key,
          names: list[x509.GeneralName]) -> tuple[x509.Certificate, Key]:
    """An end-entity certificate (server or client ``usage``) signed by the CA, with its new key."""
    key = ec.generate_private_key(ec.SECP256R1())
    extensions: Extensions = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([usage]), False),
    ]
    if names:
        extensions.append((x509.SubjectAlternativeName(names), False))
    return _certificate(subject, key, ca.subject, ca_key, extensions), key


def _write(folder: Path, name: str, certificate: x509.Certificate, key: Key) -> None:
    (folder / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}-key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def make_pki(folder: Path) -> dict[str, Path]:
    """Write ca.pem (and ca-key.pem), server.pem, server-key.pem, client.pem and client-key.pem into
    ``folder``; return their paths by name ("ca", "ca_key", "server", "server_key", "client", "client_key")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("linkner-test-ca", ca_key, _name("linkner-test-ca"), ca_key, [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                       key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                       decipher_only=False), True),
    ])
    server = _leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH, ca, ca_key,
                   [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client = _leaf(CLIENT_NAME, ExtendedKeyUsageOID.CLIENT_AUTH, ca, ca_key, [])
    for name, (certificate, key) in {"ca": (ca, ca_key), "server": server, "client": client}.items():
        _write(folder, name, certificate, key)
    return {name: folder / f"{name.replace('_', '-')}.pem"
            for name in ("ca", "ca_key", "server", "server_key", "client", "client_key")}
