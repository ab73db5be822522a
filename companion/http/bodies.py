"""JSON bodies are checked for shape before anything parses them: nesting depth and the size of numbers.

Python's JSON parser recurses once per nesting level (about a thousand levels raise RecursionError) and turns
an integer of more than 4,300 digits into a ValueError that is not a decoding error; neither is a client's
mistake the parsers in front of the views (webargs, Flask) turn into a 400. This guard runs before them,
on every route, signed in or not: a body nested deeper than :data:`MAX_DEPTH` or holding a number longer
than :data:`MAX_NUMBER_CHARS` is answered 400 with a problem, and nothing else sees it. No schema of the
API nests deeper than a few levels or takes a number of more than a few digits.

A route that declares a JSON body (``@blp.arguments(Schema)``, required unless it says otherwise) refuses a
request without one (422), after the caller's credentials are checked: an empty PATCH is not a PATCH of
nothing (send ``{}`` for that).
"""

from __future__ import annotations

from flask import Flask, request
from werkzeug.exceptions import BadRequest, UnprocessableEntity

from companion.http.auditing import handler_of

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 40
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")
_NUMBER = frozenset(b"0123456789+-.eE")


def shape_problem(body: bytes) -> str | None:
    """What is wrong with the shape of a JSON text (too deep, too long a number), or None.

    One pass over the bytes, outside strings: no recursion, no parsing, linear in the size (which the
    1 MiB body limit bounds)."""
    depth = 0
    in_string = escaped = False
    run = 0  # length of the current run of number characters
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
            continue
        if byte in _NUMBER:
            run += 1
            if run > MAX_NUMBER_CHARS:
                return f"a number longer than {MAX_NUMBER_CHARS} characters"
            continue
        run = 0
        if byte == 0x22:
            in_string = True
        elif byte in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep"
        elif byte in _CLOSE:
            depth -= 1
    return None


def install(app: Flask) -> None:
    @app.before_request
    def check_json_shape():
        if not request.is_json or not request.content_length and not request.headers.get("Transfer-Encoding"):
            return None
        problem = shape_problem(request.get_data(cache=True))
        if problem:
            raise BadRequest(f"the JSON body is {problem}")
        return None

    @app.before_request
    def require_declared_body():
        if request.method not in BODY_METHODS or request.get_data(cache=True):
            return None
        if _declares_required_body(handler_of(app, request.endpoint, request.method)):
            error = UnprocessableEntity("this operation needs a JSON body (send {} to change nothing)")
            error.data = {"messages": {"json": {"_schema": ["a JSON body is required"]}}}
            raise error
        return None


BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _declares_required_body(handler) -> bool:
    parameters = (getattr(handler, "_apidoc", None) or {}).get("arguments", {}).get("parameters", [])
    return any(p.get("in") == "json" and p.get("required") for p in parameters)
