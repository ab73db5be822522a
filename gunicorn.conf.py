"""gunicorn's settings for the Procfile's `web` process (gunicorn reads ./gunicorn.conf.py by itself).

Before any worker starts, Companion's settings are checked: a malformed or unknown value stops the whole
server with one line naming the variable and what it accepts (exit status 2), instead of every worker
failing to boot with a traceback and the server restarting them forever.
"""

import sys


def on_starting(server):
    from companion.settings import EXIT_BAD_SETTING, SettingError, load_settings

    try:
        load_settings()
    except SettingError as exc:
        print(f"companion web: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTING)
