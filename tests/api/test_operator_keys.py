"""Every load schema refuses keys that look like MongoDB operators, and nesting past a bound, anywhere in a
body (companion.http.schemas._check_keys). The check descends only into containers; it answers exactly as the
check that visited every value did."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from companion.http.schemas import MAX_DEPTH, _check_keys

_UNSAFE = re.compile(r"^\$|\.|\x00")


def _visit_every_value(value, path: str, depth: int = 0) -> None:
    """The check as first written: the reference."""
    if depth > MAX_DEPTH:
        raise ValidationError("nested too deeply", path or "_schema")
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str) or _UNSAFE.search(key):
                raise ValidationError("keys may not start with '$' or contain '.'", f"{path}{key}")
            _visit_every_value(inner, f"{path}{key}.", depth + 1)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _visit_every_value(inner, f"{path}{index}.", depth + 1)


def _outcome(check, value):
    try:
        check(value, "")
    except ValidationError as error:
        return error.messages
    return None


KEYS = st.sampled_from(["a", "started_at", "$gt", "a.b", "x\x00", "$", "records"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=3))
BODIES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(KEYS, inner, max_size=3)), max_leaves=40)


def _nest(levels: int, leaf) -> object:
    value = leaf
    for n in range(levels):
        value = {"k": value} if n % 2 else [value]
    return value


@settings(max_examples=300, deadline=None)
@given(body=BODIES, levels=st.integers(min_value=0, max_value=MAX_DEPTH + 2))
def test_the_key_check_answers_as_the_check_of_every_value(body, levels):
    for value in (body, _nest(levels, body), _nest(levels, 1)):
        assert _outcome(_check_keys, value) == _outcome(_visit_every_value, value), value


def test_a_scalar_one_level_too_deep_is_refused_as_before():
    assert _outcome(_check_keys, _nest(MAX_DEPTH, 1)) is None
    too_deep = _outcome(_check_keys, _nest(MAX_DEPTH + 1, 1))
    assert too_deep is not None and "nested too deeply" in str(too_deep), too_deep


def test_a_record_of_known_safe_keys_is_still_refused_one_level_too_deep():
    record = {"a": 1, "started_at": "x", "records": 2.5}
    assert _outcome(_check_keys, record) is None  # its keys are now known safe
    for levels in (MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1):
        value = _nest(levels, record)
        assert _outcome(_check_keys, value) == _outcome(_visit_every_value, value), levels
    assert _outcome(_check_keys, _nest(MAX_DEPTH, record)) is not None
