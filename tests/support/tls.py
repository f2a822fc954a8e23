"""Certificates for TLS tests, made with the `openssl` command: a private CA and leaves it signs.

Each leaf names `localhost` and 127.0.0.1, as Go clients (Prometheus, Alertmanager) check the SAN, not
the CN. Keys are P-256, quick to make.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    subprocess.run([binary, *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    def der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.cert.read_text())


@dataclass(frozen=True)
class CA:
    cert: Path
    key: Path

    def issue(self, directory: Path, name: str, *, cn: str = "localhost", client: bool = False,
              sans: str = "DNS:localhost,IP:127.0.0.1") -> Pair:
        """A leaf certificate and key under `directory` named `name`.crt/.key."""
        directory.mkdir(parents=True, exist_ok=True)
        key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
        ext = directory / f"{name}.ext"
        usage = "clientAuth" if client else "serverAuth"
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage={usage}\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
                 "-out", str(csr), "-subj", f"/CN={cn}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-set_serial", str(abs(hash((name, cn, str(directory)))) % 2**63), "-days", "2",
                 "-out", str(cert), "-extfile", str(ext))
        return Pair(cert, key)


def make_ca(directory: Path, name: str = "ca") -> CA:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN=cachewarden test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    return CA(cert, key)


def client_context(ca: CA, pair: Pair | None = None) -> ssl.SSLContext:
    """A client context trusting `ca` only (and presenting `pair`, if given)."""
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    if pair is not None:
        ctx.load_cert_chain(str(pair.cert), str(pair.key))
    return ctx
