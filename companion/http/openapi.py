"""The OpenAPI document as a contract an app team can generate a client from.

Two kinds of schema, told apart by their base class:

- **requests** (:class:`~companion.http.schemas.StrictSchema`): ``additionalProperties: false``, as they are
  enforced (an unknown field is a 422);
- **answers** (every other schema): open to new members (no ``additionalProperties: false``), so a client
  generated today keeps working when the server adds a field. A field every answer carries (possibly
  ``null`` when it is nullable) is ``required``: declared with ``required=True``, or, for a schema whose
  ``Meta`` says ``every_field_present = True``, every field but those with ``metadata={"optional": True}``.
  A field marked so is one a generated client may rely on; ``tests/api/test_generated_client.py`` and the
  schemathesis runs check the answers against it.

Every operation has an ``operationId`` (``@blp.doc(operationId=...)`` beside the view); the test suite checks
that they are there and unique.

Every header the kernel reads or writes is documented on every operation it applies to, by the plugin below
rather than view by view: ``X-Request-ID`` and ``traceparent`` (read), ``X-Request-ID``, ``traceresponse`` and
``X-Server-Time`` and ``Cache-Control`` (on every answer), ``Idempotent-Replayed`` (2xx of an operation taking
an ``Idempotency-Key``), ``WWW-Authenticate`` (401), ``Retry-After`` (429, 503; a 409 documents it
itself where it may carry it: an ``Idempotency-Key`` still in use, an edit that lost to others, see
companion.http.problems.conflict_doc), ``Location`` (201), and, on every read tagged by the hash of its answer
(companion.http.conditional), ``If-None-Match``, ``ETag`` and the 304. Rules across fields (``Meta.rules`` of a request schema) become the schema's description.
"""

from __future__ import annotations

from apispec import BasePlugin
from marshmallow import Schema

from companion.http.schemas import StrictSchema
from companion.settings import Settings

OPTIONAL = "optional"
# Set on an operation that ignores any query string (companion.http.bodies.ignores_query, the plain routes of
# companion.api.operations); said in its description, not published. Every other operation that declares no
# query parameter refuses any (422, companion.http.bodies).
QUERY_IGNORED = "x-companion-query-ignored"
QUERY_IGNORED_NOTE = "Any query string is ignored (a cache-buster, say)."


def _schema_class(schema) -> type[Schema] | None:
    if isinstance(schema, Schema):
        return type(schema)
    return schema if isinstance(schema, type) and issubclass(schema, Schema) else None


def always_present(schema: type[Schema]) -> list[str]:
    """The names (as sent) of an answer schema's fields that every answer carries."""
    instance = schema()
    every = getattr(getattr(schema, "Meta", None), "every_field_present", False)
    return [field.data_key or name for name, field in instance.dump_fields.items()
            if field.required or (every and not field.metadata.get(OPTIONAL))]


LOCATION_HEADER = {"description": "the URL of what was created (or, where the API has none for it, of the "
                                  "collection it was created in)", "schema": {"type": "string"}}


def _nullable_ref(prop: dict) -> None:
    """apispec writes a nullable nested schema as ``anyOf: [{type: object, nullable: true}, {$ref}]``, which any
    object matches by its first branch (generated clients parse it as a bare object). In OpenAPI 3.0.3 `nullable`
    only adds null to the `type` of its own Schema Object, so ``nullable: true`` beside ``allOf: [{$ref}]`` (with or
    without a `type`) still refuses null through the referenced object; the branch that admits null must admit
    nothing else: ``oneOf: [{$ref}, {type: object, nullable: true, enum: [null]}]``."""
    branches = prop.get("anyOf")
    if not branches or len(branches) != 2:
        return
    refs = [b for b in branches if "$ref" in b]
    if len(refs) == 1 and {"type": "object", "nullable": True} in branches:
        del prop["anyOf"]
        prop["oneOf"] = [*refs, {"type": "object", "nullable": True, "enum": [None]}]


def _header(description: str, **schema) -> dict:
    return {"description": description, "schema": {"type": "string", **schema}}


REQUEST_HEADERS = {
    "XRequestId": {"in": "header", "name": "X-Request-ID", "required": False, "description":
                   "your own id for this request (1-128 letters, digits or -_.:/+=@): echoed in the answer's "
                   "X-Request-ID and carried in the server's log lines; a malformed one is ignored",
                   "schema": {"type": "string"}},
    "Traceparent": {"in": "header", "name": "traceparent", "required": False, "description":
                    "W3C Trace Context: the server's log lines carry its trace id, and the answer's traceresponse "
                    "names the server's span; a malformed one is ignored", "schema": {"type": "string"}},
}
ANSWER_HEADERS = {
    "X-Request-ID": _header("your X-Request-ID, or the server's id of the request when you sent none"),
    "X-Server-Time": _header("the server's clock as it answered (ISO 8601, UTC, milliseconds)", format="date-time"),
    "Cache-Control": _header("`no-store`: answers carry health data or credentials; no cache may keep them (an "
                             "app keeps an ETag and the body itself)"),
    "traceresponse": _header("W3C Trace Context level 2, when the request carried a valid traceparent: "
                             "00-<trace id>-<the server's span id>-<flags>"),
}
REPLAYED = _header("`true` on an answer replayed for a repeated Idempotency-Key (nothing was done again)",
                   enum=["true"])
RETRY_AFTER = _header("seconds to wait before trying again", pattern="^[0-9]+$")
WWW_AUTHENTICATE = _header('`Bearer realm="companion"`, with `error="invalid_token"` when a token was sent but is '
                           "not (or no longer) valid")
HASHED_IF_NONE_MATCH = {
    "in": "header", "name": "If-None-Match", "required": False, "schema": {"type": "string"},
    "description": "an ETag this answer carried before (one or more, comma-separated): 304 with no body while the "
                   "answer, as you would get it, is unchanged",
}
HASHED_ETAG = _header("a weak tag of this answer as given to you (a hash of its content and of the caller): send it "
                      "back in If-None-Match to be answered 304 while nothing you would see has changed")
SHARED_RESPONSES = {
    "400": ("UNREADABLE_REQUEST", "the request cannot be read: a body that is not well-formed JSON (or nests or "
                                  "spells numbers too deeply), or an If-Match that is neither * nor a list of "
                                  "entity tags", {}),
    "401": ("SIGN_IN_REQUIRED", "no valid credentials: sign in (or refresh the session) and send "
                            "`Authorization: Bearer <token>`", {"WWW-Authenticate": WWW_AUTHENTICATE}),
    "403": ("NOT_ALLOWED", "this role may not call this operation, or the relationship does not allow this act "
                           "(a caregiver writing without leave); where the operation asks for `current_password`, "
                           "a wrong one (`errors.current_password`: the session is sound, ask again)", {}),
    "404": ("NO_SUCH_RESOURCE", "no such resource, or none the caller has a relationship to (the two are never told "
                         "apart)", {}),
    "413": ("BODY_TOO_LARGE", f"the body is larger than the server reads ({Settings.max_content_length // 2 ** 20} "
                              "MiB): nothing was done; send less (a batch split in two)", {}),
    "415": ("SEND_JSON", "the body was sent as another media type: send it as `Content-Type: application/json`",
            {}),
    "422": ("NO_QUERY_PARAMETERS", "this operation takes no query parameters: each one sent is named in "
                                   "`errors.query`", {}),
    "429": ("WAIT_AND_RETRY", "too many attempts: wait Retry-After seconds", {"Retry-After": RETRY_AFTER}),
    "503": ("DATABASE_UNAVAILABLE", "the database (or the audit trail) cannot be reached right now: retry after "
                                   "Retry-After seconds (a gateway is also answered 503 while its patient's "
                                   "account is paused by an admin: keep the records and ask again then)",
            {"Retry-After": RETRY_AFTER}),
}
WITHOUT_DATABASE = frozenset({"/healthz", "/"})  # answered without the database: never a 503
# The public operations that check a credential (a password, a refresh token, a gateway secret, a pairing code):
# they answer 401 (and 403 for an account not allowed there) and are throttled (429).
SIGN_IN_PATHS = ("/api/v1/auth", "/api/v1/gateways/pair")
# Other operations with a throttle of their own (429): making pairing codes, a gateway's uploads and reports.
# The downloads: answered as files (a media type of their own and a Content-Disposition), not as JSON objects.
DOWNLOADS = {
    "/api/v1/patients/{patient_id}/data-export": "application/json",
    "/api/v1/patients/{patient_id}/exports/fhir": "application/fhir+json",
    "/api/v1/patients/{patient_id}/exports/csv": "text/csv",
    "/api/v1/patients/{patient_id}/exports/events": "text/csv",
    "/api/v1/clinician/panel/export": "text/csv",
}
CONTENT_DISPOSITION = _header('`attachment; filename="..."`: save the answer as a file of that name')
THROTTLED_PATHS = ("/api/v1/patients/{patient_id}/pairing-codes", "/api/v1/gateway/session-records",
                   "/api/v1/gateway/dead-letters")
_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _with_answer_headers(response: dict, status: str) -> None:
    if "$ref" in response:
        return
    headers = response.setdefault("headers", {})
    for name in ANSWER_HEADERS:
        headers.setdefault(name, {"$ref": f"#/components/headers/{name}"})
    if status in ("429", "503"):  # a 409 that carries it says so itself
        headers.setdefault("Retry-After", RETRY_AFTER)


def _takes_if_match(operation: dict) -> bool:
    return any(isinstance(p, dict) and p.get("name") == "If-Match" for p in operation.get("parameters") or [])


def _hashed_read(path: str, method: str, operation: dict) -> bool:
    """Whether companion.http.conditional tags this operation's answer with the hash of it."""
    ok = (operation.get("responses") or {}).get("200")
    return (method == "get" and path.startswith("/api/") and isinstance(ok, dict)
            and "application/json" in (ok.get("content") or {})
            and not any(isinstance(p, dict) and p.get("name") == "If-None-Match"
                        for p in operation.get("parameters") or []))


class ContractPlugin(BasePlugin):
    """Answers open to new members and explicit about what they always carry; ``Location`` on every 201; the
    kernel's headers and shared error answers on every operation they apply to."""

    def init_spec(self, spec):
        super().init_spec(spec)
        self._spec = spec
        for name, parameter in REQUEST_HEADERS.items():
            spec.components.parameter(name, parameter["in"], {k: v for k, v in parameter.items() if k != "in"})
        for name, header in ANSWER_HEADERS.items():
            spec.components.header(name, header)
        for _, (name, description, headers) in SHARED_RESPONSES.items():
            response = {"description": description, "content": _PROBLEM, "headers": dict(headers)}
            _with_answer_headers(response, "")
            spec.components.response(name, response)

    def response_helper(self, response, **kwargs):
        _with_answer_headers(response, "")
        return response

    def operation_helper(self, path=None, operations=None, **kwargs):
        for method, operation in (operations or {}).items():
            responses = operation.setdefault("responses", {})
            ignores_query = operation.pop(QUERY_IGNORED, False)
            if ignores_query:
                operation["description"] = " ".join(filter(None, [operation.get("description"), QUERY_IGNORED_NOTE]))
            takes_query = ignores_query or any(isinstance(p, dict) and p.get("in") == "query"
                                               for p in operation.get("parameters") or [])
            ok = responses.get(200, responses.get("200"))
            if path in DOWNLOADS and method == "get" and isinstance(ok, dict):
                media = DOWNLOADS[path]
                ok["content"] = {media: {"schema": {"type": "object"} if media.endswith("json")
                                         else {"type": "string", "format": "binary"}}}
                ok.setdefault("headers", {})["Content-Disposition"] = CONTENT_DISPOSITION
            created = responses.get(201, responses.get("201"))
            if isinstance(created, dict):
                created.setdefault("headers", {})["Location"] = LOCATION_HEADER
            if path and _hashed_read(path, method, {**operation, "responses": {
                    str(k): v for k, v in responses.items()}}):
                operation.setdefault("parameters", []).append(HASHED_IF_NONE_MATCH)
                ok = responses.get(200, responses.get("200"))
                ok.setdefault("headers", {})["ETag"] = HASHED_ETAG
                responses["304"] = {"description": "Not Modified: your If-None-Match names this answer's ETag (no "
                                                   "body)", "headers": {"ETag": HASHED_ETAG}}
            for status, response in responses.items():
                if isinstance(response, dict):
                    _with_answer_headers(response, str(status))
            if any(isinstance(p, dict) and p.get("name") == "Idempotency-Key" for p in operation.get("parameters") or []):
                for status, response in responses.items():
                    if str(status).startswith("2") and isinstance(response, dict):
                        response.setdefault("headers", {})["Idempotent-Replayed"] = REPLAYED
            operation.setdefault("parameters", []).extend(REQUEST_HEADERS)
            public = operation.get("security") == []
            # Sign-in, and every operation that asks for the current password again (its failures count with
            # sign-in's: companion.services.accounts.Accounts.reauthenticate), answer 429 when throttled.
            signs_in = (path or "").startswith(SIGN_IN_PATHS) or self._asks_password(operation)
            for status, (name, _, _) in SHARED_RESPONSES.items():
                if ((status in ("401", "403") and public and not signs_in)
                        or (status == "404" and public and "{" not in (path or ""))
                        or (status == "429" and not signs_in and path not in THROTTLED_PATHS)
                        or (status in ("413", "415") and "requestBody" not in operation)
                        or (status == "422" and takes_query)
                        or (status == "400" and "requestBody" not in operation and not _takes_if_match(operation))
                        or (status == "503" and path in WITHOUT_DATABASE)):
                    continue
                if status not in responses and int(status) not in responses:
                    responses[status] = name

    def _asks_password(self, operation: dict) -> bool:
        """Whether the operation's body holds ``current_password`` (a step-up, throttled as sign-in is)."""
        content = (operation.get("requestBody") or {}).get("content") or {}
        schema = (content.get("application/json") or {}).get("schema") or {}
        ref = schema.get("$ref", "") if isinstance(schema, dict) else ""
        definition = self._spec.components.schemas.get(ref.rsplit("/", 1)[-1], {}) if ref else schema
        return isinstance(definition, dict) and "current_password" in (definition.get("properties") or {})

    def schema_helper(self, name, definition, **kwargs):
        schema = _schema_class(kwargs.get("schema"))
        if schema is None:
            return None
        for prop in (definition.get("properties") or {}).values():
            _nullable_ref(prop)
        if issubclass(schema, StrictSchema):
            rules = getattr(getattr(schema, "Meta", None), "rules", None)
            if rules:
                definition["description"] = f"Rules across fields: {rules}"
            return None
        if definition.get("additionalProperties") is False:
            del definition["additionalProperties"]
        required = always_present(schema)
        if required:
            definition["required"] = required
        return None
