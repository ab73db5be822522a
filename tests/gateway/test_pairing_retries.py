"""`device-gateway pair` whose answer is lost on the way (the API made the gateway, the gateway never heard), or
that is killed midway, run again with the same code: the real CLI (in-process and as a real process) → a loopback
TCP proxy that loses the answer → the real API → FerretDB. The gateway keeps its pairing nonce in its state
directory before it first asks, so the retry is answered again for the same gateway, and no one else holding the
code could be."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import httpx
import pytest

from device_gateway.api import ApiAuthError, ApiClient, pair
from device_gateway.cli import main
from device_gateway.config import CONFIG_FILE, PAIRING_NONCE_FILE, load_config
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.world import make_user

REPO_ROOT = Path(__file__).resolve().parents[2]
SERIAL = "CTU-P0001"


@pytest.fixture
def proxy(api_server):
    fault_proxy = FaultProxy(api_server.port, latency_s=3.0).start()
    yield fault_proxy
    fault_proxy.stop()


@pytest.fixture
def patient(client, services):
    person = make_user(client, services, key="patient_pairing", role="patient", time_zone="Europe/London")
    assert client.post(f"/api/v1/patients/{person.id}/devices", json={"serial": SERIAL},
                       headers=person.headers).status_code == 201
    return person


def _code(client, patient) -> str:
    return client.post(f"/api/v1/patients/{patient.id}/pairing-codes", headers=patient.headers).json["code"]


def _works(api_url: str, gateway_id: str, secret: str) -> bool:
    api = ApiClient(api_url, gateway_id, secret)
    try:
        return [d["serial"] for d in api.bound_devices()] == [SERIAL]
    except ApiAuthError:
        return False
    finally:
        api.close()


def test_a_pairing_whose_answer_was_lost_is_run_again_and_ends_with_one_working_gateway(
        tmp_path, client, db, api_server, proxy, patient, capsys):
    state = tmp_path / "gateway"
    code = _code(client, patient)
    proxy.script = [Fault.CLOSE_AFTER_FORWARD]  # the API answers 201; the connection drops before the answer
    assert main(["--state-dir", str(state), "pair", code, "--api", proxy.url, "--name", "hall"]) == 1
    assert "run the same `pair` again" in capsys.readouterr().err
    lost = json.loads(proxy.answers[-1])
    assert not load_config(str(state), environ={}).is_paired
    assert db.gateways.count_documents({"patient_id": patient.id}) == 1  # made, and nobody holds its secret yet

    assert main(["--state-dir", str(state), "pair", code, "--api", proxy.url, "--name", "hall"]) == 0
    config = load_config(str(state), environ={})
    assert config.gateway_id == lost["gateway_id"] and config.gateway_secret != lost["gateway_secret"]
    assert db.gateways.count_documents({"patient_id": patient.id}) == 1
    assert _works(api_server.url, config.gateway_id, config.gateway_secret)
    assert not _works(api_server.url, lost["gateway_id"], lost["gateway_secret"])  # the lost one stops working
    assert not (state / PAIRING_NONCE_FILE).exists()  # the next pairing (a new code) gets a new nonce
    # Its first token taken, the code is spent: pairing again with it (here: the same gateway) is refused.
    assert main(["--state-dir", str(state), "pair", code, "--api", api_server.url]) == 1
    assert load_config(str(state), environ={}).gateway_secret == config.gateway_secret
    assert _works(api_server.url, config.gateway_id, config.gateway_secret)


def test_a_pairing_whose_process_died_before_the_answer_reuses_its_nonce_when_run_again(
        tmp_path, client, db, api_server, patient):
    """The process keeps its nonce before it sends the request, then dies; its request still reaches the API, which
    makes the gateway. The new process's retry is answered for that gateway. (The request reaching the API after
    the process is gone is sent here as it left: with the nonce the state directory holds. A version that killed
    a real process while a proxy held its request failed in clean-clone runs: the held request's answer did not
    come within 60 s, for a reason not found.)"""
    state = tmp_path / "gateway"
    code = _code(client, patient)
    nonce = load_config(str(state), environ={}).pairing_nonce()  # kept before anything is sent, as `pair` does
    assert stat.S_IMODE((state / PAIRING_NONCE_FILE).stat().st_mode) == 0o600
    made = pair(api_server.url, code, "hall", nonce=nonce).gateway_id  # answered to no one: the process is gone
    stored = db.pairing_codes.find_one({"_id": hashlib.sha256(code.encode()).hexdigest()})
    assert stored["gateway_id"] == made and stored["nonce_hash"] == hashlib.sha256(nonce.encode()).hexdigest()
    assert not load_config(str(state), environ={}).is_paired

    assert main(["--state-dir", str(state), "pair", code, "--api", api_server.url]) == 0
    config = load_config(str(state), environ={})
    assert config.gateway_id == made
    assert db.gateways.count_documents({"patient_id": patient.id}) == 1
    assert _works(api_server.url, config.gateway_id, config.gateway_secret)


def test_another_caller_with_the_used_code_is_refused_while_the_gateway_it_made_awaits_its_retry(
        tmp_path, client, db, api_server, proxy, patient):
    """Someone who saw the code sends it between the lost answer and the gateway's retry: refused (no nonce, or
    their own), and the gateway's retry still gets the gateway."""
    state = tmp_path / "gateway"
    code = _code(client, patient)
    proxy.script = [Fault.CLOSE_AFTER_FORWARD]
    assert main(["--state-dir", str(state), "pair", code, "--api", proxy.url]) == 1
    for body in ({"code": code, "name": "x"}, {"code": code, "name": "x", "nonce": "y" * 43}):
        assert httpx.post(f"{api_server.url}/api/v1/gateways/pair", json=body).status_code == 401
    assert main(["--state-dir", str(state), "pair", code, "--api", api_server.url]) == 0
    config = load_config(str(state), environ={})
    assert config.gateway_id == json.loads(proxy.answers[0])["gateway_id"]
    assert _works(api_server.url, config.gateway_id, config.gateway_secret)


def test_the_pairing_nonce_is_kept_until_a_pairing_is_saved_and_one_cut_short_is_replaced(tmp_path):
    config = load_config(str(tmp_path / "gateway"), environ={}, replacing=True)
    first = config.pairing_nonce()
    assert len(first) == 43 and load_config(str(tmp_path / "gateway"), environ={}).pairing_nonce() == first
    config.pairing_nonce_path.write_text(first[:10])  # (not a nonce any more: replaced, not sent)
    second = config.pairing_nonce()
    assert second not in (first, first[:10]) and config.pairing_nonce() == second
    config.forget_pairing_nonce()
    assert config.pairing_nonce() not in (first, second)


def test_a_state_directory_that_cannot_be_written_is_one_line_before_anything_is_sent(
        tmp_path, client, db, api_server, patient, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = _code(client, patient)
    assert main(["--state-dir", str(blocker / "gateway"), "pair", code, "--api", api_server.url]) == 78
    err = capsys.readouterr().err.strip()
    assert err.startswith("device-gateway: cannot keep the pairing's nonce") and "nothing was sent" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert db.gateways.count_documents({"patient_id": patient.id}) == 0  # the code is still unused
    assert main(["--state-dir", str(tmp_path / "gateway"), "pair", code, "--api", api_server.url]) == 0


def test_credentials_that_could_not_be_saved_are_answered_again_once_the_directory_is_fixed(
        tmp_path, client, db, api_server, patient, capsys):
    state = tmp_path / "gateway"
    state.mkdir(mode=0o700)
    (state / CONFIG_FILE).mkdir()  # the config file cannot be replaced: the save fails after the API answered
    code = _code(client, patient)
    assert main(["--state-dir", str(state), "pair", code, "--api", api_server.url]) == 78
    err = capsys.readouterr().err.strip()
    assert "could not be saved" in err and "run the same `pair` again" in err and "Traceback" not in err
    assert (state / PAIRING_NONCE_FILE).exists()  # kept, so that the retry proves it is this gateway
    (state / CONFIG_FILE).rmdir()
    assert main(["--state-dir", str(state), "pair", code, "--api", api_server.url]) == 0
    config = load_config(str(state), environ={})
    assert db.gateways.count_documents({"patient_id": patient.id}) == 1
    assert _works(api_server.url, config.gateway_id, config.gateway_secret)
