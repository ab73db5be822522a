"""One way to page through any list the API may cut: follow ``next``.

Every list answer that stops at a ``limit`` carries ``next``: the path and query of the following page, or
``null`` when the answer is complete. The same link goes in a ``Link: <...>; rel="next"`` header (RFC 8288),
so a client can page with the body or the headers alike. A client never builds a cursor itself: it follows
the link, which repeats the request's own query with the continuation in ``cursor``.

How a route continues is its own business, and the cursor is opaque:

- change feeds continue from ``next_cursor`` (they also keep ``has_more`` for clients written before
  ``next``);
- keyset lists (the access log, a patient's alerts, practice, reminders, notifications and plan versions, a
  person's notifications) continue after the last item they answered, in an order without ties (the reminders' in
  each of its two parts, active and stopped; the plan's versions by their number, :func:`number_cursor`);
- the other lists continue at a position in the same query (:func:`offset_page`): a page is read as the data
  stands when it is asked for, so an item written between two pages may shift the next one by a place.
  Apps that keep a copy use the change feeds, which never skip a change.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime

from flask import Flask, g, request
from marshmallow import fields, validate

from companion.domain.errors import Invalid
from companion.http.schemas import StrictSchema

NEXT_DOC = ("the following page (path and query; follow it as it is), or null when this answer is complete. "
            'The same link is in the `Link: <...>; rel="next"` header.')
CURSOR_DOC = "where to continue: taken from the previous page's `next` link; never built by the client"
LINK_HEADER = {"Link": {"description": 'RFC 8288 `<path?query>; rel="next"` while there is a following page',
                        "schema": {"type": "string"}}}


def next_field() -> fields.String:
    """The ``next`` member of a list answer (always present, null on the last page)."""
    return fields.String(allow_none=True, required=True, metadata={"description": NEXT_DOC})


def cursor_field(max_len: int = 200) -> fields.String:
    return fields.String(load_default=None, validate=validate.Length(max=max_len),
                         metadata={"description": CURSOR_DOC})


class CursorArgs(StrictSchema):
    """The ``cursor`` query parameter of a list paged by position (see :func:`offset_page`)."""

    cursor = cursor_field()


def next_link(**replace: object) -> str:
    """This request's path and query with ``replace`` applied (None removes a parameter), noted for the
    ``Link`` header."""
    from urllib.parse import urlencode

    query = {key: value for key, value in request.args.items(multi=False)}
    for key, value in replace.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = str(value)
    link = request.path + ("?" + urlencode(query) if query else "")
    g.next_link = link
    return link


def encode_cursor(value: dict) -> str:
    """An opaque cursor holding ``value`` (JSON): the client hands it back, never reads it."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict:
    """What a cursor made by :func:`encode_cursor` holds; a cursor this API did not make is a 422."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise not_ours() from exc
    if not isinstance(value, dict):
        raise not_ours()
    return value


def encode_position(offset: int) -> str:
    return encode_cursor({"o": offset})


def decode_position(cursor: str | None) -> int:
    """The offset a positional cursor names (0 without one); a cursor this API did not make is a 422."""
    if not cursor:
        return 0
    offset = decode_cursor(cursor).get("o")
    if not isinstance(offset, int) or not 0 <= offset <= 100_000:
        raise not_ours()
    return offset


def keyset_cursor(at: datetime, item_id: str, **more) -> str:
    """A keyset list's cursor: the (instant, id) of the last item a page answered (and ``more``, such as the
    part of a list in two parts)."""
    return encode_cursor({"at": at.isoformat(), "id": item_id, **more})


def keyset_place(cursor: str) -> tuple[datetime, str, dict]:
    """The (instant, id) a :func:`keyset_cursor` names, with what else it holds; one this API did not make is a
    422."""
    value = decode_cursor(cursor)
    try:
        at, item_id = datetime.fromisoformat(value["at"]), value["id"]
    except (KeyError, TypeError, ValueError) as exc:
        raise not_ours() from exc
    if at.tzinfo is None or not isinstance(item_id, str):
        raise not_ours()
    return at, item_id, value


def number_cursor(number: int) -> str:
    """A keyset list's cursor in a list ordered by a number without ties (a plan's versions): the number of the
    last item a page answered."""
    return encode_cursor({"n": number})


def number_place(cursor: str) -> int:
    """The number a :func:`number_cursor` names; one this API did not make is a 422."""
    number = decode_cursor(cursor).get("n")
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise not_ours()
    return number


def not_ours() -> Invalid:
    return Invalid("not a cursor this API made; follow a `next` link",
                   errors={"query": {"cursor": ["not a cursor this API made"]}})


def offset_page(fetch: Callable[[int], list], cursor: str | None, limit: int) -> tuple[list, str | None]:
    """One page of a list read by position: ``fetch(n)`` answers the first ``n`` items of the query. Reads one
    item more than it answers, to know whether there is a following page."""
    offset = decode_position(cursor)
    items = fetch(offset + limit + 1)
    page, more = items[offset:offset + limit], len(items) > offset + limit
    return page, (next_link(cursor=encode_position(offset + limit)) if more else None)


def install(app: Flask) -> None:
    @app.after_request
    def link_header(response):
        link = g.get("next_link")
        if link and response.status_code == 200:
            response.headers["Link"] = f'<{link}>; rel="next"'
        return response


def feed_page(page: dict) -> dict:
    """A change feed's page with its ``next`` link: the same query continued at ``next_cursor`` while
    ``has_more``, else null (the ``next_cursor`` is still the place to sync from next time)."""
    return {**page, "next": next_link(cursor=page["next_cursor"]) if page["has_more"] else None}
