"""The `companion` command as an operator meets it: it finds `make run`'s database by default, says in one
line (no traceback) what stopped it, with an exit status of its own, and takes its options anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from companion import cli
from companion.settings import load_settings
from companion.store.relationships import CareTeams
from device_gateway.config import load_config
from tests.support.ferretdb import ROOT, free_port


def _companion(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "companion.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_the_commands_default_to_the_database_and_api_that_make_run_starts():
    assert load_settings(environ={}).mongodb_uri == "mongodb://127.0.0.1:27117/"
    assert load_config("/nonexistent-state-dir", environ={}).api_url == "http://127.0.0.1:5000"


@pytest.mark.parametrize("command", ["audit-verify", "migrate", "worker-status", "seed-demo"])
def test_an_unreachable_database_is_one_line_and_status_69(command):
    result = _companion(command, MONGODB_URI=f"mongodb://user:secret@127.0.0.1:{free_port()}/")
    assert result.returncode == cli.EXIT_UNAVAILABLE, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"companion {command}: the database is not reachable at mongodb://127.0.0.1:")
    assert "secret" not in lines[0] and "make run" in lines[0]


@pytest.mark.fresh_database
def test_options_go_before_or_after_the_command_and_migrate_creates_every_index_once(mongo_uri, db_name,
                                                                                     monkeypatch, capsys):
    from companion.store.db import declared_indexes

    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    assert cli.main(["migrate", "-v"]) == 0
    assert cli.main(["-v", "migrate"]) == 0
    out = capsys.readouterr().out
    declared = sum(len(models) for _, models in declared_indexes())
    assert f"indexes as declared ({declared} change(s) applied)" in out  # a new database: each one created
    assert "indexes as declared (0 change(s) applied)" in out  # then nothing left to do


def test_an_unexpected_error_is_one_line_unless_verbose(monkeypatch, capsys):
    def broken(args):
        """A command with a bug."""
        raise ValueError("something odd\nsecond line")

    monkeypatch.setattr(cli, "migrate", broken)
    assert cli.main(["migrate"]) == cli.EXIT_FAILED
    assert capsys.readouterr().err == ("companion migrate: unexpected error: ValueError: something odd "
                                       "(-v shows the traceback)\n")


def test_migrate_builds_the_panel_rows_and_rebuild_repairs_them_with_progress(mongo_uri, db_name, db, monkeypatch,
                                                                               capsys):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    for n in range(3):  # patients written before the read model existed: no row, no mark
        db.users.insert_one({"_id": f"cli-patient-{n}", "email": f"cli{n}@example.org", "password_hash": "x",
                             "role": "patient", "display_name": f"Patient {n}", "time_zone": "UTC",
                             "time_zone_history": [], "caregiver_alert_delay_min": 60})
    db.panel_rows.delete_many({})
    assert cli.main(["migrate"]) == 0
    built = capsys.readouterr()
    assert "building the panel's read model" in built.out and "panel rows: " in built.err
    patients = db.users.count_documents({"role": "patient"})
    assert db.panel_rows.count_documents({}) == patients >= 3
    db.panel_rows.update_one({"_id": "cli-patient-1"}, {"$set": {"display_name": "stale", "open_alerts": 9}})
    db.panel_rows.insert_one({"_id": "no-longer-a-patient"})
    assert cli.main(["rebuild-read-models"]) == 0
    repaired = capsys.readouterr()
    assert f"panel rows: {patients}/{patients} patients (100%)" in repaired.err
    assert f"{patients} panel row(s) computed" in repaired.out
    row = db.panel_rows.find_one({"_id": "cli-patient-1"})
    assert (row["display_name"], row["open_alerts"]) == ("Patient 1", 0)
    assert db.panel_rows.find_one({"_id": "no-longer-a-patient"}) is None


def test_migrate_builds_the_panel_lines_of_a_database_from_before_them(mongo_uri, db_name, db, monkeypatch, capsys):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    teams = CareTeams(db)
    team = teams.create("Older clinic")
    for n in range(3):
        db.users.insert_one({"_id": f"cli-patient-{n}", "email": f"cli{n}@example.org", "password_hash": "x",
                             "role": "patient", "display_name": f"Patient {n}", "time_zone": "UTC",
                             "time_zone_history": [], "caregiver_alert_delay_min": 60})
        teams.enrol(team.id, f"cli-patient-{n}")
    assert cli.main(["migrate"]) == 0
    assert db.panel_entries.count_documents({"team_id": team.id}) == 3
    db.panel_entries.delete_many({})  # rows computed before panel lines existed
    assert cli.main(["migrate"]) == 0
    assert "building the panel's read model" in capsys.readouterr().out
    assert db.panel_entries.count_documents({"team_id": team.id}) == 3


def test_migrate_sets_a_units_last_contact_stored_in_the_future_to_now(mongo_uri, db_name, db, monkeypatch, capsys):
    """Stored from a gateway clock ahead before the server clamped readings, and kept since (never moved back): the
    unit raised no silent-unit alert until that time came."""
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    before = datetime.now(UTC)
    contacts = {"CT-AHEAD": before + timedelta(days=2), "CT-HEARD": before - timedelta(hours=30),
                "CT-JUST-NOW": before + timedelta(seconds=5)}  # within the margin: a report's own arrival
    db.devices.insert_many([{"_id": serial, "patient_id": f"cli-patient-{serial}", "profile": "generic",
                             "status": {"last_seen_at": at}} for serial, at in contacts.items()])
    assert cli.main(["migrate"]) == 0
    assert "1 unit(s)' last contact" in capsys.readouterr().out
    held = {d["_id"]: d["status"]["last_seen_at"].replace(tzinfo=UTC) for d in db.devices.find({"_id": {"$in": [*contacts]}})}
    assert before <= held.pop("CT-AHEAD") <= datetime.now(UTC)
    assert all(abs(at - contacts[serial]) < timedelta(milliseconds=1) for serial, at in held.items())  # as they were


def test_in_development_the_commands_use_the_audit_key_and_anchors_make_run_keeps(tmp_path):
    """Else `companion audit-verify`, as the README gives it, checked make run's trail with another key and
    reported every event as changed."""
    var = tmp_path / "var"
    var.mkdir()
    (var / "audit-key").write_text("k" * 48 + "\n")
    (var / "dev-secret").write_text("s" * 48 + "\n")
    (var / "audit-anchors.log").write_text("")
    environ: dict[str, str] = {}
    cli._development_defaults(environ, str(var))
    assert (environ["COMPANION_AUDIT_KEY"], environ["COMPANION_SECRET_KEY"]) == ("k" * 48, "s" * 48)
    assert environ["COMPANION_AUDIT_ANCHOR_FILE"] == str(var / "audit-anchors.log")
    assert load_settings(environ=environ).audit_key == "k" * 48
    chosen = {"COMPANION_AUDIT_KEY": "c" * 40}  # what is set wins
    cli._development_defaults(chosen, str(var))
    assert chosen == {"COMPANION_AUDIT_KEY": "c" * 40}
    derived = {"COMPANION_SECRET_KEY": "d" * 40}  # (the audit key derived from the secret key set)
    cli._development_defaults(derived, str(var))
    assert derived == {"COMPANION_SECRET_KEY": "d" * 40}
    production = {"COMPANION_ENV": "production"}  # and production never reads files it did not name
    cli._development_defaults(production, str(var))
    assert production == {"COMPANION_ENV": "production"}


def test_the_development_defaults_last_only_as_long_as_the_command(tmp_path, monkeypatch):
    var = tmp_path / "var"
    var.mkdir()
    (var / "audit-key").write_text("k" * 48)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COMPANION_SECRET_KEY", raising=False)
    monkeypatch.delenv("COMPANION_AUDIT_KEY", raising=False)
    monkeypatch.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/")
    assert cli.main(["migrate"]) == cli.EXIT_UNAVAILABLE
    assert "COMPANION_AUDIT_KEY" not in os.environ  # a test (or any caller) goes on with its own environment


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--time-zone", "Europe/Londn", "not a known IANA time zone"),
    ("--email", "dr.okafor at clinic", "is not an email address"),
])
def test_create_user_refuses_what_the_api_would_refuse_with_status_2(mongo_uri, db_name, monkeypatch, capsys, option,
                                                                     value, said):
    """An account the command line makes must work in the API: a mistyped zone made a caregiver whose alerts
    answered 500."""
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    monkeypatch.setenv("COMPANION_NEW_PASSWORD", "a long enough password")
    given = {"--email": "sam.carer@example.org", "--time-zone": "Europe/London", option: value}
    status = cli.main(["create-user", "--name", "Sam", "--role", "caregiver", *[x for kv in given.items() for x in kv]])
    assert status == 2 and said in capsys.readouterr().err
    assert cli.main(["create-user", "--name", "Sam", "--role", "caregiver", "--email", "sam.carer@example.org",
                     "--time-zone", "Europe/London"]) == 0


@pytest.mark.parametrize("days", ["-3", "0", "many"])
def test_seed_demo_refuses_a_history_that_is_not_a_positive_number_of_days_with_status_2(days, capsys):
    """A demo seeded with no history would be marked loaded, and a later correct run would then do nothing."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(["seed-demo", "--days", days])
    assert stopped.value.code == 2 and "--days" in capsys.readouterr().err


def test_audit_verify_names_an_anchor_file_it_cannot_read_with_status_2(tmp_path, mongo_uri, db_name, monkeypatch,
                                                                       capsys):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    missing = tmp_path / "no-such-anchors.log"
    assert cli.main(["audit-verify", "--anchors", str(missing)]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("companion audit-verify: cannot read the anchors in ")
    assert str(missing) in said[0]


def test_a_migrate_stopped_while_building_the_panel_is_finished_by_the_next(mongo_uri, db_name, db, monkeypatch,
                                                                            capsys):
    """ops review: migrate builds the panel's rows only while none exists (PanelReadModel.missing), so one stopped
    after its first batch leaves the other patients out of their clinicians' panels for good, and says so nowhere."""
    from pymongo.errors import AutoReconnect

    from companion.services.read_models import PanelReadModel

    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    teams = CareTeams(db)
    team = teams.create("Older clinic")
    for n in range(3):  # patients written before the read model existed: no row, no mark, no line
        db.users.insert_one({"_id": f"cli-patient-{n}", "email": f"cli{n}@example.org", "password_hash": "x",
                             "role": "patient", "display_name": f"Patient {n}", "time_zone": "UTC",
                             "time_zone_history": [], "caregiver_alert_delay_min": 60})
        teams.enrol(team.id, f"cli-patient-{n}")
    db.panel_rows.delete_many({})
    db.panel_entries.delete_many({})
    real_refresh, calls = PanelReadModel.refresh, []

    def refresh_until_the_connection_drops(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise AutoReconnect("connection closed")
        return real_refresh(self, *args, **kwargs)

    with monkeypatch.context() as stopped:
        stopped.setattr(PanelReadModel.rebuild, "__defaults__", (None, 1))  # batches of one patient
        stopped.setattr(PanelReadModel, "refresh", refresh_until_the_connection_drops)
        assert cli.main(["migrate"]) == cli.EXIT_FAILED
    assert cli.main(["migrate"]) == 0  # the operator runs it again, as the README says
    capsys.readouterr()
    assert db.panel_entries.count_documents({"team_id": team.id}) == 3


def _old_patient(db, n: int) -> str:
    """A patient as a process of a version before the read model writes one: no row, no mark, no line."""
    db.users.insert_one({"_id": f"cli-patient-{n}", "email": f"cli{n}@example.org", "password_hash": "x",
                         "role": "patient", "display_name": f"Patient {n}", "time_zone": "UTC",
                         "time_zone_history": [], "caregiver_alert_delay_min": 60})
    return f"cli-patient-{n}"


def test_migrate_builds_what_is_missing_for_each_patient_while_the_others_have_theirs(mongo_uri, db_name, db,
                                                                                       monkeypatch, capsys):
    """Patients signed up or enrolled by the previous version's processes while the release step ran: the panel
    was built only while no row (or no line) existed at all, so theirs never were."""
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    teams = CareTeams(db)
    team = teams.create("Older clinic")
    for n in range(2):
        teams.enrol(team.id, _old_patient(db, n))
    assert cli.main(["migrate"]) == 0
    capsys.readouterr()
    assert cli.main(["migrate"]) == 0
    assert "building" not in capsys.readouterr().out  # nothing missing: nothing built
    late = _old_patient(db, 2)  # signed up after the release step's check
    db.care_teams.insert_one({"_id": "other-team", "name": "Second clinic", "clinician_ids": []})
    db.team_enrolments.insert_one({"_id": "other-team:cli-patient-1", "team_id": "other-team",
                                   "patient_id": "cli-patient-1"})  # enrolled by an old process: no mark
    assert cli.main(["migrate"]) == 0
    assert "building the panel's read model for 2 patient(s)" in capsys.readouterr().out
    assert db.panel_rows.find_one({"_id": late}) is not None
    assert db.panel_entries.find_one({"_id": "other-team:cli-patient-1"}) is not None
    assert db.panel_entries.count_documents({"team_id": team.id}) == 2


def test_a_patient_whose_row_cannot_be_computed_fails_migrate_and_rebuild_after_the_others(mongo_uri, db_name, db,
                                                                                            monkeypatch, capsys):
    from companion.services.read_models import PanelReadModel

    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    ids = [_old_patient(db, n) for n in range(3)]
    real_compute = PanelReadModel.compute

    def compute_but_not_the_first(self, person, *args, **kwargs):
        if person.id == ids[0]:
            raise ValueError("a stored value the rules cannot read")
        return real_compute(self, person, *args, **kwargs)

    monkeypatch.setattr(PanelReadModel, "compute", compute_but_not_the_first)
    for command in ("migrate", "rebuild-read-models"):
        assert cli.main([command]) == cli.EXIT_FAILED
        said = capsys.readouterr()
        assert "2 panel row(s) computed" in said.out
        assert f"companion {command}: the panel rows of 1 patient(s) could not be computed ({ids[0]};" in said.err
    assert db.panel_rows.find_one({"_id": ids[0]}) is None and db.panel_rows.count_documents({}) == 2
    monkeypatch.setattr(PanelReadModel, "compute", real_compute)
    assert cli.main(["migrate"]) == 0  # run again, it computes the one that failed
    assert db.panel_rows.find_one({"_id": ids[0]}) is not None


# ---- the image's health check, right for each of its processes ----


def test_the_health_check_knows_each_process_of_the_image_by_its_command_line():
    """The image's HEALTHCHECK probed /healthz whatever the container ran: a worker or sender container from it
    was reported unhealthy."""
    import re
    import shlex

    import yaml

    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if ": " in line)
    for name, command in procfile.items():
        started = shlex.split(command)
        assert cli.process_of(started if name != "web" else ["/opt/venv/bin/python", *started]) == name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^  CMD \["python", "-m", "companion.cli", "healthcheck"\]$', dockerfile, re.MULTILINE)
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert cli.process_of(services["migrate"]["command"]) == "release"
    assert cli.process_of(services["worker"]["command"]) == "worker"
    assert cli.process_of(["/usr/bin/python3", "-m", "something.else"]) is None


@pytest.mark.parametrize(("argv", "process"), [
    (["/opt/venv/bin/python", "/opt/venv/bin/companion", "migrate"], "release"),  # docker run companion companion migrate
    (["/opt/venv/bin/python", "/opt/venv/bin/companion", "load-content"], "release"),
    (["sh", "-c", "exec companion migrate"], "release"),
    (["/opt/venv/bin/python", "/opt/venv/bin/gunicorn", "--bind", "0.0.0.0:5000", "companion.wsgi:app"], "web"),
    (["/opt/venv/bin/python", "/opt/venv/bin/companion-other", "migrate"], None),
    (["/usr/bin/python3", "/app/companion/demo.py"], None),
])
def test_the_health_check_knows_the_console_scripts_as_well_as_the_modules(argv, process):
    """`docker run companion companion migrate` runs the console script: it was not recognised, and the container
    reported unhealthy."""
    assert cli.process_of(argv) == process


def test_the_health_check_of_a_web_process_asks_its_healthz(api_server, monkeypatch, capsys):
    monkeypatch.setenv("PORT", str(api_server.port))
    monkeypatch.setenv("COMPANION_BIND", "0.0.0.0")  # noqa: S104 - probed on loopback
    assert cli.main(["healthcheck", "--process", "web"]) == 0
    monkeypatch.setenv("PORT", str(free_port()))
    assert cli.main(["healthcheck", "--process", "web"]) == 1
    assert "did not answer" in capsys.readouterr().err


@pytest.mark.parametrize(("bind", "url"), [("[::]", "http://[::1]:{}/healthz"), ("[::1]", "http://[::1]:{}/healthz")])
def test_the_health_check_of_a_web_process_bound_to_ipv6_asks_it_there(monkeypatch, capsys, bind, url):
    port = free_port()
    monkeypatch.setenv("PORT", str(port))
    monkeypatch.setenv("COMPANION_BIND", bind)  # as the Procfile gives it to gunicorn: [::]:5000
    assert cli.main(["healthcheck", "--process", "web"]) == 1
    assert f"web: {url.format(port)} did not answer" in capsys.readouterr().err


def test_the_health_check_of_a_worker_is_its_heartbeat_and_of_a_sender_the_database(
        mongo_uri, db_name, monkeypatch, capsys):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    assert cli.main(["healthcheck", "--process", "worker"]) == 1  # no worker beat on this host
    assert "no heartbeat from this host" in capsys.readouterr().out
    assert cli.main(["healthcheck", "--process", "sender"]) == 0
    assert cli.main(["healthcheck", "--process", "release"]) == 0
    monkeypatch.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{free_port()}/")
    assert cli.main(["healthcheck", "--process", "sender"]) == cli.EXIT_UNAVAILABLE


@pytest.mark.parametrize("process", [["-m", "companion.cli", "worker-status"], ["-m", "companion.cli", "migrate"],
                                     ["-m", "companion.jobs.worker"]], ids=["worker-status", "migrate", "worker"])
def test_a_mongodb_srv_address_that_dns_does_not_know_is_one_line_and_status_69(process):
    """pymongo looks a mongodb+srv:// name up while making its client: it was an "unexpected error", status 1
    (and a traceback from the worker), where an unreachable database is one line and 69."""
    env = {**os.environ, "MONGODB_URI": "mongodb+srv://user:secret@no-such-cluster.invalid/",
           "COMPANION_WORKER_METRICS_PORT": "0"}
    env.pop("FCM_SERVICE_ACCOUNT", None)
    result = subprocess.run([sys.executable, *process], cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=120)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # (JSON log lines aside)
    assert result.returncode == cli.EXIT_UNAVAILABLE and "Traceback" not in result.stderr, result.stderr[-600:]
    assert len(lines) == 1 and "the database is not reachable at mongodb+srv://no-such-cluster.invalid/" in lines[0]
    assert "DNS records cannot be looked up" in lines[0] and "secret" not in lines[0] and "MONGODB_URI" in lines[0]
