"""The gateway upload budget under gunicorn is one for the whole server: its worker processes share it.

gunicorn.conf.py gives the workers one directory of lock files (COMPANION_ADMISSION_DIR); while another
process holds the server's only slot, every worker turns uploads away, and once it lets go they are taken.
"""

from __future__ import annotations

import httpx

from companion.http.admission import ServerSlots
from tests.support.gunicorn import Gunicorn
from tests.support.records import session_record
from tests.support.world import make_user, pair_gateway

SERIAL = "CTU-BUDGET1"
URL = "/api/v1/gateway/session-records"


def test_every_worker_of_the_server_counts_against_one_gateway_budget(api_env, local_app, tmp_path):
    client, services = local_app.test_client(), local_app.extensions["companion"]
    patient = make_user(client, services, key="budget_patient", role="patient")
    gateway = pair_gateway(client, patient, "budget_gateway", SERIAL)
    shared = tmp_path / "admission"
    server = Gunicorn({**api_env, "COMPANION_ADMISSION_DIR": str(shared), "COMPANION_GATEWAY_UPLOAD_CONCURRENCY": "1"},
                      workers=2, log_dir=tmp_path)
    server.start(wait_s=60)
    try:
        holder = ServerSlots(shared, 1)  # as a long upload in one of the workers would hold it
        slot = holder.acquire()
        assert slot is not None
        # A new connection each time: gunicorn hands connections to whichever worker accepts first.
        answers = [httpx.post(server.url + URL, headers=gateway.headers, timeout=30,
                              json={"records": [session_record(SERIAL, n)]}) for n in range(1, 13)]
        assert [a.status_code for a in answers] == [503] * 12
        assert all(int(a.headers["Retry-After"]) >= 1 for a in answers)
        holder.release(slot)
        taken = httpx.post(server.url + URL, headers=gateway.headers, timeout=30,
                           json={"records": [session_record(SERIAL, 1)]})
        assert taken.status_code == 200, taken.text
    finally:
        server.stop()
    assert services.db.session_records.count_documents({"device_serial": SERIAL}) == 1
