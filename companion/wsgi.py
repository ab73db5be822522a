"""The WSGI entry point for gunicorn (see Procfile)."""

import sys

from companion import create_app
from companion.settings import SettingError

try:
    app = create_app()
except SettingError as exc:
    print(f"companion web: {exc}", file=sys.stderr)
    # gunicorn treats a worker that exits with 3 at boot as fatal and stops, instead of restarting it forever.
    sys.exit(3)
