"""What an operator deploys from: the lock files (every package pinned with its hashes, in step with
pyproject.toml), the Procfile, the Dockerfile and compose.yaml, and the supervisor of `make run`. No
container engine runs here, so the container files are checked for structure (and with `docker compose
config` where that client exists)."""

from __future__ import annotations

import os
import re
import secrets
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


def _readme_compose_command() -> str:
    readme = (ROOT / "README.md").read_text()
    return re.search(r"^  `(COMPANION_SECRET_KEY=.*docker compose up -d)`", readme, re.MULTILINE).group(1)


def _readme_compose_variables() -> dict[str, str]:
    """The variables the README's `docker compose up` command sets, as the shell gives them to compose: a
    `$(python3 -c '...token_urlsafe(48)')` as what it prints (each its own), any other value as written."""
    command = _readme_compose_command()
    values = {}
    for name, value in re.findall(r"\b([A-Z][A-Z0-9_]*)=(\$\([^)]*\)\)?|\S+)", command):
        values[name] = secrets.token_urlsafe(48) if value.startswith("$(") else value
    return values


def _companion_services() -> dict[str, dict]:
    """Every compose service that runs the Companion image (all but the database): each loads the settings first."""
    return {name: service for name, service in _compose()["services"].items()
            if service.get("image") == "companion:latest"}


def _interpolated(value: object, supplied: dict[str, str]) -> tuple[str, set[str]]:
    """A compose environment value as the container sees it, and the variables it requires.

    Resolves `${NAME:?message}` (required: the value ``supplied``, else compose refuses to start),
    `${NAME:-default}` and `${NAME}` (the value supplied, else the default or empty), as `docker compose` does."""
    required: set[str] = set()

    def resolve(match: re.Match) -> str:
        name, operator, word = match.group(1), match.group(2) or "", match.group(3) or ""
        if operator in (":?", "?"):
            required.add(name)
            assert supplied.get(name), f"compose.yaml requires {name}, which the README's command does not set"
            return supplied[name]
        return supplied.get(name) or (word if operator in (":-", "-") else "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:\?|\?|:-|-)?([^}]*)\}", resolve, str(value)), required


def test_every_companion_service_of_compose_passes_the_settings_check_as_the_readme_starts_it():
    """compose.yaml once set COMPANION_ENV=production without the audit key and the SMTP server production
    requires: `docker compose up` as the README gave it started nothing (migrate exited 2, web and worker waited
    on it). Each service running the image, with exactly what compose and the README's command supply."""
    from companion.settings import load_settings

    supplied = _readme_compose_variables()
    services = _companion_services()
    assert {"migrate", "web", "worker"} <= set(services)
    for name, service in services.items():
        environ, required = {}, set()
        for variable, value in service["environment"].items():
            environ[variable], needs = _interpolated(value, supplied)
            required |= needs
        settings = load_settings(environ=environ)  # what `migrate`, web and the worker do first
        assert required == set(supplied), name  # the README sets what compose requires, and nothing besides
        assert settings.is_production and settings.smtp_url == supplied["COMPANION_SMTP_URL"], name


def test_the_compose_header_names_every_variable_compose_requires():
    header = (ROOT / "compose.yaml").read_text().split("\n\n")[0]
    for variable in _readme_compose_variables():
        assert f"{variable}=" in header, variable


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


def test_the_readmes_commands_after_make_run_name_the_programs_where_make_run_installs_them():
    """`make run` installs into .venv without touching the shell's PATH: a bare `companion worker-status` after
    it was "command not found"."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"^```sh\ncurl -s localhost:5000/readyz\n(.*?)^```", readme, re.MULTILINE | re.DOTALL).group(1)
    programs = [line.split()[0] for line in block.splitlines() if re.match(r"^\S*(companion|device-gateway) ", line)]
    assert programs and set(programs) == {".venv/bin/companion", ".venv/bin/device-gateway"}
    assert set(PYPROJECT["project"]["scripts"]) == {"companion", "device-gateway"}  # what bootstrap.sh installs
