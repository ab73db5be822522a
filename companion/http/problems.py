"""One error shape for every error: RFC 9457 problem details, produced here and nowhere else.

This is also the one place where the domain's errors (companion.domain.errors) become HTTP: a status
code, a title and, for the ones that tell a client when to come back, a ``Retry-After`` header. An error
that names the stored object the caller should see instead (a stale ``If-Match``, a client id reused for
other content) carries it as the extension member ``current``, with its ``ETag``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from apispec import APISpec, BasePlugin
from flask import Flask, g, jsonify, request
from flask_smorest import Api
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    PyMongoError,
    WriteConcernError,
)
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from companion.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    ResyncRequired,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from companion.http import admission
from companion.http.openapi import RETRY_AFTER, ContractPlugin
from companion.http.schemas import ProblemSchema

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://companion.example/problems/"
PROBLEM_JSON = "application/problem+json"
_SLUGS = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
          405: "method-not-allowed", 409: "conflict", 410: "resync-required", 412: "precondition-failed", 413: "payload-too-large",
          415: "unsupported-media-type", 422: "validation-failed", 428: "precondition-required",
          429: "too-many-requests", 500: "internal-error", 503: "unavailable"}
# One title per status, whoever raised the error (the framework, webargs or a domain rule): a client may
# show or match it, and `type` names the same thing as a URI.
TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
          409: "Conflict", 410: "Resync required", 412: "Precondition failed", 413: "Payload too large",
          415: "Unsupported media type", 422: "Unprocessable content", 428: "Precondition required",
          429: "Too many requests", 500: "Internal error", 503: "Service unavailable"}
# Each kind of domain error as an HTTP status. Subclasses inherit their base's answer.
_DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Forbidden: 403,
    Unauthorized: 401,
    Conflict: 409,
    PreconditionFailed: 412,
    ResyncRequired: 410,
    Invalid: 422,
    TooManyRequests: 429,
    ServiceUnavailable: 503,
}
REALM = "companion"
# WriteConcernError (and its WTimeoutError): the write was applied on the primary but not acknowledged as asked
# (a replica set lagging, a primary stepping down), so it may yet be rolled back; answered 503, the client sends it
# again and the unique keys keep the second attempt from doubling what the first left.
_UNAVAILABLE_ERRORS = (ConnectionFailure, ExecutionTimeout, WriteConcernError)


CONTENDED = ("others were changing the same object at that moment and this change lost each try: nothing was "
             "written; send the same request again after Retry-After seconds")


def conflict_doc(cause: str | None = None, *, contended: bool = False) -> dict:
    """How an operation documents its 409 (``blp.alt_response(409, **conflict_doc(...))``): ``cause`` is a
    conflict with what is stored, which sending the same request again cannot cure (no Retry-After);
    ``contended`` says it may also answer :class:`~companion.domain.errors.Contended`, which only that header
    tells apart. (flask-smorest drops the description of a 409 given as ``response="CONFLICT"``.)"""
    if contended:
        description = CONTENDED if cause is None else (
            f"two causes, told apart by Retry-After. With Retry-After: {CONTENDED}. Without it: {cause}; "
            "do not send the same request again")
    else:
        description = f"{cause}: do not send the same request again"
    doc = {"description": description, "schema": ProblemSchema, "content_type": PROBLEM_JSON}
    if contended:
        doc["headers"] = {"Retry-After": {**RETRY_AFTER, "description": "only when others were changing the same "
                                                                        "object: seconds to wait before retrying"}}
    return doc


def unavailable_doc(cause: str) -> dict:
    """How an operation documents a 503 of its own (``blp.alt_response(503, **unavailable_doc(...))``) beside the
    database's: ``cause``, a state that passes in seconds, with nothing done (companion.http.openapi adds the
    Retry-After header)."""
    return {"description": f"{cause}, or the database (or the audit trail) cannot be reached right now: nothing was "
                           "done; send the same request again after Retry-After seconds",
            "schema": ProblemSchema, "content_type": PROBLEM_JSON}


def status_of(exc: DomainError) -> tuple[int, str, dict[str, str]]:
    """The status code, title and headers that answer a domain error."""
    status = next((_DOMAIN_STATUS[kind] for kind in type(exc).__mro__ if kind in _DOMAIN_STATUS), 400)
    title = title_of(status)
    headers = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if exc.current is not None and exc.version is not None:
        headers["ETag"] = getattr(exc, "etag", None) or f'"{exc.version}"'
    return status, title, headers


class _ProblemResponses(BasePlugin):
    """The error responses flask-smorest registers as components (one per status code and `default`)
    are documented as what the handlers below send: problem details, as application/problem+json."""

    def response_helper(self, response, **kwargs):
        content = response.get("content") or {}
        if "application/json" in content:
            response["content"] = {PROBLEM_JSON: content["application/json"]}
        return response


class ProblemApi(Api):
    """flask-smorest's Api with every documented error response described by ProblemSchema, whose OpenAPI
    document is written on first use.

    flask-smorest describes a blueprint's views (schemas resolved, deep copies made) as it registers them:
    about 0.1 s of every process's start for an API this size, paid by each web worker and each test's app
    whether or not anyone asks for the document. Here a blueprint's routes are registered at once and its
    description is queued; the first read of :attr:`spec` (``/openapi.json``, ``/docs``, the contract
    checks) writes the queued descriptions in the order they were registered, so the document is the one
    flask-smorest would have built (``tests/api/test_contract.py`` compares the two)."""

    ERROR_SCHEMA = ProblemSchema
    DOCUMENT_ON_FIRST_USE = True

    def __init__(self, app: Flask):
        self._undocumented: list[Callable[[APISpec], None]] = []
        self._documenting = threading.Lock()
        self._writer: int | None = None
        super().__init__(app, spec_kwargs={"extra_plugins": [_ProblemResponses(), ContractPlugin()]})

    @property
    def spec(self) -> APISpec:
        """The OpenAPI document, with every description queued so far written into it."""
        if self._undocumented and self._writer != threading.get_ident():
            with self._documenting:  # another thread reading it meanwhile waits for the whole document
                self._writer = threading.get_ident()  # a description reading api.spec gets it as it stands
                try:
                    while self._undocumented:
                        self._undocumented.pop(0)(self._spec)
                finally:
                    self._writer = None
        return self._spec

    @spec.setter
    def spec(self, value: APISpec) -> None:
        self._spec = value

    def document_later(self, describe: Callable[[APISpec], None]) -> None:
        """Run ``describe(spec)`` when the document is first read (after the descriptions queued before it)."""
        if self.DOCUMENT_ON_FIRST_USE:
            self._undocumented.append(describe)
        else:
            describe(self.spec)

    def register_blueprint(self, blp, *, parameters=None, **options):
        """Register ``blp``'s routes now and queue its description (flask-smorest's Api.register_blueprint,
        in two halves)."""
        if not self.DOCUMENT_ON_FIRST_USE:
            return super().register_blueprint(blp, parameters=parameters, **options)
        name = options.get("name", blp.name)
        self._app.extensions["flask-smorest"]["blp_name_to_api"][name] = self
        self._app.register_blueprint(blp, **options)

        def describe(spec: APISpec) -> None:
            blp.register_views_in_doc(self, self._app, spec, name=name, parameters=parameters)
            spec.tag({"name": name, "description": blp.description})

        self._undocumented.append(describe)
        return None


def title_of(status: int) -> str:
    """The one title problem details give ``status``."""
    return TITLES.get(status) or HTTP_STATUS_CODES.get(status, "Error")


def _authenticate_header() -> str:
    """RFC 6750: the scheme and realm, and ``invalid_token`` when the request presented a bearer token."""
    presented = request.headers.get("Authorization", "").lower().startswith("bearer ")
    return f'Bearer realm="{REALM}"' + (', error="invalid_token"' if presented else "")


def problem(status: int, detail: str = "", *, errors: dict | None = None,
            headers: dict | None = None, current: dict | None = None):
    """The problem-details response for ``status`` (the only way any error is answered)."""
    title = title_of(status)
    body = {"type": PROBLEM_BASE + _SLUGS.get(status, "error"), "title": title, "status": status,
            "detail": detail or title}
    if errors:
        body["errors"] = errors
    if current is not None:
        body["current"] = current
    request_id = getattr(g, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    for key, value in (headers or {}).items():
        response.headers[key] = value
    if status == 401 and request:
        response.headers.setdefault("WWW-Authenticate", _authenticate_header())
    return response


def domain_problem(exc: DomainError):
    """The problem-details answer to a domain error."""
    status, title, headers = status_of(exc)
    # The stored object, as the route's own answer schema shows it (companion.http.conditional puts it there).
    current = getattr(exc, "representation", None)
    return problem(status, exc.detail or title, errors=exc.errors, headers=headers, current=current)


def _validation_errors(exc: HTTPException) -> dict | None:
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages")
    if isinstance(messages, dict):
        # webargs nests by location ("json", "query"); keep that, it tells the client where to look.
        return messages
    return None


def _detail(exc: HTTPException) -> str:
    data = getattr(exc, "data", None) or {}
    if data.get("message"):
        return str(data["message"])
    if exc.code == 422:
        return "the request did not pass validation; see errors"
    return exc.description or exc.name


def unavailable(detail: str = "the database is unavailable; try again shortly"):
    """503 with a Retry-After: the database (or the audit trail) cannot be reached right now."""
    return problem(503, detail, headers={"Retry-After": "5"})


def _unacknowledged_batch(exc: PyMongoError) -> bool:
    """A bulk write that failed because its writes were not acknowledged as asked (a write concern error), as a
    single write's WriteConcernError: answered 503."""
    return isinstance(exc, BulkWriteError) and bool(exc.details.get("writeConcernErrors"))


def register(app: Flask) -> None:
    """Install the handlers. Called after flask-smorest's Api, so these win."""

    @app.errorhandler(HTTPException)
    def http_problem(exc: HTTPException):
        status = exc.code or 500
        headers = {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        data = getattr(exc, "data", None) or {}
        headers.update(data.get("headers") or {})
        return problem(status, _detail(exc), errors=_validation_errors(exc), headers=headers)

    app.register_error_handler(DomainError, domain_problem)

    @app.errorhandler(PyMongoError)
    def database_problem(exc: PyMongoError):
        if isinstance(exc, _UNAVAILABLE_ERRORS) or _unacknowledged_batch(exc):
            log.warning("database unavailable: %s", type(exc).__name__)
            if isinstance(exc, ConnectionFailure):  # not a slow query: the database could not be reached
                admission.database_unreachable()
            return unavailable()
        log.error("database error: %s (code %s)", type(exc).__name__, getattr(exc, "code", None))
        return problem(500, "an unexpected database error occurred")

    @app.errorhandler(Exception)
    def unexpected_problem(exc: Exception):
        log.exception("unhandled error in %s", type(exc).__name__)
        return problem(500, "an unexpected error occurred")
