"""Scenarios of a patient's days, with the real parts (real bleak against the fake BlueZ, the real buffer,
uploader and API client, the real API on FerretDB) on a virtual timeline: units whose clocks reset (to each
epoch and to a plausible wrong date), units and gateways whose clocks are off either way, a gateway offline
for days, a unit moved between patients, a gateway that crashes mid-sync.

Each ends with every session stored exactly once, on the right patient, on the right local day, with the
right time quality, and the adherence figures and alerts recomputed.
"""

from __future__ import annotations

import dataclasses
import secrets
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from companion import create_app
from companion.services.container import Services
from companion.services.gateways import digest
from companion.settings import load_settings
from device_gateway.simulator.unit import EPOCH_2000
from tests.support.scenario import HomeGateway, Timeline, Unit, local_day
from tests.support.world import make_user

PLAN_MINUTES = 60  # two sessions of 30 minutes a day


@pytest.fixture
def timeline():
    return Timeline(timedelta(days=12))


@pytest.fixture
def services(settings_overrides, timeline):
    """The server's services on the timeline's clock (tokens and throttles keep the real one)."""
    svc = Services(load_settings(settings_overrides), clock=timeline.now)
    yield svc
    svc.close()


@pytest.fixture
def app(settings_overrides, services):
    return create_app(settings_overrides, services=services)


@pytest.fixture
def homes(tmp_path, api_server, services, timeline):
    """Open a home (a patient, their units bound, a plan, a paired gateway) at the timeline's now."""
    opened = []

    def open_home(client, key: str, zone: str, serials: list[str], **gateway) -> tuple[str, HomeGateway]:
        patient = make_user(client, services, key=key, role="patient", time_zone=zone)
        at = timeline.now()
        for serial in serials:
            services.gateways.bind_unit(patient.id, serial, "companion-tens", bound_at=at)
        start = at.astimezone(ZoneInfo(zone)).date()
        services.plans.prescribe(patient.id, {
            "tens": {"sessions_per_day": 2, "daily_minutes_target": None, "minutes_per_session": 30,
                     "programmes": [1], "intensity_min_ma": 10.0, "intensity_max_ma": 30.0, "start_date": start,
                     "end_date": None, "counts_towards_adherence": True},
            "medications": [], "mindfulness": None}, created_by="clinician-test", at=at)
        gateway_id, secret = paired(services, patient.id, key)
        home = HomeGateway(tmp_path / key, api_server.url, gateway_id, secret, timeline, serials, **gateway)
        opened.append(home)
        return patient.id, home

    yield open_home
    for home in opened:
        home.close()


def paired(services, patient_id: str, name: str) -> tuple[str, str]:
    """A gateway paired with the patient (pairing codes live on the real clock, so the test pairs directly)."""
    secret = secrets.token_urlsafe(16)
    gateway = services.stores.gateways.create(patient_id=patient_id, secret_hash=digest(secret), name=name)
    return gateway.id, secret


def stored(services, *serials: str) -> dict[str, dict]:
    return {d["_id"]: d for d in services.db.session_records.find({"device_serial": {"$in": list(serials)}})}


def assert_each_session_once_right(services, unit: Unit, patient_id: str, zone: str, quality: dict[int, str]):
    docs = stored(services, unit.serial)
    assert sorted(docs) == sorted(f"{unit.serial}:{s.seq}" for s in unit.sessions)
    for session in unit.sessions:
        doc = docs[f"{unit.serial}:{session.seq}"]
        assert doc["patient_id"] == patient_id, session
        assert doc["local_date"] == local_day(session.start, zone), (session, doc["started_at"])
        assert abs(doc["started_at"] - session.start) < timedelta(minutes=2), (session, doc["started_at"])
        assert doc["time_quality"] == quality.get(session.seq, "exact"), (session, doc["time_quality"],
                                                                          doc["time_basis"])
        assert not doc["held"] and doc["counts"], doc["flags"]
        earliest, latest = doc["started_earliest"], doc["started_latest"]
        assert earliest - timedelta(seconds=2) <= session.start <= latest + timedelta(seconds=2)


def covered_days(services, patient_id: str) -> dict[str, bool]:
    return {d["date"]: d["covered"] for d in services.db.adherence_days.find({"patient_id": patient_id})}


@pytest.mark.parametrize("reset_to", [60, EPOCH_2000 + 60, "wrong date"], ids=["1970", "2000", "wrong-date"])
def test_a_unit_clock_reset_between_two_syncs_loses_nothing_and_misplaces_nothing(
        client, services, timeline, homes, system_bus, reset_to):
    zone = "Europe/London"
    timeline.to(timeline.today_at(-6, 10, zone=zone))
    patient, home = homes(client, "reset", zone, ["CTU-R0001"])
    unit = Unit(timeline, "CTU-R0001", "C0:FF:EE:00:01:01")
    home.visit(unit)  # pairing: a first sync, offline (the gateway has no server time: it sets nothing)
    for day in (-5, -4, -3):
        unit.session_at(timeline.today_at(day, 8, zone=zone))
        if day == -4:
            plausible = (timeline.now() - timedelta(days=400)).timestamp()
            unit.reset_clock(timeline.today_at(day, 12, zone=zone), plausible if reset_to == "wrong date" else reset_to)
        unit.session_at(timeline.today_at(day, 19, zone=zone))
    timeline.to(timeline.today_at(-1, 20, zone=zone))
    home.visit(unit)  # the reset clock is read, the sessions pulled
    assert unit.fake.clock_sets == 0
    home.go_online()
    services.adherence_job.run()

    after_reset = {s.seq for s in unit.sessions if s.start > timeline.today_at(-4, 12, zone=zone)}
    assert_each_session_once_right(services, unit, patient, zone, {seq: "corrected" for seq in after_reset})
    docs = stored(services, unit.serial)
    if reset_to != "wrong date":
        assert all(docs[f"{unit.serial}:{seq}"]["device_started_at"].year in (1970, 2000) for seq in after_reset)
    covered = covered_days(services, patient)
    assert [covered[local_day(timeline.today_at(d, 12, zone=zone), zone)] for d in (-5, -4, -3)] == [True] * 3
    assert covered[local_day(timeline.today_at(-2, 12, zone=zone), zone)] is False
    # Online now, the gateway sets the unit's clock from the server's time.
    home.visit(unit)
    assert unit.fake.clock_sets == 1 and abs(unit.fake.now() - timeline.unit_time()) < 5


@pytest.mark.parametrize("unit_skew_h", [3, -3])
@pytest.mark.parametrize("gateway_skew_h", [5, -5])
@pytest.mark.parametrize("online_at_pairing", [False, True], ids=["offline", "online"])
def test_unit_and_gateway_clocks_off_either_way_put_every_session_on_its_day(
        client, services, timeline, homes, system_bus, unit_skew_h, gateway_skew_h, online_at_pairing):
    zone = "America/New_York"
    timeline.to(timeline.today_at(-3, 9, zone=zone))
    patient, home = homes(client, "skew", zone, ["CTU-S0001"], skew=timedelta(hours=gateway_skew_h))
    unit = Unit(timeline, "CTU-S0001", "C0:FF:EE:00:02:01")
    unit.fake.clock_offset_s = unit_skew_h * 3600
    if online_at_pairing:
        home.go_online()  # the gateway measures the server's time: its own clock is 5 hours off
    home.visit(unit)
    if online_at_pairing:
        assert unit.fake.clock_sets == 1  # set from the server's time, not the gateway's wall clock
        assert abs(unit.fake.now() - timeline.unit_time()) < 5
    else:
        assert unit.fake.clock_sets == 0
    # Sessions close to midnight: a clock off by hours would put them on the wrong day.
    for day in (-2, -1):
        unit.session_at(timeline.today_at(day, 22, 40, zone=zone))
        unit.session_at(timeline.today_at(day + 1, 1, 30, zone=zone))
    timeline.to(timeline.today_at(0, 6, zone=zone))
    home.visit(unit)
    home.go_online()
    services.adherence_job.run()

    quality = "exact" if online_at_pairing else "corrected"
    assert_each_session_once_right(services, unit, patient, zone, {s.seq: quality for s in unit.sessions})
    verdict = services.db.gateways.find_one({"_id": home.gateway_id})["clock"]
    assert verdict["vouched"] is False and abs(verdict["offset_s"] - gateway_skew_h * 3600) < 60
    syncs = list(services.db.unit_syncs.find({"serial": unit.serial}))
    assert syncs and all(s["anchor"] in ("monotonic", "vouched") for s in syncs)


def test_a_gateway_booted_offline_with_its_clock_at_1970_loses_no_session(
        client, services, timeline, homes, system_bus):
    # A power cut: the hub (no battery clock) boots at 1970 plus a few minutes, before the router is back.
    zone = "Europe/London"
    timeline.to(timeline.today_at(-3, 10, zone=zone))
    skew = datetime(1970, 1, 1, 0, 5, tzinfo=UTC) - timeline.now()
    patient, home = homes(client, "boot1970", zone, ["CTU-Z0001"], skew=skew)
    unit = Unit(timeline, "CTU-Z0001", "C0:FF:EE:00:02:01")
    unit.session_at(timeline.today_at(-3, 8, zone=zone))  # two hours before; the unit's clock is right
    home.visit(unit)  # pulled offline: no correction from a clock that lost its time
    home.skew = timedelta(0)  # the network is back, and the clock with it
    home.go_online()
    assert home.buffer.dead_letters() == []
    assert f"CTU-Z0001:{unit.sessions[0].seq}" in stored(services, "CTU-Z0001")


def test_a_gateway_offline_for_days_uploads_late_and_the_figures_and_alerts_follow(
        client, services, timeline, homes, system_bus):
    zone = "America/New_York"
    timeline.to(timeline.today_at(-8, 9, zone=zone))
    patient, home = homes(client, "late", zone, ["CTU-L0001"])
    unit = Unit(timeline, "CTU-L0001", "C0:FF:EE:00:03:01")
    home.go_online()
    home.visit(unit)
    for day in range(-7, 0):
        unit.session_at(timeline.today_at(day, 8, zone=zone))
        unit.session_at(timeline.today_at(day, 18, zone=zone))
        timeline.to(timeline.today_at(day, 21, zone=zone))
        home.visit(unit)  # the hub pulls and acknowledges every evening...
        if day < -4:
            home.go_online()  # ... but its network is gone from day -4 on
        timeline.to(timeline.today_at(day + 1, 0, 30, zone=zone))
        services.adherence_job.run()
    today = timeline.now().astimezone(ZoneInfo(zone)).date()
    alerts = list(services.db.alerts.find({"patient_id": patient, "kind": "low_adherence"}))
    assert len(alerts) == 1 and alerts[0]["resolved_at"] is None
    before = services.adherence.summary(patient)["tens"]["7"]
    assert before["pdc"] < 0.8

    timeline.to(timeline.today_at(0, 7, zone=zone))
    home.go_online()  # four days late
    services.adherence_job.run()

    assert_each_session_once_right(services, unit, patient, zone, {})
    alert = services.db.alerts.find_one({"_id": alerts[0]["_id"]})
    assert alert["resolved_at"] is not None and "arrived later" in alert["resolved_reason"]
    assert services.db.alerts.count_documents({"patient_id": patient, "resolved_at": None}) == 0
    summary = services.adherence.summary(patient)
    assert summary["period_end"] == (today - timedelta(days=1)).isoformat()
    assert summary["tens"]["7"]["pdc"] == 1.0
    streak = services.progress.streaks(patient, grace_days=0, days=30)
    assert streak["current"] == 7
    # The stored days equal a recomputation from the raw sessions.
    account = services.accounts.account(patient)
    for day in (today - timedelta(days=n) for n in range(1, 8)):
        snapshot = services.db.adherence_days.find_one({"_id": f"{patient}:{day.isoformat()}"})
        fresh = services.adherence.compute_day(account, day)
        assert {k: snapshot[k] for k in ("covered", "tens_minutes", "sessions_done")} == \
            {k: fresh[k] for k in ("covered", "tens_minutes", "sessions_done")}
        assert snapshot["tens_minutes"] == PLAN_MINUTES


def test_a_unit_moved_between_patients_leaves_each_session_with_whoever_wore_it(
        client, services, timeline, homes, system_bus):
    zone = "Europe/London"
    timeline.to(timeline.today_at(-6, 9, zone=zone))
    first, old_hub = homes(client, "first", zone, ["CTU-M0042"])
    unit = Unit(timeline, "CTU-M0042", "C0:FF:EE:00:04:01")
    old_hub.go_online()
    old_hub.visit(unit)
    for day in (-5, -4):
        unit.session_at(timeline.today_at(day, 9, zone=zone))
    timeline.to(timeline.today_at(-4, 20, zone=zone))
    old_hub.visit(unit)  # pulled and acknowledged; the old hub's network is down from here on
    unit.session_at(timeline.today_at(-3, 9, zone=zone))  # still the first patient's, never seen by the old hub
    moved_at = timeline.today_at(-2, 8, zone=zone)
    timeline.to(moved_at)
    # The clinic takes the unit back and says so then (a release with no time would hold the first patient's
    # last session, which their hub never saw, for the care team: tests/api/test_late_handover.py).
    services.gateways.release_unit(first, unit.serial, released_at=moved_at)
    second = make_user(client, services, key="second", role="patient", time_zone=zone)
    services.gateways.bind_unit(second.id, unit.serial, "companion-tens", bound_at=moved_at)
    gateway_id, secret = paired(services, second.id, "second")
    new_hub = HomeGateway(old_hub.state_dir.parent / "second", old_hub.api_url, gateway_id, secret, timeline,
                          [unit.serial])
    try:
        for day in (-2, -1):
            unit.session_at(timeline.today_at(day, 18, zone=zone))
        timeline.to(timeline.today_at(-1, 21, zone=zone))
        new_hub.go_online()
        new_hub.visit(unit)  # first contact: it holds the first patient's last session and the second's
        new_hub.go_online()
        timeline.to(timeline.today_at(0, 8, zone=zone))
        old_hub.go_online()  # the old hub's backlog for a unit that has since moved: accepted, not refused
        services.adherence_job.run()
        assert old_hub.buffer.dead_letters() == [] and new_hub.buffer.dead_letters() == []
    finally:
        new_hub.close()

    docs = stored(services, unit.serial)
    assert sorted(docs) == sorted(f"{unit.serial}:{s.seq}" for s in unit.sessions)
    for session in unit.sessions:
        doc = docs[f"{unit.serial}:{session.seq}"]
        owner = first if session.start < moved_at else second.id
        assert doc["patient_id"] == owner, session
        assert doc["local_date"] == local_day(session.start, zone) and not doc["held"]
    covered = covered_days(services, first)
    assert local_day(timeline.today_at(-3, 12, zone=zone), zone) in covered


def test_a_gateway_that_crashes_mid_sync_and_mid_upload_loses_and_doubles_nothing(
        client, services, timeline, homes, system_bus, api_server):
    zone = "Asia/Kolkata"
    timeline.to(timeline.today_at(-4, 7, zone=zone))
    patient, home = homes(client, "crash", zone, ["CTU-C0009"])
    unit = Unit(timeline, "CTU-C0009", "C0:FF:EE:00:05:01")
    home.go_online()
    home.visit(unit)
    for day in (-3, -2, -1):
        for hour in (7, 12, 16, 21):
            unit.session_at(timeline.today_at(day, hour, zone=zone), minutes=25)
    timeline.to(timeline.today_at(-1, 23, zone=zone))
    unit.fake.drop_link_after = 5
    home.link.max_attempts = 1
    [partial] = home.visit(unit)
    assert not partial.completed and 0 < partial.stored < 12
    home.crash_and_restart()  # the process dies after the link did; it starts again from the same buffer
    home.visit(unit)
    home.uploader.batch_size = 4
    api_server.stop()  # the API goes away mid-upload
    progress = home.uploader.drain(max_failures=2)
    assert progress.sent == 0
    api_server.start()
    home.crash_and_restart()
    home.go_online()
    services.adherence_job.run()

    assert_each_session_once_right(services, unit, patient, zone, {})
    covered = covered_days(services, patient)
    assert all(covered[local_day(timeline.today_at(d, 12, zone=zone), zone)] for d in (-3, -2, -1))


def test_a_gateway_rebooted_while_offline_gives_honest_bounds_and_holds_what_it_cannot_place(
        client, services, timeline, homes, system_bus):
    zone = "UTC"
    timeline.to(timeline.today_at(-5, 9))
    patient, home = homes(client, "reboot", zone, ["CTU-B0007"])
    unit = Unit(timeline, "CTU-B0007", "C0:FF:EE:00:06:01")
    home.visit(unit)  # offline from the start: nothing ties this boot's clock to the server's
    unit.session_at(timeline.today_at(-4, 10))
    timeline.to(timeline.today_at(-4, 12))
    home.visit(unit)
    home.crash_and_restart(reboot=True)  # the monotonic readings of the first boot mean nothing now
    unit.session_at(timeline.today_at(-2, 10))
    timeline.to(timeline.today_at(-1, 12))
    home.visit(unit)
    home.go_online()
    services.adherence_job.run()

    docs = stored(services, unit.serial)
    assert len(docs) == 2
    for session in unit.sessions:
        doc = docs[f"{unit.serial}:{session.seq}"]
        earliest, latest = doc["started_earliest"], doc["started_latest"]
        assert (earliest is None or earliest <= session.start) and (latest is None or session.start <= latest)
    last = docs[f"{unit.serial}:{unit.sessions[-1].seq}"]
    assert last["time_quality"] == "exact" and last["local_date"] == local_day(unit.sessions[-1].start, zone)
    first_session = docs[f"{unit.serial}:{unit.sessions[0].seq}"]
    if first_session["held"]:
        assert [f["flag"] for f in first_session["flags"]] == ["time_uncertain"]


def test_a_record_whose_clock_reading_makes_no_sense_is_placed_by_its_sequence_never_dead_lettered(
        client, services, timeline, homes, system_bus):
    zone = "UTC"
    timeline.to(timeline.today_at(-1, 9))
    patient, home = homes(client, "nonsense", zone, ["CTU-F0001"])
    unit = Unit(timeline, "CTU-F0001", "C0:FF:EE:00:07:01")
    home.visit(unit)
    unit.session_at(timeline.today_at(-1, 10))
    # The next record's unit clock says it starts a year from now (a firmware fault), between two sane ones.
    unit.fake.highest_seq += 1
    odd = dataclasses.replace(unit.fake.records[-1], seq=unit.fake.highest_seq,
                              device_started_at=int((datetime.now(UTC) + timedelta(days=365)).timestamp()))
    unit.fake.records.append(odd)
    unit.session_at(timeline.today_at(-1, 11))
    timeline.to(timeline.today_at(-1, 12))
    home.visit(unit)
    home.go_online()

    docs = stored(services, unit.serial)
    assert len(docs) == 3 and home.buffer.dead_letters() == []
    placed = docs[f"{unit.serial}:{odd.seq}"]
    assert placed["time_quality"] == "estimated" and placed["unit_offset_s"] is None  # placed by its neighbours
    assert placed["started_earliest"] >= timeline.today_at(-1, 10) and placed["started_latest"] <= timeline.today_at(-1, 11)
    assert placed["device_started_at"].year == datetime.now(UTC).year + 1  # the raw reading is kept beside
    assert placed["local_date"] == timeline.today_at(-1, 10).date().isoformat() and not placed["held"]
