"""gunicorn's settings for the Procfile's `web` process (gunicorn reads ./gunicorn.conf.py by itself).

Before any worker starts, Companion's settings are checked: a malformed or unknown value stops the whole
server with one line naming the variable and what it accepts (exit status 2), instead of every worker
failing to boot with a traceback and the server restarting them forever.

The access log names the path without its query string and leaves out the Referer: a query can carry what
a clinician typed (the panel's name search, ``?q=``), and a Referer the query of the page before. Each line
carries the request id that the answer's ``X-Request-ID`` and the audit trail carry too.
"""

import sys

access_log_format = '%(h)s - %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s" rid=%({x-request-id}o)s'


def on_starting(server):
    from companion.settings import EXIT_BAD_SETTING, SettingError, load_settings

    try:
        load_settings()
    except SettingError as exc:
        print(f"companion web: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTING)
