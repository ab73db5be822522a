"""The WSGI entry point for gunicorn (see Procfile)."""

from companion import create_app

app = create_app()
