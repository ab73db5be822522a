"""Schemas compiled into plain Python for the items that pass through by the hundred: a flat StrictSchema's
checks for what a request carries (a gateway's session records and syncs), and a response schema's fields for
what an answer shows (the clinician panel's lines).

Loading one record through marshmallow costs tens of microseconds of machinery (hooks, field lookups,
error bookkeeping) for a few comparisons. ``CompiledLoader`` reads the schema's own declarations once
(each field's type, whether it is required, its default, ``allow_none`` and its validators: Length, Range,
Pattern, Regexp, OneOf) and checks an item with them directly. It only ever *accepts*: an item it does not accept in
full is loaded by the schema itself, so every error (its wording, its field) is the schema's, and an item
the schema would accept in a way the compiled checks do not (a number sent as a string, say) is still
accepted. A schema it cannot compile (another field type, another validator, a hook other than StrictSchema's
operator-key and years checks) raises at import, never silently differs.

Dumping a page of 50 panel lines through marshmallow costs a few milliseconds of the same machinery (each
field's ``serialize``, its accessor, its ``_serialize``), more than the database's part of the request.
``CompiledDump`` is a mixin for a response schema: its ``dump`` reads each field's declaration once (its
attribute path, its ``dump_default``, its type: String, Integer, Float, Boolean, DateTime, Date, Time, List
or Nested of those) and
then does exactly what marshmallow's dump does with it, with none of the lookups in between. A schema it cannot
compile (another field type, ``as_string``, a dump hook) raises when the schema is first used, never silently
differs; ``tests/api/test_compiled_loader.py`` compares the two dumps on generated pages.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from marshmallow import RAISE, Schema, fields, validate
from marshmallow.utils import ensure_text_type, missing

from companion.http.schemas import YEARS, Pattern

_REFUSED = object()  # the compiled checks do not accept the value (the schema decides)
_ALLOWED_HOOKS = {"refuse_operator_keys", "refuse_dates_out_of_time"}  # StrictSchema's (the second: in _datetime)


def _string(value: Any) -> Any:
    return value if type(value) is str else _REFUSED


def _integer(value: Any) -> Any:
    return value if type(value) is int else _REFUSED


def _float(value: Any) -> Any:
    if type(value) is float:
        return value if math.isfinite(value) else _REFUSED
    return float(value) if type(value) is int else _REFUSED


def _aware_datetime(value: Any) -> Any:
    if type(value) is not str:
        return _REFUSED
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return _REFUSED
    if not YEARS[0] <= parsed.year <= YEARS[1]:
        return _REFUSED
    return parsed if parsed.tzinfo is not None and parsed.tzinfo.utcoffset(parsed) is not None else _REFUSED


def _converter(field: fields.Field) -> Callable[[Any], Any]:
    if type(field) is fields.String:
        return _string
    if type(field) is fields.Integer:
        return _integer
    if type(field) is fields.Float and not field.allow_nan and not field.as_string:
        return _float
    if type(field) is fields.AwareDateTime and field.default_timezone is None and field.format in (None, "iso"):
        return _aware_datetime
    raise TypeError(f"cannot compile a {type(field).__name__} field")


def _check(validator) -> Callable[[Any], bool]:
    if type(validator) is validate.Length and validator.equal is None:
        low, high = validator.min, validator.max
        return lambda v: (low is None or len(v) >= low) and (high is None or len(v) <= high)
    if type(validator) is validate.Range:
        low, high, low_in, high_in = validator.min, validator.max, validator.min_inclusive, validator.max_inclusive
        return lambda v: (low is None or (v >= low if low_in else v > low)) and \
            (high is None or (v <= high if high_in else v < high))
    if type(validator) is Pattern:  # the whole value, as Pattern checks it
        fullmatch = validator.regex.fullmatch
        return lambda v: fullmatch(v) is not None
    if type(validator) is validate.Regexp:  # marshmallow's: the start of the value ("x$" passes "x\n")
        match = validator.regex.match
        return lambda v: match(v) is not None
    if type(validator) is validate.OneOf:
        choices = set(validator.choices)
        return lambda v: v in choices
    raise TypeError(f"cannot compile a {type(validator).__name__} validator")


class CompiledLoader:
    """``load(item)``: what ``schema.load(item)`` returns, faster for the items it accepts in full."""

    def __init__(self, schema: Schema):
        hooks = {hook[0] for hooks in schema._hooks.values() for hook in hooks}
        if hooks - _ALLOWED_HOOKS or schema.unknown != RAISE:
            raise TypeError(f"cannot compile {type(schema).__name__}: hooks {sorted(hooks - _ALLOWED_HOOKS)}")
        self.schema = schema
        self.fields = []
        for name, field in schema.load_fields.items():
            checks = tuple(_check(v) for v in field.validators)
            self.fields.append((name, field.data_key or name, _converter(field), checks, field.required,
                                field.load_default, field.allow_none))
        self.known = frozenset(key for _, key, *_ in self.fields)

    def accepted(self, item: Any) -> dict | None:
        """The loaded item if the compiled checks accept all of it, else None (the schema must decide)."""
        if type(item) is not dict or not self.known.issuperset(item):
            return None
        loaded = {}
        for name, key, convert, checks, required, default, allow_none in self.fields:
            value = item.get(key, missing)
            if value is missing:
                if required:
                    return None
                if default is not missing:
                    loaded[name] = default() if callable(default) else default
                continue
            if value is None:
                if not allow_none:
                    return None
                loaded[name] = None
                continue
            value = convert(value)
            if value is _REFUSED:
                return None
            for check in checks:
                if not check(value):
                    return None
            loaded[name] = value
        return loaded

    def load(self, item: Any) -> dict:
        """Load ``item`` as the schema does (its ValidationError, if it refuses the item)."""
        loaded = self.accepted(item)
        return loaded if loaded is not None else self.schema.load(item)


_INDEXABLE: dict[type, bool] = {}  # by type: an instance's own ``__getitem__`` is not used by ``obj[key]``


def _value_for_key(obj: Any, key: str) -> Any:
    """``marshmallow.utils.get_value`` for one key: an item when ``obj`` has one, else its attribute (an object
    whose type has no ``__getitem__`` gives its attribute there too: ``obj[key]`` raises TypeError)."""
    kind = type(obj)
    indexable = _INDEXABLE.get(kind)
    if indexable is None:
        indexable = _INDEXABLE[kind] = hasattr(kind, "__getitem__")
    if not indexable:
        return getattr(obj, key, missing)
    try:
        return obj[key]
    except (KeyError, IndexError, TypeError, AttributeError):
        return getattr(obj, key, missing)


def _getter(path: str) -> Callable[[Any], Any]:
    keys = path.split(".")
    if len(keys) == 1:
        key = keys[0]
        return lambda obj: _value_for_key(obj, key)

    def get(obj: Any) -> Any:
        for key in keys:
            obj = _value_for_key(obj, key)
        return obj
    return get


def _dumper(field: fields.Field) -> Callable[[Any], Any]:
    """What ``field._serialize`` does with a value, for the field types a compiled dump knows."""
    kind = type(field)
    if kind in (fields.String, fields.Str):
        return lambda v: v if type(v) is str else (None if v is None else ensure_text_type(v))
    if kind in (fields.Integer, fields.Int, fields.Float) and not field.as_string:
        number = field.num_type
        return lambda v: None if v is None else number(v)
    if kind in (fields.Boolean, fields.Bool):  # marshmallow dumps a Boolean's value as it is
        return lambda v: v
    if kind in (fields.DateTime, fields.Date, fields.Time):
        form = field.format or field.DEFAULT_FORMAT  # the schema's, once bound to it
        write = field.SERIALIZATION_FUNCS.get(form) or (lambda v: v.strftime(form))
        return lambda v: None if v is None else write(v)
    if kind is fields.List:
        inner = _dumper(field.inner)
        return lambda v: None if v is None else [inner(each) for each in v]
    if kind is fields.Nested:  # its schema is built with the field's only/exclude
        dump = _compile(field.schema)
        if field.schema.many or field.many:
            return lambda v: None if v is None else [dump(each) for each in v]
        return lambda v: None if v is None else dump(v)
    raise TypeError(f"cannot compile the dump of a {kind.__name__} field")


def _compile(schema: Schema) -> Callable[[Any], dict]:
    """One object's dump, as ``schema.dump(obj, many=False)`` returns it."""
    if schema._hooks.get("pre_dump") or schema._hooks.get("post_dump") or schema.get_attribute.__func__ \
            is not Schema.get_attribute:
        raise TypeError(f"cannot compile the dump of {type(schema).__name__}: it has dump hooks or its own accessor")
    steps = []
    for name, field in schema.dump_fields.items():
        if not field._CHECK_ATTRIBUTE or type(field).get_value is not fields.Field.get_value:
            raise TypeError(f"cannot compile the dump of {type(schema).__name__}.{name}")
        steps.append((field.data_key if field.data_key is not None else name,
                      _getter(name if field.attribute is None else field.attribute), field.dump_default,
                      _dumper(field)))

    def dump(obj: Any) -> dict:
        out = {}
        for key, get, default, convert in steps:
            value = get(obj)
            if value is missing:
                value = default() if callable(default) else default
                if value is missing:
                    continue
            out[key] = convert(value)
        return out
    return dump


class CompiledDump:
    """Mixin (before ``Schema``) for a response schema: ``dump`` returns what marshmallow's would, compiled from
    the schema's fields the first time it is used."""

    _compiled_dump: Callable[[Any], dict] | None = None

    def dump(self, obj: Any, *, many: bool | None = None):
        if self._compiled_dump is None:
            self._compiled_dump = _compile(self)
        dump = self._compiled_dump
        if self.many if many is None else many:
            return [dump(each) for each in obj]
        return dump(obj)
