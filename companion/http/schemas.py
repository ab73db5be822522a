"""Schema pieces every HTTP door shares: strict loading (unknown fields refused, no Mongo operators in
keys), bounded strings, paging, and the problem-details body."""

from __future__ import annotations

import copy
import re
from datetime import date

from marshmallow import RAISE, Schema, ValidationError, fields, missing, pre_load, validate, validates_schema

from companion.domain.messages import is_locale_tag
from companion.domain.review import lf_line_breaks

_UNSAFE_KEY = re.compile(r"^\$|\.|\x00")
MAX_DEPTH = 8
_CONTAINERS = (dict, list)
_SCALARS = frozenset({str, int, float, bool, type(None)})
# Keys already found safe, so that a batch's 500 records, which repeat the same 18 keys, are checked with set
# lookups instead of 9,000 regular-expression searches. Bounded: once full, further keys are searched each time.
_SAFE_KEYS: set[str] = set()
_SAFE_KEYS_MAX = 4096


def _safe_key(key) -> bool:
    if key in _SAFE_KEYS:
        return True
    if not isinstance(key, str) or _UNSAFE_KEY.search(key):
        return False
    if len(_SAFE_KEYS) < _SAFE_KEYS_MAX and len(key) <= 64:
        _SAFE_KEYS.add(key)
    return True


def _check_keys(value, path: str, depth: int = 0) -> None:
    """Refuse keys that look like operators anywhere in ``value``, and nesting deeper than MAX_DEPTH. Only
    containers are descended into (a batch of 500 records holds about 9,000 scalars), and a key's path is
    spelled out only for a container or an error."""
    if depth > MAX_DEPTH:
        raise ValidationError("nested too deeply", path or "_schema")
    if isinstance(value, dict):
        if depth < MAX_DEPTH and _SAFE_KEYS.issuperset(value) and _SCALARS.issuperset(map(type, value.values())):
            return  # every key already known safe, and nothing to descend into (a session record)
        for key, inner in value.items():
            if not _safe_key(key):
                raise ValidationError("keys may not start with '$' or contain '.'", f"{path}{key}")
            if depth == MAX_DEPTH or isinstance(inner, _CONTAINERS):
                _check_keys(inner, f"{path}{key}.", depth + 1)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            if depth == MAX_DEPTH or isinstance(inner, _CONTAINERS):
                _check_keys(inner, f"{path}{index}.", depth + 1)


# Dates and moments the API takes lie in these years: nothing the app or a clinician means lies outside, and a
# date at the ends of the calendar (0001-01-01, 9999-12-31) overflows when it is moved to UTC or widened by a day.
YEARS = (1900, 2200)


class StrictSchema(Schema):
    """Base of every load schema: unknown fields raise, operator-looking keys are refused
    before anything reaches the database, and dates and moments lie in :data:`YEARS`."""

    class Meta:
        unknown = RAISE

    @pre_load
    def refuse_operator_keys(self, data, **kwargs):
        _check_keys(data, "")
        return data

    @validates_schema
    def refuse_dates_out_of_time(self, data, **kwargs):
        """A schema validator, so that it sees the dates before any ``post_load`` of a subclass turns them into
        something else (marshmallow runs hooks of one kind in the order of their names)."""
        if not isinstance(data, dict):
            return
        errors = {}
        for name, value in data.items():
            if isinstance(value, date) and not YEARS[0] <= value.year <= YEARS[1]:
                field = self.fields.get(name)
                errors[(field.data_key if field is not None else None) or name] = [
                    f"must lie in the years {YEARS[0]} to {YEARS[1]}"]
        if errors:
            raise ValidationError(errors)


class SetAside:
    """An item of a batch that did not load: where it stood, the id the app gave it (when it gave one as text),
    and why (marshmallow's messages for it)."""

    __slots__ = ("index", "client_id", "errors")

    def __init__(self, index: int, client_id: str | None, errors: dict | list):
        self.index, self.client_id, self.errors = index, client_id, errors


class EachOnItsOwn(fields.List):
    """A batch's list whose items load one by one: an item that does not load is set aside (a :class:`SetAside`
    in its place) instead of refusing the whole batch, so that the good items of an offline upload are kept and
    the bad one is answered on its own (a phone that treats a 422 as final would drop every entry of it; one that
    retries would be stuck behind it for good). The list itself (its type and length) is still checked whole.
    ``client_id``: the item's field naming it, reported with the item set aside."""

    def __init__(self, inner: fields.Nested, *, client_id: str, **kwargs):
        super().__init__(inner, **kwargs)
        self.client_id = client_id

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise self.make_error("invalid")
        loaded: list = []
        for index, each in enumerate(value):
            try:
                loaded.append(self.inner.deserialize(each, **kwargs))
            except ValidationError as error:
                named = each.get(self.client_id) if isinstance(each, dict) else None
                loaded.append(SetAside(index, named if isinstance(named, str) else None, error.messages))
        return loaded


class Pattern(validate.Regexp):
    """``validate.Regexp`` that needs the whole value to match. marshmallow's uses ``re.match``, where ``$`` also
    matches before a final newline, so "08:00\\n" passed ``^...$`` and was stored; every pattern the API checks
    is one of these (the OpenAPI document shows it as ``pattern``, as it did the Regexp)."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def edit_form(schema: type[Schema], name: str, **replaced: fields.Field) -> type[Schema]:
    """The items of ``schema`` as an edit names them (JSON merge patch, RFC 7386): none required, none filled in
    when left out, so that an edit changes only the items it names; its schema-wide checks are left to the use
    case, which makes them on the stored form merged with the edit. ``replaced``: fields given instead (an
    inner form, itself an edit form)."""
    items = {}
    for key, field in schema._declared_fields.items():
        item = copy.deepcopy(field)
        item.required, item.load_default = False, missing
        items[key] = item
    return type(name, (StrictSchema,), {**items, **replaced,
                                         "__doc__": f"{schema.__name__}'s items, each changed only when named."})


class PageArgs(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100),
                           metadata={"description": "page size, at most 100"})
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))


def no_nul(value: str) -> None:
    """Text a person writes holds no NUL character: it is no character of theirs, and it would go on to the
    exports, the pages and the pushes (and a server on PostgreSQL cannot store it). Other control characters are
    let in (a line or page break pasted from a word processor is one, and a phone's offline batch is refused whole)
    and kept out where a format forbids them (the FHIR export: companion.services.fhir.fhir_string)."""
    if "\x00" in value:
        raise ValidationError("may not hold a NUL character (\\u0000)")


class LinesText(fields.String):
    """A string whose line breaks are read as LF before it is checked (companion.domain.review.lf_line_breaks):
    CRLF, as a browser's form sends a line break, is one character, as the form's maxlength counted it."""

    def _deserialize(self, value, attr, data, **kwargs):
        return lf_line_breaks(super()._deserialize(value, attr, data, **kwargs))


def text(max_len: int = 200, *, lines: bool = False, **kwargs) -> fields.String:
    """A string field with a length bound (every string has one) and no NUL character; ``lines``: its line
    breaks are read as LF first (LinesText), so that the bound counts each as one character."""
    kind = LinesText if lines else fields.String
    return kind(validate=[validate.Length(min=kwargs.pop("min_len", 0), max=max_len), no_nul], **kwargs)


class ProblemSchema(Schema):
    type = fields.String(required=True)
    title = fields.String(required=True, metadata={"description": "one title per status code"})
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict()
    request_id = fields.String()
    current = fields.Dict(metadata={"description": "412 and 409 on a write: the object as stored now (its ETag "
                                                   "is in the ETag header); the same shape as the route's answer"})


def valid_locale(value: str) -> None:
    """A language tag for a person or a phone (BCP 47 in its common shapes: en, de-AT, es-419, zh-Hant-TW)."""
    if not is_locale_tag(value):
        raise ValidationError("not a language tag (BCP 47, e.g. en, de-AT, es-419)")
