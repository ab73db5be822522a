"""Settings are read once and checked at start-up: a bad value stops every process with one line that names
the variable and what it accepts, exit status 2, no traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from companion import cli
from companion.settings import READ_ELSEWHERE, SERVICE_LINKS, SETTINGS, SettingError, Settings, load_settings
from tests.support.ferretdb import ROOT

BAD = [
    ("COMPANION_ENV", "prod", "development, production"),
    ("COMPANION_STAFF_MFA", "REQUIRED", "optional, required"),
    ("COMPANION_DB_TIMEOUT_MS", "5s", "whole number"),
    ("COMPANION_REMINDER_GRACE_MIN", "soon", "number of minutes"),
    # Renewed every third of it, a 1 s lease was renewed every second (at least 1 s): the whole lease.
    ("COMPANION_LEASE_TTL_S", "1", "number of seconds from 3 to 3600"),
    ("COMPANION_LOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING, ERROR"),
    # Read as text until they reached pymongo, smtplib or firebase-admin: a traceback in every process.
    ("MONGODB_URI", "mongodb://127.0.0.1:270170/", "mongodb://host:port/"),
    ("MONGODB_DB", "clinic/prod", "1 to 63 characters"),
    ("COMPANION_SMTP_URL", "smtp://mail.example.org:25x", "smtp://host:port"),
    ("FCM_SERVICE_ACCOUNT", "/etc/companion/no-such-service-account.json", "cannot be read as a JSON file"),
]


@pytest.mark.parametrize(("variable", "value", "accepted"), BAD)
def test_a_malformed_value_is_refused_naming_the_variable_and_what_it_accepts(variable, value, accepted):
    with pytest.raises(SettingError) as refused:
        load_settings(environ={variable: value})
    message = str(refused.value)
    assert variable in message and accepted in message and "\n" not in message


def test_values_are_read_into_their_types():
    settings = load_settings(environ={"COMPANION_STAFF_MFA": "required", "COMPANION_REMINDER_GRACE_MIN": "20",
                                      "COMPANION_LEASE_TTL_S": "12", "COMPANION_DB_TIMEOUT_MS": "1500"})
    assert (settings.staff_mfa_required, settings.reminder_grace, settings.lease_ttl, settings.db_timeout_ms) == (
        True, timedelta(minutes=20), timedelta(seconds=12), 1500)


def test_a_settle_time_not_three_times_the_database_timeout_is_refused_naming_both():
    # A write whose answer was lost keeps its change number for the settle time only: the database may still apply
    # it for as long as its timeout, after the feeds moved past the number for good.
    for given in ({"environ": {"COMPANION_DB_TIMEOUT_MS": "15000"}},
                  {"environ": {"COMPANION_SYNC_SETTLE_S": "20", "COMPANION_DB_TIMEOUT_MS": "7000"}},
                  {"overrides": {"db_timeout_ms": 120_000}, "environ": {}}):
        with pytest.raises(SettingError) as refused:
            load_settings(**given)
        message = str(refused.value)
        assert "COMPANION_SYNC_SETTLE_S" in message and "COMPANION_DB_TIMEOUT_MS" in message and "\n" not in message
    assert load_settings(environ={"COMPANION_DB_TIMEOUT_MS": "10000"}).sync_settle == timedelta(seconds=30)
    assert load_settings(environ={"COMPANION_DB_TIMEOUT_MS": "120000", "COMPANION_SYNC_SETTLE_S": "360"})


def test_production_needs_a_secret_and_always_requires_staff_mfa():
    with pytest.raises(SettingError, match="COMPANION_SECRET_KEY"):
        load_settings(environ={"COMPANION_ENV": "production"})
    settings = load_settings(environ={"COMPANION_ENV": "production", "COMPANION_SECRET_KEY": "k" * 40,
                                      "COMPANION_AUDIT_KEY": "a" * 40, "COMPANION_SMTP_URL": "smtp://mail:25"})
    assert settings.staff_mfa_required is True


def test_production_needs_its_own_audit_key_and_a_way_to_send_email():
    base = {"COMPANION_ENV": "production", "COMPANION_SECRET_KEY": "k" * 40, "COMPANION_SMTP_URL": "smtp://mail:25"}
    with pytest.raises(SettingError, match="COMPANION_AUDIT_KEY"):
        load_settings(environ=base)
    with pytest.raises(SettingError, match="COMPANION_AUDIT_KEY"):
        load_settings(environ={**base, "COMPANION_AUDIT_KEY": "k" * 40})  # not the signing key
    with pytest.raises(SettingError, match="COMPANION_SMTP_URL"):
        load_settings(environ={**base, "COMPANION_AUDIT_KEY": "a" * 40, "COMPANION_SMTP_URL": ""})
    development = load_settings(environ={"COMPANION_SECRET_KEY": "k" * 40})
    assert len(development.audit_key) >= 32 and development.audit_key != development.secret_key


@pytest.mark.parametrize("url", ["smtp://alerts:s3cret@mail.example.org:25", "smtp://alerts@mail.example.org"])
def test_an_smtp_url_with_credentials_is_refused_unless_it_uses_tls(url):
    # It was accepted, and the mailer logged in over plain text.
    for given in ({"environ": {"COMPANION_SMTP_URL": url}}, {"overrides": {"smtp_url": url}, "environ": {}}):
        with pytest.raises(SettingError) as refused:
            load_settings(**given)
        assert "COMPANION_SMTP_URL" in str(refused.value) and "plain text" in str(refused.value)
        assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize("url", ["smtp+starttls://alerts:s3cret@mail.example.org:587",
                                 "smtps://alerts:s3cret@mail.example.org", "smtp://relay.internal:25"])
def test_an_smtp_url_over_tls_or_without_credentials_is_accepted(url):
    assert load_settings(environ={"COMPANION_SMTP_URL": url}).smtp_url == url


def test_an_override_that_names_no_setting_is_refused():
    with pytest.raises(SettingError, match="unknown setting"):
        load_settings({"db_timeout": 5}, environ={})


def test_every_variable_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert [s.variable for s in SETTINGS if f"`{s.variable}`" not in readme] == []


def _run(args: list[str], variable: str, value: str) -> subprocess.CompletedProcess:
    env = {**os.environ, variable: value, "MONGODB_URI": "mongodb://127.0.0.1:9/"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["-m", "companion.jobs.worker"], ["-m", "companion.cli", "init-db"],
                                     ["-m", "gunicorn", "--bind", "127.0.0.1:0", "companion.wsgi:app"]],
                         ids=["worker", "cli", "web"])
def test_each_process_stops_with_one_line_and_status_2_on_a_bad_setting(command):
    result = _run(command, "COMPANION_ENV", "prod")
    ours = [line for line in result.stderr.splitlines() if not line.startswith(("[", "{"))]  # gunicorn's own (JSON) lines
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(ours) == 1 and "COMPANION_ENV" in ours[0] and "Traceback" not in result.stderr


def _google_services_json(path: Path) -> Path:
    """The phone app's Firebase configuration, the file app teams most often hand over for the service account."""
    path.write_text(json.dumps({"project_info": {"project_id": "companion-app", "project_number": "1"},
                                "client": [], "configuration_version": "1"}))
    return path


def _service_account_json(path: Path, **changes) -> Path:
    document = {"type": "service_account", "project_id": "companion-app", "private_key_id": "k1",
                "private_key": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
                "client_email": "push@companion-app.iam.gserviceaccount.com",
                "token_uri": "https://oauth2.googleapis.com/token", **changes}
    path.write_text(json.dumps({k: v for k, v in document.items() if v is not None}))
    return path


@pytest.mark.parametrize(("file", "said"), [
    (_google_services_json, "is an app's google-services.json"),
    (lambda p: _service_account_json(p, type="authorized_user"), "'authorized_user', not 'service_account'"),
    (lambda p: _service_account_json(p, type=None), "its \"type\" is None"),
    (lambda p: _service_account_json(p, private_key=None, client_email=""), "without private_key, client_email"),
    (lambda p: _service_account_json(p, private_key="not a key"), "private_key is not a PEM key"),
    (lambda p: (p.write_text("[1, 2]"), p)[1], "is JSON but not a Firebase service-account key"),
])
def test_an_fcm_file_that_is_json_but_not_a_service_account_key_is_refused_saying_what_it_is(tmp_path, file, said):
    path = file(tmp_path / "fcm.json")
    with pytest.raises(SettingError) as refused:
        load_settings(environ={"FCM_SERVICE_ACCOUNT": str(path)})
    message = str(refused.value)
    assert message.startswith(f"FCM_SERVICE_ACCOUNT={str(path)!r} ") and said in message and "\n" not in message
    assert "Service accounts > Generate new private key" in message  # where the right file comes from


def test_a_service_account_key_as_firebase_issues_it_is_accepted(service_account):
    assert load_settings(environ={"FCM_SERVICE_ACCOUNT": str(service_account)}).fcm_service_account == str(
        service_account)


@pytest.mark.parametrize("module", ["companion.jobs.worker", "companion.jobs.sender"])
@pytest.mark.parametrize("file", [_google_services_json,
                                  # passes the settings' check; firebase-admin cannot load the key itself
                                  lambda p: _service_account_json(p)], ids=["google-services", "bad-key"])
def test_the_worker_and_the_sender_stop_with_one_line_and_status_2_on_a_file_that_is_no_service_account(
        tmp_path, module, file):
    """They crashed with firebase-admin's 17-line traceback and status 1, and their supervisor restarted them
    for ever; the README promises one line and status 2 for a setting that cannot be used."""
    wrong = file(tmp_path / "fcm.json")
    env = {**os.environ, "FCM_SERVICE_ACCOUNT": str(wrong), "MONGODB_URI": "mongodb://127.0.0.1:9/",
           "COMPANION_WORKER_METRICS_PORT": "0"}
    result = subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    ours = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # (JSON log lines aside)
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    assert result.returncode == 2 and len(ours) == 1 and "FCM_SERVICE_ACCOUNT" in ours[0], result.stderr[-600:]


MISSPELT = ["COMPANION_TRUSTED_PROXY", "COMPANION_STAFF_SESSION_MAX_HOURS", "COMPANION_AUDIT_RETENTION",
            "MONGODB_DB_NAME", "MONGODB_URL", "FCM_SERVICE_ACOUNT"]


@pytest.mark.parametrize("variable", MISSPELT)
def test_a_misspelt_companion_variable_is_refused_not_ignored(variable):
    """ops review: only listed names are read; a typo silently keeps the default (behind a load balancer,
    COMPANION_TRUSTED_PROXY=1 leaves every client with the balancer's address: one login throttle for all)."""
    with pytest.raises(SettingError):
        load_settings(environ={variable: "1"})


def test_the_variables_kubernetes_sets_for_a_service_named_companion_are_not_taken_for_misspellings():
    """Service links: every pod of a namespace with a Service "companion" gets these (enableServiceLinks)."""
    load_settings(environ={"COMPANION_SERVICE_HOST": "10.0.0.12", "COMPANION_SERVICE_PORT": "5000",
                           "COMPANION_SERVICE_PORT_HTTP": "5000", "COMPANION_PORT": "tcp://10.0.0.12:5000",
                           "COMPANION_PORT_5000_TCP": "tcp://10.0.0.12:5000", "COMPANION_PORT_5000_TCP_PROTO": "tcp",
                           "COMPANION_PORT_5000_TCP_PORT": "5000", "COMPANION_PORT_5000_TCP_ADDR": "10.0.0.12"})
    with pytest.raises(SettingError):
        load_settings(environ={"COMPANION_PORTS": "5000"})  # no service link: a misspelling still


def test_the_service_links_of_a_service_named_mongodb_are_not_taken_for_misspellings():
    load_settings(environ={"MONGODB_SERVICE_HOST": "10.0.0.13", "MONGODB_PORT": "tcp://10.0.0.13:27017",
                           "MONGODB_PORT_27017_TCP_ADDR": "10.0.0.13", "MONGODB_SERVICE_PORT_MONGO": "27017"})


def test_the_service_links_of_another_service_whose_name_begins_with_mongodb_are_not_misspellings():
    """A chart's exporter beside the database ("mongodb-metrics") is a Service of the namespace too: refusing its
    links stopped every process at start (an outage on upgrade)."""
    load_settings(environ={"MONGODB_METRICS_SERVICE_HOST": "10.0.0.14", "MONGODB_METRICS_SERVICE_PORT": "9216",
                           "MONGODB_METRICS_PORT": "tcp://10.0.0.14:9216",
                           "MONGODB_METRICS_PORT_9216_TCP": "tcp://10.0.0.14:9216",
                           "MONGODB_METRICS_PORT_9216_TCP_PROTO": "tcp", "MONGODB_METRICS_PORT_9216_TCP_PORT": "9216",
                           "MONGODB_METRICS_PORT_9216_TCP_ADDR": "10.0.0.14"})


def test_a_services_link_that_has_a_settings_name_is_ignored_with_a_warning_not_refused(caplog):
    """A Service "companion-worker-metrics" makes Kubernetes set COMPANION_WORKER_METRICS_PORT, a setting's name, to
    its link: read as the setting, every process of the namespace stopped at start with status 2."""
    links = {"COMPANION_WORKER_METRICS_SERVICE_HOST": "10.0.0.7", "COMPANION_WORKER_METRICS_SERVICE_PORT": "9101",
             "COMPANION_WORKER_METRICS_PORT": "tcp://10.0.0.7:9101",
             "COMPANION_WORKER_METRICS_PORT_9101_TCP": "tcp://10.0.0.7:9101",
             "COMPANION_WORKER_METRICS_PORT_9101_TCP_PROTO": "tcp",
             "COMPANION_WORKER_METRICS_PORT_9101_TCP_PORT": "9101",
             "COMPANION_WORKER_METRICS_PORT_9101_TCP_ADDR": "10.0.0.7"}
    with caplog.at_level("WARNING", logger="companion.settings"):
        settings = load_settings(environ=links)
    assert settings.worker_metrics_port == Settings().worker_metrics_port
    [warned] = [r.getMessage() for r in caplog.records if r.name == "companion.settings"]
    assert warned.startswith("COMPANION_WORKER_METRICS_PORT=tcp://10.0.0.7:9101 is ignored: it is the service link "
                             "Kubernetes sets for the Service companion-worker-metrics")
    # An IPv6 cluster's link, bracketed
    v6 = {"COMPANION_WORKER_METRICS_SERVICE_HOST": "fd00::7", "COMPANION_WORKER_METRICS_PORT": "tcp://[fd00::7]:9101"}
    assert load_settings(environ=v6).worker_metrics_port == Settings().worker_metrics_port
    # The operator's own value in the pod's env replaces the link, and is read
    assert load_settings(environ={**links, "COMPANION_WORKER_METRICS_PORT": "9102"}).worker_metrics_port == 9102


def test_a_link_shaped_value_without_its_services_host_is_still_refused():
    """Only the Service's own link is ignored: the same text without that Service (or another address) is a value
    given by someone, and malformed."""
    for environ in ({"COMPANION_WORKER_METRICS_PORT": "tcp://10.0.0.7:9101"},
                    {"COMPANION_WORKER_METRICS_PORT": "tcp://10.0.0.7:9101",
                     "COMPANION_WORKER_METRICS_SERVICE_HOST": "10.0.0.8"}):
        with pytest.raises(SettingError, match="COMPANION_WORKER_METRICS_PORT='tcp://10.0.0.7:9101' is not valid"):
            load_settings(environ=environ)


def test_a_misspelling_shaped_like_a_service_link_is_refused_without_the_services_host():
    """Kubernetes sets <SERVICE>_SERVICE_HOST with every link of a Service: without it, a name ending in _PORT is
    a misspelling (COMPANION_WORKER_METRIC_PORT for COMPANION_WORKER_METRICS_PORT)."""
    with pytest.raises(SettingError, match="COMPANION_WORKER_METRIC_PORT"):
        load_settings(environ={"COMPANION_WORKER_METRIC_PORT": "9100"})


def test_a_misspelt_database_variable_names_the_database_setting_meant():
    """MONGODB_DB_NAME set for MONGODB_DB would have left the default database in use: patients' data written
    to another database than the operator's, and nothing said."""
    with pytest.raises(SettingError, match=r"^MONGODB_DB_NAME \(did you mean MONGODB_DB\?\) is set but nothing"):
        load_settings(environ={"MONGODB_DB_NAME": "companion_prod"})


def test_a_misspelt_variable_stops_a_command_with_one_line_naming_the_setting_meant(monkeypatch, capsys):
    monkeypatch.setenv("COMPANION_TRUSTED_PROXY", "1")
    assert cli.main(["migrate"]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith("companion: COMPANION_TRUSTED_PROXY (did you mean "
                                                 "COMPANION_TRUSTED_PROXIES?) is set but nothing reads it")


def test_an_ipv6_bind_is_written_in_brackets_as_gunicorn_takes_it_with_the_port():
    """`[::]` was refused and `::` gave gunicorn `--bind :::5000`, which it refuses: no IPv6 bind was possible."""
    from gunicorn.util import parse_address

    assert parse_address("[::]:5000") == ("::", 5000)  # what the Procfile's ${COMPANION_BIND}:${PORT} makes
    for bind, host in (("[::]", "::"), ("[::1]", "::1"), ("[fd00::7]", "fd00::7"), ("0.0.0.0", "0.0.0.0"),  # noqa: S104
                       ("api.internal", "api.internal")):
        settings = load_settings(environ={"COMPANION_BIND": bind})
        assert (settings.bind, settings.listen_host) == (bind, host)
    assert load_settings(environ={}).listen_host is None


@pytest.mark.parametrize(("bind", "said"), [
    ("::", r"COMPANION_BIND='::' is an IPv6 address without brackets: write \[::\]"),
    ("::1", r"write \[::1\]"),
    ("[127.0.0.1]", "only an IPv6 address goes in brackets"),
    ("0.0.0.0:5000", "no port"),
])
def test_a_bare_ipv6_bind_is_refused_with_the_brackets_to_write(bind, said):
    with pytest.raises(SettingError, match=said):
        load_settings(environ={"COMPANION_BIND": bind})


def test_a_variable_read_elsewhere_or_set_empty_is_not_refused():
    settings = load_settings(environ={"COMPANION_BIND": "127.0.0.1", "COMPANION_GATEWAY_STATE_DIR": "/tmp/gw",
                                      "COMPANION_TRUSTED_PROXY": ""})  # empty: as unset, for a setting too
    assert settings.trusted_proxies == 0


# Where the project reads or sets environment variables: the processes, the gateway, the scripts behind `make
# run`, `make test` and the benchmarks, the deployment files, the tests, and the documents that name them.
_PLACES = ["companion", "device_gateway", "scripts", "bench", "tests", "docs", ".ci", "Makefile", "Procfile",
           "Dockerfile", "compose.yaml", "gunicorn.conf.py", "pyproject.toml", "README.md"]


def _companion_names() -> dict[str, set[str]]:
    """Every COMPANION_ name written in the project, with the files that write it (the settings' own module aside)."""
    found: dict[str, set[str]] = {}
    for place in _PLACES:
        root = ROOT / place
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path == ROOT / "companion" / "settings.py":
                continue
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            for name in re.findall(r"\b(?:COMPANION|MONGODB|FCM)_[A-Z0-9_]*[A-Z0-9]", text):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def path_is_not_this_test(paths: set[str]) -> bool:
    """A name only this file spells (a misspelling it shows refused) is not one the project sets."""
    return paths != {"tests/api/test_settings.py"}


# Names in the family that are no environment variables: constants of the FCM emulator and of the sender.
NOT_VARIABLES = {"FCM_ERROR_TYPE"}


def test_every_companion_variable_the_project_names_is_a_setting_or_listed_as_read_elsewhere():
    """Else `make run`, the Procfile, compose, the gateway or the tests would set a variable the processes refuse
    (COMPANION_*, MONGODB_* and FCM_* alike)."""
    known = {s.variable for s in SETTINGS} | set(READ_ELSEWHERE) | NOT_VARIABLES
    strays = {name: sorted(paths) for name, paths in _companion_names().items()
              if name not in known and name not in MISSPELT and not SERVICE_LINKS.fullmatch(name)
              and path_is_not_this_test(paths)}
    assert strays == {}


def test_every_variable_listed_as_read_elsewhere_is_still_read_there():
    names = _companion_names()
    assert [name for name in READ_ELSEWHERE
            if not any(Path(p).suffix in ("", ".py", ".sh", ".conf", ".yaml") for p in names.get(name, ()))
            or name in {s.variable for s in SETTINGS}] == []
