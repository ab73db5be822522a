"""The `companion` command as an operator meets it: it finds `make run`'s database by default, says in one
line (no traceback) what stopped it, with an exit status of its own, and takes its options anywhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from companion import cli
from companion.settings import load_settings
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


def test_options_go_before_or_after_the_command(mongo_uri, db_name, monkeypatch, capsys):
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    assert cli.main(["migrate", "-v"]) == 0
    assert cli.main(["-v", "migrate"]) == 0
    assert "indexes as declared" in capsys.readouterr().out


def test_an_unexpected_error_is_one_line_unless_verbose(monkeypatch, capsys):
    def broken(args):
        """A command with a bug."""
        raise ValueError("something odd\nsecond line")

    monkeypatch.setattr(cli, "migrate", broken)
    assert cli.main(["migrate"]) == cli.EXIT_FAILED
    assert capsys.readouterr().err == ("companion migrate: unexpected error: ValueError: something odd "
                                       "(-v shows the traceback)\n")
