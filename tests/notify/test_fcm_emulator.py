"""The loopback FCM emulator itself: what it answers, records and shows."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from companion.notify.fcm_emulator import FAULTS, FcmEmulator, write_service_account


@pytest.fixture
def access_token(emulator: FcmEmulator) -> str:
    return httpx.post(emulator.token_uri, data={"grant_type": "x", "assertion": "y"}).json()["access_token"]


def post_message(emulator: FcmEmulator, access_token: str, token: str, title: str = "Hello") -> httpx.Response:
    body = {"message": {"token": token, "notification": {"title": title, "body": "b"}}}
    return httpx.post(emulator.url + "/v1/projects/demo/messages:send", json=body,
                      headers={"Authorization": f"Bearer {access_token}"})


def test_token_endpoint_answers_like_google_oauth(emulator):
    answer = httpx.post(emulator.token_uri, data={"grant_type": "x"}).json()
    assert (answer["token_type"], answer["expires_in"], bool(answer["access_token"])) == ("Bearer", 3600, True)


def test_send_answers_with_a_message_name_in_the_project(emulator, access_token):
    answer = post_message(emulator, access_token, "phone-1").json()
    assert answer["name"].startswith("projects/demo/messages/")


def test_send_without_an_issued_access_token_is_unauthenticated(emulator):
    response = post_message(emulator, "forged", "phone-1")
    assert (response.status_code, emulator.deliveries) == (401, [])


def test_scripted_fault_answers_fcms_error_body_and_retry_after(emulator, access_token):
    emulator.script("QUOTA_EXCEEDED", retry_after=30, times=1)
    response = post_message(emulator, access_token, "phone-1")
    assert (response.status_code, response.headers["Retry-After"], response.json()) == (
        429, "30", FAULTS["QUOTA_EXCEEDED"].body())


def test_fault_for_next_n_requests_then_delivers(emulator, access_token):
    emulator.script("UNAVAILABLE", times=2)
    statuses = [post_message(emulator, access_token, "phone-1").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_fault_for_a_token_always_leaves_other_tokens_alone(emulator, access_token):
    emulator.script("UNREGISTERED", token="phone-dead")
    statuses = [post_message(emulator, access_token, t).status_code for t in ("phone-dead", "phone-1", "phone-dead")]
    assert statuses == [404, 200, 404]


def test_deliveries_endpoint_lists_full_bodies_newest_first(emulator, access_token):
    post_message(emulator, access_token, "phone-1")
    post_message(emulator, access_token, "phone-2")
    listed = httpx.get(emulator.url + "/deliveries").json()["deliveries"]
    assert [d["body"]["message"]["token"] for d in listed] == ["phone-2", "phone-1"]


def test_page_shows_deliveries_with_their_text_escaped(emulator, access_token):
    post_message(emulator, access_token, "phone-1", title="<b>Hi</b>")
    page = httpx.get(emulator.url + "/").text
    assert "&lt;b&gt;Hi&lt;/b&gt;" in page and "<b>Hi</b>" not in page


def test_service_account_file_names_the_emulator_token_endpoint(tmp_path, emulator):
    document = json.loads(write_service_account(tmp_path / "sa.json", emulator.token_uri, "demo").read_text())
    assert (document["type"], document["project_id"], document["token_uri"]) == (
        "service_account", "demo", emulator.token_uri)
    assert document["private_key"].startswith("-----BEGIN PRIVATE KEY-----")


def test_command_line_writes_the_service_account_and_serves_deliveries(tmp_path):
    account = tmp_path / "run" / "fcm-service-account.json"
    proc = subprocess.Popen([sys.executable, "-m", "companion.notify.fcm_emulator", "--port", "0",
                             "--write-service-account", str(account)], stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split()[3]
        assert httpx.get(url + "/deliveries").json() == {"deliveries": []}
        assert json.loads(account.read_text())["token_uri"] == url + "/token"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def busy_port():
    """A port another program listens on (`make run` found 9099 taken)."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


def test_a_port_in_use_is_one_line_naming_the_setting_and_no_service_account_file(tmp_path, busy_port):
    """It wrote a traceback into var/run/fcm.log only, and the worker and sender looped on the missing file."""
    written = tmp_path / "sa.json"
    done = subprocess.run([sys.executable, "-m", "companion.notify.fcm_emulator", "--port", str(busy_port),
                           "--write-service-account", str(written)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 69 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"companion fcm-emulator: 127.0.0.1:{busy_port} is in use by another program: stop it or choose another "
        "port (--port; make run: COMPANION_FCM_PORT=9199 make run)"]
    assert not written.exists()


def _supervised_emulator(tmp_path, port: int) -> tuple[subprocess.Popen, subprocess.CompletedProcess]:
    """The emulator as scripts/run-local.sh starts it (under the supervisor, its output appended to a log that
    already holds an earlier run's lines), and scripts/await-fcm.sh waiting for its file."""
    import os
    import signal

    from tests.support.ferretdb import ROOT

    log, written = tmp_path / "fcm.log", tmp_path / "sa.json"
    log.write_text("companion fcm-emulator: 127.0.0.1:1 is in use by another program: (an earlier run's)\n")
    size = log.stat().st_size
    supervised = subprocess.Popen(
        [str(ROOT / "scripts" / "supervise.sh"), "fcm", "bash", "-c",
         f"exec {sys.executable} -m companion.notify.fcm_emulator --port {port} --write-service-account {written} "
         f">> {log} 2>&1"], cwd=ROOT, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        waited = subprocess.run([str(ROOT / "scripts" / "await-fcm.sh"), str(written), str(log), str(size), "30"],
                                capture_output=True, text=True, timeout=60)
    finally:
        os.killpg(supervised.pid, signal.SIGTERM)
        supervised.wait(timeout=10)
    return supervised, waited


def test_make_run_stops_with_the_emulators_line_when_its_port_is_in_use(tmp_path, busy_port):
    _, waited = _supervised_emulator(tmp_path, busy_port)
    assert waited.returncode == 1
    assert waited.stderr.splitlines() == [
        f"companion fcm-emulator: 127.0.0.1:{busy_port} is in use by another program: stop it or choose another "
        "port (--port; make run: COMPANION_FCM_PORT=9199 make run)"]


def test_make_run_goes_on_once_the_emulator_wrote_its_service_account_file(tmp_path):
    from tests.support.ferretdb import free_port

    _, waited = _supervised_emulator(tmp_path, free_port())
    assert waited.returncode == 0 and waited.stderr == ""
    assert json.loads((tmp_path / "sa.json").read_text())["type"] == "service_account"
