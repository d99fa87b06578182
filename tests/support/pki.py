"""A throwaway PKI for TLS tests: a CA, a rogue CA, a server cert for 127.0.0.1, and
client certificates from each CA."""

from __future__ import annotations

import datetime
from pathlib import Path


def make_pki(tmp: Path) -> dict[str, Path]:
    from cryptography import x509  # a test dependency (pyproject [test])
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        issuer_key: ec.EllipticCurvePrivateKey,
        ca: bool,
        san: bool = False,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    out: dict[str, Path] = {}
    for ca_name in ("ca", "rogue-ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        out[f"{ca_name}.key"] = write_key(key, tmp / f"{ca_name}.key")
        c = cert(ca_name, key, ca_name, key, ca=True)
        out[f"{ca_name}.crt"] = tmp / f"{ca_name}.crt"
        out[f"{ca_name}.crt"].write_bytes(c.public_bytes(serialization.Encoding.PEM))
    ca_key = serialization.load_pem_private_key(out["ca.key"].read_bytes(), None)
    rogue_key = serialization.load_pem_private_key(out["rogue-ca.key"].read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    assert isinstance(rogue_key, ec.EllipticCurvePrivateKey)
    for leaf, issuer, issuer_key, san in (
        ("server", "ca", ca_key, True),
        ("client", "ca", ca_key, False),
        ("rogue", "rogue-ca", rogue_key, False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        out[f"{leaf}.key"] = write_key(key, tmp / f"{leaf}.key")
        c = cert(leaf, key, issuer, issuer_key, ca=False, san=san)
        out[f"{leaf}.crt"] = tmp / f"{leaf}.crt"
        out[f"{leaf}.crt"].write_bytes(c.public_bytes(serialization.Encoding.PEM))
    return out


