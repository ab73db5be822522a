"""Conditional requests: each object the app edits has a ``version``, sent as its ``ETag``.

- ``ETag: "<version>"`` on every answer that shows one object (GET, POST, PUT, PATCH); the same number is
  the object's ``version`` field in lists and change feeds, so an app can edit straight from its cache.
- ``If-Match: "<version>"`` (or a list of tags, compared strongly: a weak one matches nothing) on PUT, PATCH or
  DELETE: the write happens only if the object is still at that version (one of them). The comparison is part of the write itself (the version is in the update's filter, one
  single-document update, atomic on MongoDB and on the project's FerretDB build), so of two writes from
  the same version exactly one succeeds. The other is answered **412** with the object as it is now in
  the problem's ``current`` member and its ``ETag`` header. ``If-Match: *`` or no If-Match: the route's
  documented rule applies (a PATCH changes only the fields it names, on whatever version is current).
- ``If-None-Match: "<version>"`` on GET: **304** without a body when the object is still at that version.
- An object some callers see with parts withheld (a diary note, a reason for skipping, to a caregiver the patient
  has not allowed their own words) is tagged ``"<version>.<view>"`` in that view (``"7.withheld"``): a copy
  taken in one view is never confirmed as current in the other (a caregiver granted the notes gets the note;
  one whose notes were withdrawn is not told their copy with it still stands). If-Match reads the version
  alone, so either tag of a version names it.

Reads that show more than one object (a patient's "today", the clinician panel, the review, every list and
change feed) have no version of their own: :func:`install` tags every other ``200`` JSON answer to a ``GET``
under ``/api/`` with a weak ETag, a hash of the serialised answer *and of the caller*, and answers a
matching ``If-None-Match`` with **304**, no body and the same ETag. The view runs in full first, so a 304
has passed the same authorisation and is audited like the read it stands for (status 304); the tag depends
on the caller, so one account's tag never matches (or tells anything about) another's answer.

flask-smorest has an ETag feature of its own, but it hashes the answer and compares tags in Python before
the view runs, which is not part of the write (two PATCHes from one version would both pass) and which
makes If-Match mandatory; so the kernel does it here, and documents the headers with flask-smorest's
public ``doc``/``alt_response`` hooks.
"""

from __future__ import annotations

import functools
import hashlib
import re

from flask import Flask, Response, g, request
from werkzeug.exceptions import BadRequest

from companion.domain.access import Grant, sees_free_text
from companion.domain.errors import DomainError
from companion.http.problems import PROBLEM_JSON
from companion.http.schemas import ProblemSchema

_TAG = re.compile(r'^"(\d{1,18})(?:\.([a-z]{1,16}))?"$')
# RFC 9110: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE (a comma may sit inside one); If-Match = "*" / #entity-tag.
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
_LIST_OF_TAGS = re.compile(r"[\s,]*\0(?:\s*,[\s,]*\0)*[\s,]*")  # each tag replaced by \0
WITHHELD = "withheld"  # the view of an object with the patient's own words withheld

IF_MATCH_DOC = {
    "in": "header", "name": "If-Match", "required": False, "schema": {"type": "string"},
    "description": 'the ETag of the version you changed (e.g. "42"), or a list of them: the write happens only if '
                   "one names the current version, else 412 with the current object (compared strongly: a weak "
                   'tag such as W/"42" never matches). Without it, or with *, the route\'s own rule applies.',
}
IF_NONE_MATCH_DOC = {
    "in": "header", "name": "If-None-Match", "required": False, "schema": {"type": "string"},
    "description": "the ETag you hold (or a list of them, strong or weak: compared weakly; or *): 304 (no body) "
                   "while the object is still at that version",
}
ETAG_HEADERS = {"ETag": {"description": 'the version of the object in the answer, e.g. "42"; "42.withheld" when '
                                        "the patient's own words in it are withheld from the caller",
                         "schema": {"type": "string"}}}
NOT_MODIFIED_DOC = {"description": "still at the version named by If-None-Match: no body; ETag names that version",
                    "headers": ETAG_HEADERS}
PRECONDITION_FAILED_DOC = {
    "description": "If-Match named a version that is no longer current: nothing was written; `current` holds "
                   "the object as it is now and the ETag header its version",
    "schema": ProblemSchema, "content_type": PROBLEM_JSON,
}


def view_of(grant: Grant) -> str | None:
    """The view a caller sees objects holding the patient's own words in: whole (None), or ``withheld``."""
    return None if sees_free_text(grant) else WITHHELD


def etag(version: int | None, view: str | None = None) -> str:
    """The ETag of an object at ``version`` (0 for an object that does not exist yet), in ``view`` (None: the
    whole object)."""
    return f'"{int(version or 0)}.{view}"' if view else f'"{int(version or 0)}"'


def if_match() -> frozenset[int] | None:
    """The versions the request's If-Match names, whatever the view each was seen in; None when it is absent or
    ``*`` (the route's own rule applies). RFC 9110 13.1.1: a list of entity tags compared strongly, matching when
    any names the current version; a weak tag (``W/"42"``) or one this API never sends names none, so a list
    of only those is refused as a stale one is (412 with the current object). A value that is no list of
    entity tags at all is a 400."""
    value = (request.headers.get("If-Match") or "").strip()
    if not value or value == "*":
        return None
    if "\0" in value or not _LIST_OF_TAGS.fullmatch(_ENTITY_TAG.sub("\0", value)):
        raise BadRequest('If-Match must be * or a list of entity tags, such as "42" or "41", "42"')
    versions = set()
    for weak, opaque in _ENTITY_TAG.findall(value):
        found = None if weak else _TAG.fullmatch(f'"{opaque}"')
        if found:
            versions.add(int(found.group(1)))
    return frozenset(versions)


def tagged(body, version: int | None, status: int = 200, *, location: str | None = None,
           view: str | None = None):
    """A view's answer with the ETag of ``version`` in ``view`` (what flask-smorest's ``response`` accepts), and
    with a ``location`` the ``Location`` of what a 201 created."""
    headers = {"ETag": etag(version, view)}
    if location and status == 201:
        headers["Location"] = location
    return body, status, headers


def _none_match() -> tuple[set[tuple[int, str | None]], bool]:
    """The versions If-None-Match names, and whether it is ``*``. Compared weakly (RFC 9110 13.1.2): a list of
    tags, each strong or weak (a proxy compressing the answer turns ``"42"`` into ``W/"42"``); a tag this API
    never sends matches nothing."""
    named, anything = set(), False
    for part in (request.headers.get("If-None-Match") or "").split(","):
        part = part.strip().removeprefix("W/")
        anything = anything or part == "*"
        found = _TAG.fullmatch(part)
        if found:
            named.add((int(found.group(1)), found.group(2)))
    return named, anything


def not_modified(version: int | None, view: str | None = None) -> Response | None:
    """304 when the request's If-None-Match names ``version`` in ``view`` (or is ``*``), else None (answer as
    usual)."""
    if request.headers.get("If-None-Match") is None:
        return None
    named, anything = _none_match()
    if not anything and (int(version or 0), view) not in named:
        return None
    response = Response(status=304)
    response.headers["ETag"] = etag(version, view)
    return response


def answer_tag(body: bytes, caller: str) -> str:
    """The weak ETag of ``body`` as answered to ``caller``."""
    digest = hashlib.sha256(caller.encode() + b"\0")
    digest.update(body)
    return f'W/"{digest.hexdigest()[:32]}"'


def _matches(header: str | None, tag: str) -> bool:
    """Weak comparison (RFC 9110 13.1.2) of ``tag`` with an If-None-Match list; anything else never matches."""
    if not header:
        return False
    opaque = tag.removeprefix("W/")
    return any(candidate.strip() == "*" or candidate.strip().removeprefix("W/") == opaque
               for candidate in header.split(","))


def _hashed(response: Response) -> bool:
    return (request.method == "GET" and response.status_code == 200 and request.path.startswith("/api/")
            and response.mimetype == "application/json" and "ETag" not in response.headers
            and not response.is_streamed)


def install(app: Flask) -> None:
    """Tag multi-object reads with the hash of their answer, and answer a matching If-None-Match with 304.
    Installed after the audit hook, so that it runs before it: the audit sees the 304."""

    @app.after_request
    def tag_read(response: Response) -> Response:
        if not _hashed(response):
            return response
        actor = g.get("actor")
        tag = answer_tag(response.get_data(), actor.id if actor is not None else "")
        response.headers["ETag"] = tag
        if _matches(request.headers.get("If-None-Match"), tag):
            response.status_code = 304
            response.set_data(b"")
            for name in ("Content-Type", "Content-Length"):
                response.headers.pop(name, None)
        return response


def shows_current(schema):
    """Answer a domain error that names the stored object (``current``) with that object as ``schema``
    dumps it: the caller gets what it would have got from a GET, inside the problem details."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            try:
                return view(*args, **kwargs)
            except DomainError as exc:
                if exc.current is not None:
                    exc.representation = schema().dump(exc.current)
                    # Tagged in the caller's view, as a GET would tag it: a copy with the patient's words withheld
                    # never carries the whole object's tag (an If-None-Match with it would confirm it as whole).
                    grant = (g.get("grants") or {}).get(kwargs.get("patient_id"))
                    if exc.version is not None and grant is not None:
                        exc.etag = etag(exc.version, view_of(grant))
                raise

        return wrapper

    return decorate
