"""The compiled loader of gateway records and syncs (companion.http.compiled) loads exactly what their
marshmallow schemas load, and refuses exactly what they refuse, with the schemas' own errors: checked on
records and syncs mutated at random (hypothesis), valid and not."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, validate

from companion.api.ingestion import RECORDS, SYNCS, SessionRecordSchema, SyncSchema
from companion.http.compiled import CompiledLoader
from companion.http.schemas import Pattern, StrictSchema
from tests.support.records import session_record

SYNC = {"sync_id": "sync-0001-abcd", "serial": "CTU-1234", "highest_seq": 12, "unit_clock": "2026-03-01T10:00:00Z",
        "gateway_clock": "2026-03-01T10:00:02.5+01:00", "boot_id": "boot-1", "monotonic_s": 1234.5,
        "clock_set_to": None, "vouched_time": "2026-03-01T09:00:02+00:00", "vouched_error_s": 0.2}
ODD = [None, True, False, 0, -1, 1, 255, 256, 100, 101, 2**31, 2**32, -(2**31) - 1, 1.5, -0.5, 1e308, math.nan,
       math.inf, -math.inf, "", "x" * 49, "x" * 200, "12", "1.5", "NaN", "2026-03-01T10:00:00", "2026-03-01T10:00:00Z",
       "2026-03-01 10:00:00+01:00", "2026-03-01T10:00:00.123456-05:30", "2026-13-01T00:00:00Z", "20260301T100000Z",
       "completed", "ok", "estimated", "CTU-1234", "CTU-1234\n", "ab", "sync-0001-abcd", [], [1], {}, {"$gt": 1},
       {"a.b": 1}, "0123456789abcdef"]


def _outcome(load, item):
    try:
        loaded = load(item)
    except ValidationError as exc:
        return ("refused", exc.messages)
    return ("loaded", loaded, list(loaded))  # the same fields, in the same order


def _mutated(base: dict):
    keys = sorted(base) + ["unknown_field", "$where"]
    change = st.tuples(st.sampled_from(keys), st.one_of(st.sampled_from(ODD), st.just("<drop>")))
    return st.lists(change, max_size=4).map(
        lambda changes: {k: v for k, v in {**base, **dict(changes)}.items() if v != "<drop>"})


@pytest.mark.parametrize("base", [session_record("CTU-1234", 7), session_record("CTU-9", 0, end_reason="x")])
def test_the_compiled_loader_accepts_a_record_as_the_schema_does(base):
    assert _outcome(RECORDS.load, base) == _outcome(SessionRecordSchema().load, base)


def test_a_valid_record_and_sync_take_the_compiled_path():
    assert RECORDS.accepted(session_record("CTU-1234", 7)) is not None
    assert SYNCS.accepted(SYNC) is not None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated(session_record("CTU-1234", 7)))
def test_records_load_and_fail_as_the_schema_says(item):
    compiled = RECORDS.accepted(item)
    if compiled is not None:
        assert _outcome(lambda i: compiled, item) == _outcome(SessionRecordSchema().load, item)
    assert _outcome(RECORDS.load, item) == _outcome(SessionRecordSchema().load, item)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated(SYNC))
def test_syncs_load_and_fail_as_the_schema_says(item):
    compiled = SYNCS.accepted(item)
    if compiled is not None:
        assert _outcome(lambda i: compiled, item) == _outcome(SyncSchema().load, item)
    assert _outcome(SYNCS.load, item) == _outcome(SyncSchema().load, item)


def test_a_serial_or_a_sync_id_with_a_trailing_newline_is_refused_as_the_schema_refuses_it():
    record, sync = session_record("CTU-1234", 7), {**SYNC, "sync_id": "sync-0001-abcd\n"}
    for loader, schema, item in ((RECORDS, SessionRecordSchema(), {**record, "device_serial": "CTU-1234\n"}),
                                 (SYNCS, SyncSchema(), sync), (SYNCS, SyncSchema(), {**SYNC, "serial": "CTU-1234\n"})):
        assert loader.accepted(item) is None
        assert _outcome(loader.load, item) == _outcome(schema.load, item)
        assert _outcome(loader.load, item)[0] == "refused"


def test_a_pattern_is_compiled_as_a_whole_match_and_a_regexp_as_marshmallows():
    class Codes(StrictSchema):
        whole = fields.String(validate=Pattern(r"^[A-Z]{3}$"))
        start = fields.String(validate=validate.Regexp(r"^[A-Z]{3}$"))

    loader = CompiledLoader(Codes())
    for value in ("ABC", "ABC\n", "ABCD", "AB", "\nABC", "ABC\n\n", "abc"):
        for key in ("whole", "start"):
            item = {key: value}
            assert _outcome(loader.load, item) == _outcome(Codes().load, item), item
            compiled = loader.accepted(item)
            if compiled is not None:
                assert _outcome(lambda i, loaded=compiled: loaded, item) == _outcome(Codes().load, item), item
    assert loader.accepted({"whole": "ABC\n"}) is None
    assert loader.accepted({"start": "ABC\n"}) == {"start": "ABC\n"}  # marshmallow's Regexp lets it through


def test_a_schema_it_cannot_compile_is_refused_at_once():
    class WithNested(Schema):
        inner = fields.Nested(SyncSchema)

    with pytest.raises(TypeError):
        CompiledLoader(WithNested())
