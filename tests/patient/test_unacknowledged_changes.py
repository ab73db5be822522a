"""A change the database applied on the primary but did not acknowledge as asked (on a replica set, a write concern
error: w:majority timed out, the primary stepped down) keeps its change number held, as a write whose answer was
lost does: it may still become visible to the majority reads of the feeds, and a feed that had moved past its
number meanwhile would never hand it to the patient's other phone.

FerretDB has no replica set and acknowledges whatever write concern it is sent, so the write raises pymongo's own
error for such an answer, and lands afterwards (as it becomes visible to majority reads)."""

from __future__ import annotations

import pytest
from pymongo.errors import WriteConcernError, WTimeoutError

from tests.patient.conftest import START
from tests.patient.test_sync_feeds import base, entry, follow

UNACKNOWLEDGED = [WTimeoutError("waiting for replication timed out", 64, {"errInfo": {"wtimeout": True}}),
                  WriteConcernError("Primary stepped down while waiting for replication", 189, {})]


@pytest.mark.parametrize("error", UNACKNOWLEDGED, ids=["timed-out", "stepped-down"])
def test_a_change_the_database_did_not_acknowledge_keeps_its_number_so_that_landing_late_it_is_still_read(
        client, world, services, clock, error):
    pid, headers = world["patient_a"].id, world["patient_a"].headers
    with pytest.raises(WriteConcernError), services.changes.stamp(pid, services.stores.pain_entries) as seq:
        raise error
    client.post(f"{base(world)}/pain-entries", json=entry(2), headers=headers)
    before, cursor = follow(client, world, "pain-entries")
    assert before == [] and int(cursor.split(".")[0]) < seq  # held at the unacknowledged write's number
    services.stores.pain_entries.add(pid, {"client_entry_id": "landed-late-1", "recorded_at": START, "nrs": 4},
                                     START, seq)
    clock.shift(services.settings.sync_settle.total_seconds() + 1)  # then given up, as a crashed writer's
    after, _ = follow(client, world, "pain-entries", cursor)
    assert [e["client_entry_id"] for e in after] == ["landed-late-1", "feed-entry-0002"]
