"""The patient's "today" answers from its row: the request's commands are counted on the wire (a pymongo
CommandListener on the application's own client), and the bound holds once the row is current, again after a
write that changed the patient's today, and for a reminder recorded through the API."""

from __future__ import annotations

import pymongo
import pytest
from pymongo import monitoring

from companion import create_app
from companion.services.container import Services
from companion.settings import load_settings
from tests.patient.test_reminders import DAILY, create, occurrences, record
from tests.support import response_guard

# A patient's own "today": their account (the whole session check, whose account today reuses), the today row,
# and the audit event.
TODAY_BOUND = 3


class _Commands(monitoring.CommandListener):
    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def started(self, event):
        target = event.command.get(event.command_name)
        self.seen.append((event.command_name, target if isinstance(target, str) else ""))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


@pytest.fixture
def commands():
    return _Commands()


@pytest.fixture
def app(settings_overrides, commands):
    settings = load_settings(settings_overrides)
    watched = pymongo.MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[commands])
    app = create_app(settings_overrides, services=Services(settings, client=watched))
    app.config["TESTING"] = True
    violations: list[str] = []
    response_guard.install(app, violations)
    yield app
    watched.close()
    assert violations == [], "responses carried secret or internal fields"


def _today(client, world, commands, who="patient_a") -> tuple[dict, list[tuple[str, str]]]:
    commands.seen.clear()
    answer = client.get(f"/api/v1/patients/{world['patient_a'].id}/today", headers=world[who].headers)
    assert answer.status_code == 200, answer.json
    return answer.json, list(commands.seen)


def test_todays_request_sends_at_most_three_commands_once_its_row_is_current(client, world, commands, db):
    assert create(client, world, DAILY).status_code == 201
    first, _ = _today(client, world, commands)  # computes the row (materializes the day's reminders)
    assert first["reminders"]["due"] == 2

    again, sent = _today(client, world, commands)
    assert again == first
    assert len(sent) <= TODAY_BOUND, sent
    assert sent.count(("find", "users")) == 1  # the session check's read, reused
    assert ("find", "token_families") not in sent  # a person's session is decided by their account alone
    assert ("find", "today_rows") in sent and ("insert", "audit_events") in sent
    assert not {c for _, c in sent} & {"reminder_occurrences", "reminders", "session_records", "panel_row_marks"}

    # A dose recorded through the API changes today: the next request computes it again, the one after reads it.
    dose = occurrences(client, world)[0]
    assert record(client, world, dose["id"], {"status": "done"}).status_code == 200
    after, sent = _today(client, world, commands)
    assert (after["reminders"]["done"], after["reminders"]["pending"]) == (1, 1)
    assert ("find", "reminder_occurrences") in sent
    assert len(_today(client, world, commands)[1]) <= TODAY_BOUND
    db.today_rows.delete_many({})
    assert _today(client, world, commands)[0] == after  # the served answer is a fresh computation's


def test_a_caregiver_not_allowed_the_patients_words_sees_no_reason_for_skipping_in_today(client, world, commands):
    assert create(client, world, DAILY).status_code == 201
    dose = occurrences(client, world)[0]
    assert record(client, world, dose["id"], {"status": "skipped", "skip_reason": "felt sick"}).status_code == 200
    mine, _ = _today(client, world, commands)
    theirs, _ = _today(client, world, commands, who="caregiver_linked")  # served from the row the patient's read stored
    assert [i["skip_reason"] for i in mine["reminders"]["items"] if i["status"] == "skipped"] == ["felt sick"]
    assert [i["skip_reason"] for i in theirs["reminders"]["items"] if i["status"] == "skipped"] == [None]
    assert theirs["reminders"]["skipped"] == 1


def test_a_closed_patients_today_has_no_reminders_left(client, world, services):
    assert create(client, world, DAILY).status_code == 201
    pid = world["patient_a"].id
    assert services.progress.today(pid)["reminders"]["due"] == 2  # the row, with the day's reminders
    services.lifecycle.close(pid, by=world["admin"].id)  # closure deletes reminders and occurrences
    assert services.progress.today(pid)["reminders"] == {"due": 0, "pending": 0, "done": 0, "skipped": 0,
                                                         "missed": 0, "items": []}
