"""Every answer carries the server's clock, ``X-Server-Time`` (ISO 8601, UTC, milliseconds), so that a home
gateway measures its own clock against the server's on every call it makes (device_gateway/clock.py) and
never sets a TENS unit's clock from a clock the server has not vouched for."""

from __future__ import annotations

from datetime import UTC

from flask import Flask, Response

from companion.http import services

HEADER = "X-Server-Time"


def install(app: Flask) -> None:
    """Stamp every response with the server's time."""

    @app.after_request
    def stamp(response: Response) -> Response:
        at = services().clock().astimezone(UTC)
        response.headers[HEADER] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return response
