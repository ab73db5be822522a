"""The OpenAPI document is a contract an app team can build on: a Python client generated from the live
document (openapi-python-client, as an app team would run it) drives a patient's day against the real app
and database, through typed models only: sign in, today and the plan, a pain diary entry, a practice,
progress and reminders.

Generated models raise on a missing required field and keep unknown ones, so this also checks that every
answer on the way carries what the document says it always carries."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.patient.helpers import PLAN
from tests.support.world import PASSWORD

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
CONFIG = "post_hooks: []\npackage_name_override: companion_client\nproject_name_override: companion-client\n"


@pytest.fixture
def companion_client(client, tmp_path, monkeypatch):
    """The client package generated from the document the app serves, importable as ``companion_client``."""
    (tmp_path / "openapi.json").write_text(json.dumps(client.get("/openapi.json").json))
    (tmp_path / "config.yaml").write_text(CONFIG)
    generated = subprocess.run(
        [str(GENERATOR), "generate", "--path", "openapi.json", "--config", "config.yaml", "--meta", "none",
         "--output-path", "companion_client"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "Warning" not in generated.stdout + generated.stderr, generated.stdout + generated.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "companion_client" or m.startswith("companion_client.")]:
        del sys.modules[name]
    return importlib.import_module("companion_client")


def _call(module_name: str, **kwargs):
    """One operation, by its operationId, through the generated client; the parsed answer."""
    module = importlib.import_module(f"companion_client.api.{module_name}")
    response = module.sync_detailed(**kwargs)
    assert response.status_code < 300, (module_name, response.status_code, response.content[:500])
    return response


def test_a_generated_client_drives_a_patients_day(companion_client, api_server, client, world, services):
    from companion_client import AuthenticatedClient, Client
    from companion_client.models import Login, PainEntryInput, PracticeComplete, PracticeStart

    services.library.load()  # what `companion load-content` does in a deployment
    patient = world["patient_a"]
    assert client.put(f"/api/v1/patients/{patient.id}/therapy-plan", json=PLAN,
                      headers=world["clinician_team"].headers).status_code == 201
    anonymous = Client(base_url=api_server.url, raise_on_unexpected_status=True)

    tokens = _call("auth.log_in", client=anonymous, body=Login(email=patient.email, password=PASSWORD)).parsed
    api = AuthenticatedClient(base_url=api_server.url, token=tokens.access_token, raise_on_unexpected_status=True)
    me = _call("auth.get_my_account", client=api).parsed
    assert me.id == patient.id

    polled = _call("progress.get_today", patient_id=me.id, client=api)
    today = polled.parsed
    # An app polling today: the generated operation takes If-None-Match, and an unchanged today is a 304.
    unchanged = importlib.import_module("companion_client.api.progress.get_today").sync_detailed(
        patient_id=me.id, client=api, if_none_match=polled.headers["ETag"])
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.parsed is None
    plan = _call("plans.get_therapy_plan", patient_id=me.id, client=api).parsed
    assert plan.tens.sessions_per_day == 2 and plan.medications[0].name == "Paracetamol"
    assert today.date

    created = _call("diary.create_pain_entry", patient_id=me.id, client=api, body=PainEntryInput(
        client_entry_id="day-1-morning", recorded_at=datetime.now(UTC), nrs=6))
    assert created.status_code == 201
    assert created.headers["Location"].endswith(f"/pain-entries/{created.parsed.id}")
    assert created.parsed.nrs == 6

    library = _call("library.list_library_items", client=api).parsed
    slug = library.items[0].slug
    started = _call("library.start_practice", patient_id=me.id, client=api, body=PracticeStart(item_slug=slug),
                    idempotency_key="practice-day-1").parsed
    done = _call("library.complete_practice", patient_id=me.id, practice_id=started.id, client=api,
                 body=PracticeComplete()).parsed
    assert done.completed_at is not None

    streak = _call("progress.get_streak", patient_id=me.id, client=api).parsed
    week = _call("progress.get_week_summary", patient_id=me.id, client=api).parsed
    reminders = _call("reminders.list_reminders", patient_id=me.id, client=api).parsed
    entries = _call("diary.list_pain_entries", patient_id=me.id, client=api,
                    from_=datetime(2026, 1, 1, tzinfo=UTC), to=datetime.now(UTC)).parsed
    assert [e.id for e in entries.items] == [created.parsed.id]
    assert entries.next_ is None
    assert streak.current >= 0 and week.days and isinstance(reminders.items, list)
