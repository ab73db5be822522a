"""H5 in transit: the gateway verifies the API's certificate (a private CA is configured, never switched off)."""

import re
import ssl
from pathlib import Path

import httpx
import pytest

from device_gateway.api import ApiClient
from device_gateway.buffer import RecordBuffer
from device_gateway.config import load_config
from device_gateway.uploader import Uploader
from tests.support.api_server import ApiServer, paired_gateway
from tests.support.records import captured_records
from tests.support.tls import make_authority, server_context

REPO_ROOT = Path(__file__).resolve().parents[2]
SERIAL = "CTU-T0001"
RECORDS = 30


@pytest.fixture
def authority():
    return make_authority("Companion test CA")


@pytest.fixture
def tls_api(app, authority, tmp_path):
    server = ApiServer(app, ssl_context=server_context(authority, tmp_path))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gateway(client, services):
    return paired_gateway(client, services, [SERIAL])


@pytest.fixture
def buffer(tmp_path):
    buf = RecordBuffer(tmp_path / "buffer.db")
    buf.store(SERIAL, captured_records(SERIAL, RECORDS))
    yield buf
    buf.close()


def upload(buffer, api: ApiClient) -> Uploader:
    uploader = Uploader(buffer, api, sleep=lambda delay: None)
    try:
        uploader.drain(max_failures=3)
    finally:
        api.close()
    return uploader


def client_for(url: str, gateway, ca_file: Path | None) -> ApiClient:
    return ApiClient(url, gateway.gateway_id, gateway.gateway_secret, timeout_s=5,
                     ca_file=str(ca_file) if ca_file else None)


def test_gateway_configured_with_the_api_ca_uploads_over_tls(tls_api, authority, gateway, buffer, db, tmp_path):
    config = load_config(str(tmp_path / "state"), environ={
        "COMPANION_API_URL": tls_api.url, "COMPANION_GATEWAY_CA_FILE": str(authority.write_pem(tmp_path / "ca.pem")),
        "COMPANION_GATEWAY_ID": gateway.gateway_id, "COMPANION_GATEWAY_SECRET": gateway.gateway_secret,
    })

    uploader = upload(buffer, config.api_client())

    assert tls_api.url.startswith("https://")
    assert buffer.pending_count() == 0 and uploader.progress.sent == RECORDS
    assert db.session_records.count_documents({"device_serial": SERIAL}) == RECORDS


def test_certificate_from_an_unknown_ca_fails_with_an_ssl_error(tls_api, gateway, tmp_path):
    stranger = make_authority("Someone else's CA").write_pem(tmp_path / "other-ca.pem")
    api = client_for(tls_api.url, gateway, stranger)
    try:
        with pytest.raises(httpx.ConnectError) as failure:
            api.post_records([])
    finally:
        api.close()
    chain = []
    error: BaseException | None = failure.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert any(isinstance(e, ssl.SSLCertVerificationError) for e in chain)


def test_records_stay_buffered_when_the_certificate_cannot_be_verified(tls_api, gateway, buffer, db, tmp_path):
    stranger = make_authority("Someone else's CA").write_pem(tmp_path / "other-ca.pem")

    uploader = upload(buffer, client_for(tls_api.url, gateway, stranger))

    assert uploader.progress.retries == 3 and uploader.progress.sent == 0
    assert buffer.pending_count() == RECORDS and buffer.dead_letters() == []
    assert db.session_records.count_documents({}) == 0


def test_system_trust_store_does_not_trust_a_private_ca(tls_api, gateway, buffer):
    uploader = upload(buffer, client_for(tls_api.url, gateway, None))

    assert uploader.progress.sent == 0 and buffer.pending_count() == RECORDS


INSECURE = re.compile(r"verify\s*=\s*False|tlsAllowInvalidCertificates|tlsInsecure|_create_unverified_context|CERT_NONE"
                      r"|check_hostname\s*=\s*False")


def test_no_code_turns_certificate_verification_off():
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for package in ("companion", "device_gateway")
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if INSECURE.search(line)
    ]
    assert offenders == []
