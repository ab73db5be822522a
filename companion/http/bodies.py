"""JSON bodies are checked for shape before anything parses them: nesting depth and the size of numbers.

Python's JSON parser recurses once per nesting level (about a thousand levels raise RecursionError) and turns
an integer of more than 4,300 digits into a ValueError that is not a decoding error; neither is a client's
mistake the parsers in front of the views (webargs, Flask) turn into a 400. This guard runs before them,
on every route, signed in or not: a body nested deeper than :data:`MAX_DEPTH` or holding a number longer
than :data:`MAX_NUMBER_CHARS` is answered 400 with a problem, and nothing else sees it. No schema of the
API nests deeper than a few levels or takes a number of more than a few digits.

A string holding half of a UTF-16 surrogate pair (``"\\ud83d"``: an app that cut a note in the middle of an
emoji; JavaScript's JSON.stringify writes it so) is text no database can store: it is answered 422 naming the
field, before any write (a 500 would have the app retry it for ever).

A route that declares a JSON body (``@blp.arguments(Schema)``, required unless it says otherwise) refuses a
request without one (422), after the caller's credentials are checked: an empty PATCH is not a PATCH of
nothing (send ``{}`` for that); and a body sent as another media type (a JSON text as ``text/plain``) is a 415,
not a 422 listing every field as missing.

Unknown fields are refused in the query string too: a route's query schema raises on a parameter it does not
name, and an API route that declares no query parameters at all refuses any (422, each named), instead of
ignoring a misspelt ``?form=`` and answering as if it had not been sent. The probes (``@ignores_query``:
``/healthz``, ``/readyz``) are the exception: a load balancer may add a cache-buster it cannot be told to drop,
and a 422 to it would mark a healthy instance down.
"""

from __future__ import annotations

import re

from flask import Flask, request
from flask_smorest.utils import deepupdate
from werkzeug.exceptions import BadRequest, UnprocessableEntity, UnsupportedMediaType

from companion.http.auditing import handler_of
from companion.http.openapi import QUERY_IGNORED

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 40
# A JSON string (its escapes included), or an unterminated one running to the end of the text.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)  # runs of plain bytes at once
_LONG_NUMBER = re.compile(rb"[0-9+\-.eE]{%d}" % (MAX_NUMBER_CHARS + 1))
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # only a body with one is parsed and walked
_IGNORES_QUERY = "_ignores_query"


def ignores_query(view):
    """A probe's operation: its answer depends on no query parameter, and any query string is ignored rather
    than refused (a load balancer's health check may carry a cache-buster it cannot be told to drop)."""
    setattr(view, _IGNORES_QUERY, True)
    view._apidoc = deepupdate(getattr(view, "_apidoc", {}), {"manual_doc": {QUERY_IGNORED: True}})
    return view


def shape_problem(body: bytes) -> str | None:
    """What is wrong with the shape of a JSON text (too deep, too long a number), or None.

    No recursion and no parsing, linear in the size (which the 1 MiB body limit bounds): the strings are
    blanked out by one regular expression, then the number characters outside them are searched for a run too
    long, and the brackets left are counted. The expression takes each run of plain characters in one step: a batch
    of 500 session records (260 kB) takes about 3 ms, against 9 ms with one alternation per character and ten
    times that with a Python loop over the bytes."""
    bare = _STRING.sub(b'""', body)
    if _LONG_NUMBER.search(bare):
        return f"a number longer than {MAX_NUMBER_CHARS} characters"
    depth = 0
    for bracket in bare.translate(None, _NOT_BRACKET):
        depth += _STEP[bracket]
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep"
    return None


def lone_surrogate_at(value: object) -> list | None:
    """The path (keys and indexes) to the first string, or key, holding a lone UTF-16 surrogate, or None."""
    if isinstance(value, str):
        return None if not _has_lone_surrogate(value) else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and _has_lone_surrogate(key):
            return [key]
        found = lone_surrogate_at(item)
        if found is not None:
            return [key, *found]
    return None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _nested(path: list, message: str) -> dict:
    errors: object = [message]
    for key in reversed(path or ["_schema"]):
        errors = {key: errors}
    return errors  # type: ignore[return-value]


def install(app: Flask) -> None:
    @app.before_request
    def check_json_shape():
        if not request.is_json or not request.content_length and not request.headers.get("Transfer-Encoding"):
            return None
        body = request.get_data(cache=True)
        problem = shape_problem(body)
        if problem:
            raise BadRequest(f"the JSON body is {problem}")
        if _SURROGATE_ESCAPE.search(body):
            path = lone_surrogate_at(request.get_json(silent=True))
            if path is not None:
                message = "holds half of a character (a lone UTF-16 surrogate): send the whole character"
                error = UnprocessableEntity(f"a text {message}")
                error.data = {"messages": {"json": _nested(path, message)}}
                raise error
        return None

    @app.before_request
    def require_declared_body():
        if request.method not in BODY_METHODS:
            return None
        if request.get_data(cache=True):
            if not request.is_json and _declares_body(handler_of(app, request.endpoint, request.method)):
                # A JSON text sent as text/plain (or a form) would otherwise be read as no body at all, and
                # answered with every required field missing.
                raise UnsupportedMediaType("this operation takes a JSON body: send Content-Type: application/json")
            return None
        if _declares_required_body(handler_of(app, request.endpoint, request.method)):
            error = UnprocessableEntity("this operation needs a JSON body (send {} to change nothing)")
            error.data = {"messages": {"json": {"_schema": ["a JSON body is required"]}}}
            raise error
        return None

    @app.before_request
    def refuse_undeclared_query():
        if not request.args or request.method == "OPTIONS":
            return None
        handler = handler_of(app, request.endpoint, request.method)
        if getattr(handler, "_apidoc", None) is None or getattr(handler, _IGNORES_QUERY, False):
            return None  # not an API operation (the pages, the docs), or a probe
        if _declares_query(handler):
            return None  # its query schema judges the parameters
        error = UnprocessableEntity("this operation takes no query parameters")
        error.data = {"message": "this operation takes no query parameters",
                      "messages": {"query": {name: ["Unknown field."] for name in request.args}}}
        raise error


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _parameters(handler) -> list[dict]:
    return (getattr(handler, "_apidoc", None) or {}).get("arguments", {}).get("parameters", [])


def _declares_query(handler) -> bool:
    return any(p.get("in") == "query" for p in _parameters(handler))


def _declares_body(handler) -> bool:
    return any(p.get("in") == "json" for p in _parameters(handler))


def _declares_required_body(handler) -> bool:
    return any(p.get("in") == "json" and p.get("required") for p in _parameters(handler))
