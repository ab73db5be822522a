"""No health information reaches FCM: canary PHI in, request bodies captured by the emulator out."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion.domain.notifications import TEMPLATES, notice_for
from companion.notify.push import PushItem
from tests.notify.clock import T0

# Canaries use letters that never occur in a digest, an id or a header value the sender writes.
canary_word = st.text(alphabet="QZXVWJKqzxvwjk", min_size=6, max_size=12).map(lambda s: "Qzx" + s)
patient_records = st.fixed_dictionaries({
    "patient_id": st.uuids().map(str),
    "name": st.builds(lambda a, b: f"{a} {b}", canary_word, canary_word),
    "date_of_birth": st.dates().map(lambda d: d.isoformat()),
    "email": canary_word.map(lambda w: f"{w}@canary.example"),
    "note": st.builds(lambda w: f"Flare after gardening, {w} says it burns", canary_word),
    "pain": st.integers(0, 10).map(lambda n: f"pain NRS {n}/10"),
    "device_model": canary_word.map(lambda w: f"TENS-{w}"),
    "completion_window_minutes": st.integers(1, 24 * 60),
})


def canaries(record: dict) -> list[str]:
    return [str(value) for key, value in record.items() if key not in ("patient_id", "completion_window_minutes")]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=patient_records)
def test_request_bodies_carry_none_of_the_patients_details_and_fit_in_4096_bytes(sender, emulator, record):
    emulator.reset()
    window = timedelta(minutes=record["completion_window_minutes"])
    items = []
    for kind in TEMPLATES:
        notice = notice_for(kind, str(uuid.uuid4()), context=record, completion_window=window)
        items.append(PushItem(outbox_id=notice.notification_id, token=f"phone-{kind}", kind=notice.kind,
                              expires_at=T0 + notice.ttl, collapse_key=notice.collapse_key))
    sender.send(items)
    bodies = [json.dumps(request.body) for request in emulator.requests]
    assert len(bodies) == len(TEMPLATES)
    leaked = [c for c in canaries(record) for body in bodies if c.lower() in body.lower()]
    assert leaked == []
    assert max(d.raw_size for d in emulator.deliveries) <= 4096
