"""Certificates made by the test with the `openssl` command line: a CA of the test's
own and a server certificate it signed, for 127.0.0.1 and localhost. Nothing is
downloaded; no system trust store knows the CA."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "/usr/bin/openssl"
DAYS = "2"


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA's certificate (what a client is told to trust)
    certificate: Path  # the server's, signed by the CA
    key: Path  # the server's private key


def _openssl(*arguments: str) -> None:
    subprocess.run([OPENSSL, *arguments], check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> Certificates:
    """A CA and a server certificate for 127.0.0.1 and localhost in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    key, request = directory / "server.key", directory / "server.csr"
    certificate, extensions = directory / "server.pem", directory / "server.ext"
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *curve, "-keyout", str(ca_key), "-out", str(ca), "-days", DAYS,
        "-subj", "/CN=contentfilter test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        "req", "-new", *curve, "-keyout", str(key), "-out", str(request), "-subj", "/CN=localhost"
    )
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(certificate), "-days", DAYS, "-extfile", str(extensions),
    )  # fmt: skip
    key.chmod(0o600)
    return Certificates(ca, certificate, key)
