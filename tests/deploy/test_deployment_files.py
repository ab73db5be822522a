"""What an operator deploys from: the lock files (every package pinned with its hashes, in step with
pyproject.toml), the Procfile, the Dockerfile and compose.yaml, and the supervisor of `make run`. No
container engine runs here, so the container files are checked for structure (and with `docker compose
config` where that client exists)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tomllib

import yaml

from tests.support.ferretdb import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _locked(name: str) -> dict[str, str]:
    """Package -> version of a lock file, checking that each entry carries its hashes."""
    text = (ROOT / name).read_text()
    entries = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+?)(?: ;[^\\]*)? \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)",
                         text, re.MULTILINE)
    requirement_lines = [line for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line)]
    assert len(entries) == len(requirement_lines), f"{name}: an entry without hashes"
    return {re.sub(r"[-_.]+", "-", pkg).lower(): version for pkg, version, _ in entries}


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        if version:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_the_runtime_lock_pins_every_dependency_as_pyproject_does():
    locked = _locked("requirements.txt")
    pins = _pins(PYPROJECT["project"]["dependencies"])
    assert {name: locked.get(name) for name in pins} == pins
    assert "pytest" not in locked and "playwright" not in locked


def test_the_development_lock_adds_the_tools_without_changing_a_version():
    runtime, dev = _locked("requirements.txt"), _locked("requirements-dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime
    pins = _pins(PYPROJECT["project"]["optional-dependencies"]["dev"])
    assert {name: dev.get(name) for name in pins} == pins


def test_make_run_installs_the_runtime_lock_and_no_browser():
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "scripts/bootstrap.sh run" in (ROOT / "scripts" / "run-local.sh").read_text()
    assert "run) lock=requirements.txt" in bootstrap and "--require-hashes" in bootstrap
    assert "chromium" not in bootstrap.lower().replace("chromium is installed by scripts/test.sh", "")
    assert "apt-get install -y -qq chromium" in (ROOT / "scripts" / "test.sh").read_text()


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_the_procfile_runs_the_migration_before_release_and_needs_no_installed_scripts():
    procfile = _procfile()
    assert set(procfile) == {"release", "web", "worker", "sender"}
    assert procfile["release"] == "python -m companion.cli migrate"
    assert procfile["worker"] == "python -m companion.jobs.worker"
    assert procfile["sender"] == "python -m companion.jobs.sender"
    assert procfile["web"].startswith("gunicorn ") and "access-logfile" not in procfile["web"]


def test_the_image_installs_the_lock_with_hashes_runs_unprivileged_and_serves_the_procfiles_web():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.txt" in dockerfile and "pip install --require-hashes" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    python = (ROOT / ".python-version").read_text().strip()
    assert re.findall(r"^FROM python:(\S+?)-", dockerfile, re.MULTILINE) == [python, python]
    cmd = re.search(r'^CMD \["sh", "-c", "exec (.+)"\]$', dockerfile, re.MULTILINE).group(1)
    assert cmd == _procfile()["web"].replace('"companion.wsgi:app"', "companion.wsgi:app")
    ignored = (ROOT / ".dockerignore").read_text()
    assert "!requirements.txt" in ignored and "!companion/" in ignored and "!gunicorn.conf.py" in ignored


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_runs_mongodb_then_the_migration_then_web_and_one_worker():
    services = _compose()["services"]
    assert set(services) == {"mongo", "migrate", "web", "worker"}
    assert services["migrate"]["depends_on"] == {"mongo": {"condition": "service_healthy"}}
    for name in ("web", "worker"):
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["migrate"]["command"] == _procfile()["release"].split()
    assert services["worker"]["command"] == _procfile()["worker"].split()
    assert "replicas" not in str(services["worker"].get("deploy", {}))  # one worker; a second would only wait
    assert "--replSet" in services["mongo"]["command"]
    assert "worker-status" in services["worker"]["healthcheck"]["test"]


def test_compose_gives_every_companion_process_the_production_settings():
    services = _compose()["services"]
    for name in ("migrate", "web", "worker"):
        env = services[name]["environment"]
        assert env["COMPANION_ENV"] == "production"
        assert "replicaSet=" in env["MONGODB_URI"]
        assert env["COMPANION_SECRET_KEY"].startswith("${COMPANION_SECRET_KEY:?")  # refuses to start without one


# Values a deployer would give the variables compose.yaml requires (`${NAME:?message}`); a variable compose
# requires and this table lacks fails the test, so a new requirement comes with a value to check it with.
_DEPLOYER_VALUES = {
    "COMPANION_SECRET_KEY": "s" * 48,
    "COMPANION_AUDIT_KEY": "a" * 48,
    "COMPANION_SMTP_URL": "smtp+starttls://companion:password@mail.example.org:587",
}


def _interpolated(value: object) -> tuple[str, set[str]]:
    """A compose environment value as the container sees it, and the variables it requires.

    Resolves `${NAME:?message}` (required: the deployer's value), `${NAME:-default}` and `${NAME}` (unset: the
    default, or empty), as `docker compose` does with only the required variables set."""
    required: set[str] = set()

    def resolve(match: re.Match) -> str:
        name, operator, word = match.group(1), match.group(2) or "", match.group(3) or ""
        if operator in (":?", "?"):
            required.add(name)
            assert name in _DEPLOYER_VALUES, f"compose.yaml requires {name}: give it a value in _DEPLOYER_VALUES"
            return _DEPLOYER_VALUES[name]
        return word if operator in (":-", "-") else ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:\?|\?|:-|-)?([^}]*)\}", resolve, str(value)), required


def test_the_settings_accept_exactly_the_environment_compose_gives_each_companion_process():
    from companion.settings import load_settings

    services = _compose()["services"]
    for name in ("migrate", "web", "worker"):
        environ, required = {}, set()
        for variable, value in services[name]["environment"].items():
            environ[variable], needs = _interpolated(value)
            required |= needs
        settings = load_settings(environ=environ)  # what `migrate`, web and the worker do first
        assert required == set(_DEPLOYER_VALUES), name  # compose refuses to start without each of them
        assert settings.is_production and settings.smtp_url == _DEPLOYER_VALUES["COMPANION_SMTP_URL"], name


def test_the_readme_and_the_compose_header_name_every_variable_compose_requires():
    readme, header = (ROOT / "README.md").read_text(), (ROOT / "compose.yaml").read_text().split("\n\n")[0]
    command = re.search(r"^  `(COMPANION_SECRET_KEY=.*docker compose up -d)`", readme, re.MULTILINE).group(1)
    for variable in _DEPLOYER_VALUES:
        assert f"{variable}=" in command and f"{variable}=" in header, variable


def test_the_supervisor_restarts_a_process_that_exits_and_says_so():
    process = subprocess.Popen([str(ROOT / "scripts" / "supervise.sh"), "probe", "bash", "-c", "echo up; exit 3"],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        lines = [process.stdout.readline().rstrip("\n") for _ in range(4)]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    assert lines == ["probe    | up", "probe    | exited with status 3; restarting in 1 s (the other processes go on)",
                     "probe    | up", "probe    | exited with status 3; restarting in 2 s (the other processes go on)"]
