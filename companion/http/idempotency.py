"""Idempotency-Key for POSTs that create things (draft-ietf-httpapi-idempotency-key-header).

Same key + same body replays the stored answer without doing the work again; same key + a different
body is 422; a retry while the first request is still running is 409 with a Retry-After. After a 5xx the key
stays bound to its body (the request may have written part of its work): the same body runs again and finishes
it, another body is 422; after a refusal (4xx, nothing written) the key is free for a corrected body, unless an
attempt under it was interrupted or died before (companion.store.idempotency: bound). A request holds its key under a lease (``COMPANION_IDEMPOTENCY_LEASE_S``, 60 s by default): if the process
serving it died, a retry after the lease takes the key over and does the work, which every use case
behind an idempotent route completes without doubling anything. Keys are per caller and kept 24 hours; a
key used after that is claimed afresh, as a new request (``request_key`` then names another claim).

A stored answer carries what the first request was allowed to see, so it is replayed only to a caller still
allowed to make the request: every idempotent route names its check of the caller (``access``: the caller's
standing with the patient in the URL, say), which runs before the key is looked at, for a first request and a
replay alike; a caller it refuses (a caregiver whose write permission was taken away) gets the refusal a first
request gets, audited as one, and nothing stored.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable

from flask import Response, g, request
from flask_smorest.utils import deepupdate
from werkzeug.exceptions import HTTPException

from companion.domain.errors import DomainError, Invalid
from companion.http import services
from companion.http.problems import status_of
from companion.http.security import current_actor
from companion.services.idempotency import HeldKey

HEADER = "Idempotency-Key"
REPLAYED_HEADERS = ("Location", "ETag")
_VALID = re.compile(r"^[A-Za-z0-9_.:-]{8,100}$")
HEADER_DOC = {"in": "header", "name": HEADER, "required": False,
              "description": "Makes a retry safe: a key of your choice (8-100 letters, digits or _.:-), new for each "
                             "operation and the same for its retries, kept 24 hours per caller (after that the same key "
                             "starts a new request, which creates a new object). The same key with the "
                             "same body again: the first answer is replayed (status, body, Location and ETag, header "
                             "`Idempotent-Replayed: true`) and nothing is done twice, to a caller still allowed to make "
                             "the request (one who no longer is gets the refusal a first request would). The same "
                             "key with another body: 422. While the first request is still running: 409 with "
                             "Retry-After; if it died, a retry after the lease (60 s by default) does the work. "
                             "Answers of 5xx are not kept: retry with the same key and the same body, which finishes "
                             "what the failed attempt began (another body with that key is 422: the attempt may have "
                             "written part of its work). Without the header the request runs as usual.",
              "schema": {"type": "string", "minLength": 8, "maxLength": 100}}
_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
IN_PROGRESS = "a request with this Idempotency-Key is still being processed: retry after Retry-After seconds"
RETRY_AFTER_DOC = {"description": "only on the 409 answered while a request with this Idempotency-Key is still "
                                  "being processed: seconds to wait before retrying", "schema": {
                       "type": "string", "pattern": "^[0-9]+$"}}
UNPROCESSABLE_DOC = {"description": "the body does not pass validation, or this Idempotency-Key was used with another "
                                    "body", "content": _PROBLEM}


def _conflict_doc(conflict: str | None) -> dict:
    description = IN_PROGRESS if conflict is None else (
        f"two causes, told apart by Retry-After. With Retry-After: {IN_PROGRESS}. Without it: {conflict}; this "
        "conflicts with what is stored, so do not retry the same request")
    return {"description": description, "content": _PROBLEM, "headers": {"Retry-After": RETRY_AFTER_DOC}}


def by_role_only(**url) -> None:
    """``access`` of a route whose roles are its whole check (an admin creating a team): the caller's standing is
    the same whatever it names, and the roles are checked before any view."""


def idempotent(*, access: Callable[..., object], conflict: str | None = None) -> Callable:
    """Honour an Idempotency-Key header on this POST (optional: without one the POST runs as usual).

    ``access``: the route's check of the caller, given the URL's parts (``patient_may(Operation.WRITE)``, say, or
    :func:`by_role_only`), raising the refusal the route answers. It runs before the body is parsed and before the
    key is looked at, on every request: a stored answer is never replayed to a caller it refuses. ``conflict``
    says when the operation also answers 409 because the request conflicts with what is stored (no Retry-After:
    retrying cannot succeed), so that its documented 409 names both causes."""
    return functools.partial(_idempotent, access=access, conflict=conflict)


def _idempotent(view, *, access: Callable[..., object], conflict: str | None):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        access(**kwargs)  # the view's URL arguments (its body is parsed below)
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not _VALID.fullmatch(key):
            raise Invalid(f"{HEADER} must be 8-100 characters of letters, digits and _.:-",
                          errors={"headers": {HEADER: ["8-100 characters of letters, digits and _.:-"]}})
        caller = current_actor().id
        digest = hashlib.sha256(request.method.encode() + request.path.encode() + request.get_data()).hexdigest()
        keys = services().idempotency
        claimed = keys.begin(caller, key, digest)
        if not isinstance(claimed, HeldKey):  # the answer stored under the key
            replay = Response(claimed.body, status=claimed.status, mimetype=claimed.mimetype)
            replay.headers.update(claimed.headers or {})
            replay.headers["Idempotent-Replayed"] = "true"
            return replay
        g.idempotency_key = keys.request_key(caller, key, claimed, digest)
        try:
            response = view(*args, **kwargs)
        except Exception as exc:
            keys.release(caller, key, claimed, interrupted=_answered(exc) >= 500)
            raise
        # Kept, or the key let go, only under the claim this request did its work as (the key may have been claimed
        # by another request since: companion.store.idempotency).
        if isinstance(response, Response) and response.status_code < 500:
            kept = {name: response.headers[name] for name in REPLAYED_HEADERS if name in response.headers}
            keys.complete(caller, key, claimed, response.status_code, response.get_data(), response.mimetype, kept)
        else:
            keys.release(caller, key, claimed, interrupted=True)  # a 5xx answered rather than raised
        return response

    responses = {"409": _conflict_doc(conflict), "422": UNPROCESSABLE_DOC}
    wrapper._apidoc = deepupdate(getattr(wrapper, "_apidoc", {}),
                                 {"manual_doc": {"parameters": [HEADER_DOC], "responses": responses}})
    return wrapper


def _answered(exc: Exception) -> int:
    """The status a view's exception is answered with: a refusal (4xx) wrote nothing, and frees the key for any
    request; anything else (a 5xx: the database went away, a step after a write failed) may have written part of
    the work, and keeps the key for the same request's retry, which finishes it."""
    if isinstance(exc, DomainError):
        return status_of(exc)[0]
    if isinstance(exc, HTTPException):
        return exc.code or 500
    return 500


def request_key() -> str | None:
    """This request's Idempotency-Key (with its caller and the request it names), if it sent one: a use case
    that creates something derives the new object's id from it, so a retry after a crash, or days later once the
    key was forgotten, finds the object the first attempt made instead of making a second one, and another
    request that uses the key again makes its own (companion.services.idempotency.IdempotencyClaims.request_key)."""
    return g.get("idempotency_key")
