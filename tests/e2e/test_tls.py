"""TLS and mutual TLS on the gRPC port, with certificates made in the test.

A CA signs the server's certificate (for 127.0.0.1 and localhost) and a client
certificate; a second CA signs a certificate the server must not trust.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from creditwatch.client import CreditwatchClient, RetryPolicy, UnavailableError
from creditwatch.client.testing import ServerProcess
from tests.conftest import TenantKey

pytestmark = pytest.mark.asyncio


@dataclass(frozen=True)
class Issued:
    """A PEM certificate and its key, written to files."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    issued = Issued(folder / f"{stem}.pem", folder / f"{stem}.key")
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    issued.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return issued


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


def _ca(folder: Path, stem: str) -> tuple[Issued, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(f"creditwatch test {stem}", _name(f"creditwatch test {stem}"), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(folder, stem, cert, key), key


def _leaf(
    folder: Path,
    stem: str,
    ca: tuple[Issued, ec.EllipticCurvePrivateKey],
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> Issued:
    ca_cert = x509.load_pem_x509_certificate(ca[0].cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(stem, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _write(folder, stem, builder.sign(ca[1], hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    """Everything the tests need: the CA, server and client certificates."""

    ca: Issued
    server: Issued
    client: Issued
    stranger: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a server and a client certificate, and a client cert of another CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca = _ca(folder, "ca")
    other_ca = _ca(folder, "other-ca")
    server = _leaf(
        folder,
        "server",
        ca,
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = _leaf(folder, "bank-client", ca, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    stranger = _leaf(folder, "stranger", other_ca, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(ca[0], server, client, stranger)


def _tls_server(database_url: str, pki: Pki, *, client_ca: bool) -> Iterator[ServerProcess]:
    env = {
        "CREDITWATCH_TLS_CERT_FILE": str(pki.server.cert),
        "CREDITWATCH_TLS_KEY_FILE": str(pki.server.key),
    }
    if client_ca:
        env["CREDITWATCH_TLS_CLIENT_CA_FILE"] = str(pki.ca.cert)
    with ServerProcess(database_url, env=env) as process:
        yield process


@pytest.fixture(scope="module")
def mtls_server(database_url: str, pki: Pki) -> Iterator[ServerProcess]:
    """A server that requires client certificates signed by the test CA."""
    yield from _tls_server(database_url, pki, client_ca=True)


@pytest.fixture(scope="module")
def tls_server(database_url: str, pki: Pki) -> Iterator[ServerProcess]:
    """A server with TLS but no client-certificate check."""
    yield from _tls_server(database_url, pki, client_ca=False)


_ONCE = RetryPolicy.disabled()


async def _refused(client: CreditwatchClient) -> None:
    async with client:
        with pytest.raises(UnavailableError):
            await client.watch_lists.create("Should not exist", rpc_timeout=10)


async def test_mutual_tls_client_with_ca_and_certificate_works(
    mtls_server: ServerProcess, pki: Pki, tenant: TenantKey
) -> None:
    async with CreditwatchClient(
        mtls_server.address,
        tenant.api_key,
        root_certificates=pki.ca.cert.read_bytes(),  # bytes ...
        certificate_chain=pki.client.cert,  # ... or paths
        private_key=str(pki.client.key),
    ) as client:
        created = await client.watch_lists.create("Over mTLS")
        assert [w.name async for w in client.watch_lists.list()] == [created.name]

    port = mtls_server.port
    async with CreditwatchClient(
        f"localhost:{port}",
        tenant.api_key,
        root_certificates=pki.ca.cert.read_text(),  # PEM text works too
        certificate_chain=pki.client.cert,
        private_key=pki.client.key,
    ) as by_host_name:
        assert (await by_host_name.watch_lists.get(created.name)).display_name == "Over mTLS"


async def test_plaintext_client_cannot_talk_to_a_tls_server(
    mtls_server: ServerProcess, tls_server: ServerProcess, tenant: TenantKey
) -> None:
    for server in (mtls_server, tls_server):
        await _refused(CreditwatchClient(server.address, tenant.api_key, retry=_ONCE))


async def test_mutual_tls_server_refuses_clients_without_a_trusted_certificate(
    mtls_server: ServerProcess, pki: Pki, tenant: TenantKey
) -> None:
    await _refused(
        CreditwatchClient(
            mtls_server.address, tenant.api_key, root_certificates=pki.ca.cert, retry=_ONCE
        )
    )
    await _refused(
        CreditwatchClient(
            mtls_server.address,
            tenant.api_key,
            root_certificates=pki.ca.cert,
            certificate_chain=pki.stranger.cert,
            private_key=pki.stranger.key,
            retry=_ONCE,
        )
    )


async def test_tls_only_server_accepts_a_client_without_a_certificate(
    tls_server: ServerProcess, pki: Pki, tenant: TenantKey
) -> None:
    async with CreditwatchClient(
        tls_server.address, tenant.api_key, root_certificates=pki.ca.cert
    ) as client:
        created = await client.watch_lists.create("Over TLS")
        assert (await client.watch_lists.get(created.name)).name == created.name


async def test_client_refuses_a_server_certificate_it_does_not_trust(
    tls_server: ServerProcess, pki: Pki, tenant: TenantKey
) -> None:
    # The other CA did not sign the server's certificate.
    other_ca = pki.stranger.cert.parent / "other-ca.pem"
    await _refused(
        CreditwatchClient(
            tls_server.address, tenant.api_key, root_certificates=other_ca, retry=_ONCE
        )
    )


async def test_certificate_arguments_are_checked_up_front(pki: Pki) -> None:
    with pytest.raises(ValueError, match="both"):
        CreditwatchClient("127.0.0.1:1", "cw_key", certificate_chain=pki.client.cert)
    with pytest.raises(ValueError, match="tls=False"):
        CreditwatchClient("127.0.0.1:1", "cw_key", tls=False, root_certificates=pki.ca.cert)


async def test_client_certificates_asked_for_without_tls_stop_the_start_up(pki: Pki) -> None:
    from creditwatch.server.app import _credentials
    from creditwatch.server.config import Settings

    # A typo in the certificate's variable must not leave a server that was
    # asked to check clients' certificates serving plaintext to anyone.
    with pytest.raises(ValueError, match="CREDITWATCH_TLS_CLIENT_CA_FILE needs TLS"):
        _credentials(Settings(tls_client_ca_file=pki.ca.cert))
    assert _credentials(Settings()) is None  # no TLS asked for: plaintext, as documented


def _health(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`creditwatch health` as a container's probe runs it."""
    return subprocess.run(
        [sys.executable, "-m", "creditwatch.server", "health", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_health_probe_checks_a_tls_server_over_tls(
    tls_server: ServerProcess, mtls_server: ServerProcess, pki: Pki
) -> None:
    tls_env = {"CREDITWATCH_TLS_CERT_FILE": str(pki.server.cert)}
    # The port from the environment, as in the container image.
    probe = _health(
        CREDITWATCH_PORT=str(tls_server.port), CREDITWATCH_HEALTH_CA_FILE=str(pki.ca.cert)
    )
    assert (probe.returncode, probe.stdout.strip()) == (0, "SERVING"), probe.stderr
    # Told the server has TLS but given no CA: says what to set.
    blind = _health("--address", tls_server.address, **tls_env)
    assert blind.returncode == 1 and "CREDITWATCH_HEALTH_CA_FILE" in blind.stderr
    # Mutual TLS: with a client certificate only.
    mutual = _health(
        "--address",
        mtls_server.address,
        "--ca-file",
        str(pki.ca.cert),
        "--cert-file",
        str(pki.client.cert),
        "--key-file",
        str(pki.client.key),
    )
    assert mutual.returncode == 0, mutual.stderr
    anonymous = _health("--address", mtls_server.address, "--ca-file", str(pki.ca.cert))
    assert anonymous.returncode == 1 and "UNAVAILABLE" in anonymous.stderr
    # A certificate for another name: checked for the name given.
    named = _health(
        "--address",
        f"localhost:{tls_server.port}",
        "--ca-file",
        str(pki.ca.cert),
        "--server-name",
        "localhost",
    )
    assert named.returncode == 0, named.stderr
