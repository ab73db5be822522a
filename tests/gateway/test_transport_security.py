"""H5 in transit: the gateway verifies the API's certificate (a private CA is configured, never switched off), and
talks plain http:// to no API but one on this host."""

import re
import ssl
from pathlib import Path

import httpx
import pytest

from device_gateway import api as gateway_api
from device_gateway.api import ApiClient, checked_api_url
from device_gateway.buffer import RecordBuffer
from device_gateway.cli import EXIT_CONFIG, main
from device_gateway.config import load_config
from device_gateway.errors import ConfigError
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


@pytest.mark.parametrize("url", ["http://api.example.org", "http://api.example.org:5000/", "http://10.0.0.5:5000",
                                 "http://[2001:db8::1]:5000", "http://localhost.example.org", "api.example.org",
                                 "ftp://api.example.org", "https://", "http://127.0.0.1:port"])
def test_an_api_url_that_is_not_https_to_another_host_is_refused_as_a_config_error(tmp_path, url):
    """Refused where it is used to talk to the API; read, it is kept (the commands that send nothing use the
    config)."""
    config = load_config(str(tmp_path), environ={"COMPANION_API_URL": url, "COMPANION_GATEWAY_ID": "gw-1",
                                                 "COMPANION_GATEWAY_SECRET": "s3cret"})
    with pytest.raises(ConfigError):
        config.api_client()
    with pytest.raises(ConfigError):
        ApiClient(url, "gw-1", "s3cret")


@pytest.mark.parametrize("url", ["https://api.example.org", "https://10.0.0.5:8443", "http://127.0.0.1:5000",
                                 "http://127.8.9.10:5000", "http://localhost:5000", "http://LOCALHOST",
                                 "http://[::1]:5000"])
def test_https_anywhere_and_plain_http_to_this_host_are_accepted(url):
    assert checked_api_url(url) == url


def test_pairing_never_sends_the_code_over_plain_http_to_another_host():
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:  # (nothing may get this far: no request may leave)
        seen.append(request.url)
        return httpx.Response(201, json={"gateway_id": "gw-1", "gateway_secret": "s3cret", "patient_ref": "p",
                                         "device_serials": []})

    with pytest.raises(ConfigError):
        gateway_api.pair("http://api.example.org", "ABCDE23456", "hall", transport=httpx.MockTransport(answer))
    assert seen == []


def test_pair_with_a_plain_http_api_to_another_host_ends_with_the_config_errors_one_line(tmp_path, capsys):
    assert main(["--state-dir", str(tmp_path), "pair", "ABCDE23456", "--api", "http://api.example.org"]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("device-gateway: ") and "https://" in err
    assert not (tmp_path / "config.json").exists()
