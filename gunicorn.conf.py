"""gunicorn's settings for the Procfile's `web` process (gunicorn reads ./gunicorn.conf.py by itself).

Before any worker starts, Companion's settings are checked: a malformed or unknown value stops the whole
server with one line naming the variable and what it accepts (exit status 2), instead of every worker
failing to boot with a traceback and the server restarting them forever.

Metrics: prometheus-client's multiprocess mode needs ``PROMETHEUS_MULTIPROC_DIR`` in the environment
before any worker imports it, and an empty directory at each start. When the operator names none, a
fresh temporary directory is used; a named one is emptied here. A worker that exits has its live gauges
dropped (``child_exit``), so ``/metrics`` on any worker answers for the living ones.

Admission: the gateway upload budget (COMPANION_GATEWAY_UPLOAD_CONCURRENCY) is one for the whole server,
every worker together: the workers share a directory of lock files (``COMPANION_ADMISSION_DIR``, see
companion.http.admission), the one named or a fresh one made here at each start and removed at exit.

Logs: gunicorn's own lines are JSON like the app's (companion.logs); the app logs one line per request
itself, with its request id and the route's template, never the query string (a query can carry what a
clinician typed, such as the panel's name search), so gunicorn's access log is off (the Procfile names none).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

_multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
_own_multiproc_dir = not _multiproc_dir
if _multiproc_dir:
    Path(_multiproc_dir).mkdir(parents=True, exist_ok=True)
    for stale in Path(_multiproc_dir).glob("*.db"):
        stale.unlink()
else:
    _multiproc_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="companion-metrics-")

# A lock is held only while its holder lives, so a named directory needs no emptying; unnamed, a fresh one.
_own_admission_dir = not os.environ.get("COMPANION_ADMISSION_DIR")
if _own_admission_dir:
    os.environ["COMPANION_ADMISSION_DIR"] = tempfile.mkdtemp(prefix="companion-admission-")
_admission_dir = os.environ["COMPANION_ADMISSION_DIR"]  # a named one is made by the workers if missing

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "companion.logs.CompanionJsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        # Off: the app logs one line per request itself, with its ids (companion.http.correlation).
        "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
    },
}


def on_starting(server):
    from companion.settings import EXIT_BAD_SETTING, SettingError, load_settings

    try:
        load_settings()
    except SettingError as exc:
        print(f"companion web: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTING)


def child_exit(server, worker):
    from companion.metrics import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server):
    if _own_admission_dir:
        shutil.rmtree(_admission_dir, ignore_errors=True)
    if _own_multiproc_dir:
        shutil.rmtree(_multiproc_dir, ignore_errors=True)
