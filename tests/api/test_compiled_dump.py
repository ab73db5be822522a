"""The compiled dump of response schemas (companion.http.compiled.CompiledDump) writes exactly what marshmallow's
own dump writes: checked on objects generated from each compiled schema's declarations (fields present, absent,
None or of another type; dicts and objects alike) and on real panel lines (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, fields, post_dump

from companion.api.clinician import PanelSchema
from companion.api.progress import TodaySchema
from companion.domain.review import PainTrend, PanelRow
from companion.http.compiled import CompiledDump

COMPILED = [PanelSchema, TodaySchema]
MISSING = object()

_numbers = st.one_of(st.none(), st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False), st.booleans())
_instants = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                         timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))]))


def _value(field: fields.Field) -> st.SearchStrategy:
    if isinstance(field, fields.Nested):
        one = _object(type(field.schema))
        return st.one_of(st.none(), st.lists(one, max_size=3) if field.many or field.schema.many else one)
    if isinstance(field, fields.List):
        return st.one_of(st.none(), st.lists(_value(field.inner), max_size=3))
    if isinstance(field, fields.String):
        return st.one_of(st.none(), st.text(max_size=8), st.integers(), st.binary(max_size=4).map(
            lambda b: b.decode("ascii", "replace").encode()))
    if isinstance(field, fields.Number | fields.Boolean):
        return _numbers
    if isinstance(field, fields.DateTime):
        return st.one_of(st.none(), _instants)
    raise AssertionError(f"no strategy for {type(field).__name__}")


def _put(target: dict, path: str, value) -> None:
    *heads, last = path.split(".")
    for head in heads:
        target = target.setdefault(head, {})
    target[last] = value


def _as_objects(value):
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _as_objects(v) for k, v in value.items()})
    return value


def _object(schema_class: type[Schema]) -> st.SearchStrategy:
    """Something the schema can dump: each field's value present (of its type, or None, or another type) or
    absent, as a dict or as an object with attributes."""
    schema = schema_class()
    parts = {name: st.one_of(st.just(MISSING), _value(field)) for name, field in schema.dump_fields.items()}

    def build(values: dict, objects: bool):
        out: dict = {}
        for name, value in values.items():
            if value is not MISSING:
                field = schema.dump_fields[name]
                _put(out, field.attribute or name, value)
        return _as_objects(out) if objects else out
    return st.builds(build, st.fixed_dictionaries(parts), st.booleans())


def _marshmallow(schema: Schema, obj):
    return Schema.dump(schema, obj)


def _outcome(dump, obj):
    """What a dump returns, or the type of what it raises (a dict without ``items`` gives marshmallow the dict's
    ``items`` method, which neither dump can iterate)."""
    try:
        return ("dumped", dump(obj))
    except Exception as exc:  # noqa: BLE001 - the two must fail alike
        return ("raised", type(exc))


@pytest.mark.parametrize("schema_class", COMPILED, ids=lambda c: c.__name__)
def test_each_compiled_schema_dumps_what_marshmallow_dumps(schema_class):
    schema = schema_class()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_object(schema_class))
    def check(obj):
        assert _outcome(schema.dump, obj) == _outcome(lambda o: _marshmallow(schema, o), obj)

    assert issubclass(schema_class, CompiledDump)
    check()


_rows = st.builds(
    PanelRow, patient_id=st.text(min_size=1, max_size=24), display_name=st.text(max_size=20),
    time_zone=st.sampled_from(["Europe/Berlin", "America/Los_Angeles", "UTC"]),
    pdc_7=st.one_of(st.none(), st.floats(0, 1)), pdc_30=st.one_of(st.none(), st.floats(0, 1)),
    pain=st.builds(PainTrend, st.one_of(st.none(), st.floats(0, 10)), st.one_of(st.none(), st.floats(0, 10))),
    days_since_sync=st.one_of(st.none(), st.integers(0, 400)), open_alerts=st.integers(0, 5),
    account_status=st.sampled_from(["active", "deactivated", "closed"]),
    closed_at=st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_rows, max_size=50), st.integers(0, 500), st.one_of(st.none(), st.just("/api/v1/clinician/panel?offset=50")))
def test_a_page_of_panel_lines_dumps_as_marshmallow_dumps_it(rows, total, following):
    page = {"items": rows, "total": total, "offset": 0, "limit": 50, "next": following,
            "next_offset": 50 if following else None}
    schema = PanelSchema()
    dumped = schema.dump(page)
    assert dumped == _marshmallow(schema, page)
    assert [line["reasons"] for line in dumped["items"]] == [row.reasons for row in rows]


class _WithFunction(CompiledDump, Schema):
    shown = fields.Function(lambda obj: 1)


class _WithDecimal(CompiledDump, Schema):
    amount = fields.Decimal()


class _WithNumberAsString(CompiledDump, Schema):
    amount = fields.Float(as_string=True)


class _WithHook(CompiledDump, Schema):
    name = fields.String()

    @post_dump
    def shout(self, data, **kwargs):
        return {k: v.upper() for k, v in data.items()}


@pytest.mark.parametrize("schema_class", [_WithFunction, _WithDecimal, _WithNumberAsString, _WithHook],
                         ids=lambda c: c.__name__)
def test_a_schema_whose_dump_cannot_be_compiled_is_refused_not_dumped_differently(schema_class):
    with pytest.raises(TypeError, match="cannot compile"):
        schema_class().dump({"shown": 1, "amount": 1, "name": "x"})
