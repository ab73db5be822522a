"""The clinician pages: sign-in (password, then TOTP when enrolled), the session cookie and its limits,
CSRF, access (404 outside the team), audit, and empty states."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pyotp
import pytest
import time_machine

from companion.store.web_sessions import ABSOLUTE_LIMIT, WebSessions
from tests.support.world import PASSWORD, make_user


def sign_in(client, email: str, password: str = PASSWORD, *, follow: bool = False):
    client.get("/clinician/login")
    token = client.get_cookie("companion_login_csrf", path="/clinician/").value
    return client.post("/clinician/login", data={"email": email, "password": password, "csrf_token": token},
                       follow_redirects=follow)


def page_csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_signing_in_sets_a_strict_http_only_session_cookie(client, world):
    response = sign_in(client, world["clinician_team"].email)
    assert response.status_code == 303 and response.headers["Location"].endswith("/clinician/")
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("companion_web="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # development over plain http; production sets Secure and __Host-
    panel = client.get("/clinician/")
    assert panel.status_code == 200 and "Patient A" in panel.get_data(as_text=True)
    assert panel.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in panel.headers["Content-Security-Policy"]


def test_pages_without_a_session_send_the_browser_to_sign_in(client, world):
    response = client.get(f"/clinician/patients/{world['patient_a'].id}")
    assert response.status_code == 302 and "/clinician/login" in response.headers["Location"]


def test_a_wrong_password_or_a_missing_form_token_does_not_sign_in(client, world):
    assert sign_in(client, world["clinician_team"].email, "wrong password").status_code == 401
    no_token = client.post("/clinician/login", data={"email": world["clinician_team"].email, "password": PASSWORD})
    assert no_token.status_code == 403
    assert client.get("/clinician/").status_code == 302


def test_only_clinicians_may_sign_in_to_the_dashboard(client, world):
    response = sign_in(client, world["patient_a"].email)
    assert response.status_code == 403 and "for clinicians" in response.get_data(as_text=True)


def test_an_enrolled_clinician_needs_a_totp_code_after_the_password(client, world, services):
    secret = pyotp.random_base32()
    services.db.users.update_one({"_id": world["clinician_team"].id}, {"$set": {"mfa": {"enabled": True, "secret": secret}}})
    response = sign_in(client, world["clinician_team"].email)
    assert response.status_code == 303 and "/clinician/login/code" in response.headers["Location"]
    assert client.get("/clinician/").status_code == 302  # the password alone opens nothing
    form = client.get("/clinician/login/code").get_data(as_text=True)
    wrong = client.post("/clinician/login/code", data={"code": "000000", "csrf_token": page_csrf(form)})
    assert wrong.status_code == 401
    code = pyotp.TOTP(secret).now()
    ok = client.post("/clinician/login/code", data={"code": code, "csrf_token": page_csrf(form)})
    assert ok.status_code == 303
    assert client.get("/clinician/").status_code == 200


def test_the_session_ends_after_15_idle_minutes(client, world):
    with time_machine.travel(datetime.now(UTC), tick=False) as clock:
        sign_in(client, world["clinician_team"].email)
        clock.shift(timedelta(minutes=14))
        assert client.get("/clinician/").status_code == 200
        clock.shift(timedelta(minutes=14))
        assert client.get("/clinician/").status_code == 200  # activity renewed the idle limit
        clock.shift(timedelta(minutes=15, seconds=1))
        assert client.get("/clinician/").status_code == 302


def test_the_session_ends_after_12_hours_however_active(db):
    sessions = WebSessions(db)
    start = datetime.now(UTC)
    token, session = sessions.start("someone", "clinician", stage="full", at=start)
    sessions.touch(session, start + ABSOLUTE_LIMIT - timedelta(minutes=1))
    assert sessions.live(token, start + ABSOLUTE_LIMIT - timedelta(seconds=1)) is not None
    assert sessions.live(token, start + ABSOLUTE_LIMIT) is None


def test_signing_out_ends_the_session_on_the_server(client, world):
    sign_in(client, world["clinician_team"].email)
    html = client.get("/clinician/").get_data(as_text=True)
    assert client.post("/clinician/logout", data={"csrf_token": page_csrf(html)}).status_code == 303
    assert client.get("/clinician/").status_code == 302


def test_acknowledging_from_the_page_needs_the_form_token(client, world, seed, db):
    alert = seed.alert(world["patient_a"].id, datetime.now(UTC))
    sign_in(client, world["clinician_team"].email)
    url = f"/clinician/patients/{world['patient_a'].id}/alerts/{alert['_id']}/acknowledge"
    assert client.post(url, data={}).status_code == 403
    html = client.get(f"/clinician/patients/{world['patient_a'].id}").get_data(as_text=True)
    assert client.post(url, data={"csrf_token": page_csrf(html)}).status_code == 303
    assert db.alerts.find_one({"_id": alert["_id"]})["acknowledged_by"] == world["clinician_team"].id


def test_a_note_from_the_page_with_a_nul_character_is_refused_and_stores_nothing(client, world, db):
    """The API's schema refuses a NUL in a person's text; the page's form reaches the service as it was sent."""
    sign_in(client, world["clinician_team"].email)
    url = f"/clinician/patients/{world['patient_a'].id}"
    csrf = page_csrf(client.get(url).get_data(as_text=True))
    refused = client.post(f"{url}/notes", data={"csrf_token": csrf, "text": "call\x00back"})
    assert refused.status_code == 422 and "NUL" in refused.get_data(as_text=True)
    assert db.clinical_notes.count_documents({}) == 0
    assert client.post(f"{url}/notes", data={"csrf_token": csrf, "text": "call back"}).status_code == 303
    assert db.clinical_notes.count_documents({}) == 1


def test_a_clinician_outside_the_team_gets_404_on_every_patient_page(client, world, seed):
    alert = seed.alert(world["patient_a"].id, datetime.now(UTC))
    sign_in(client, world["clinician_other"].email)
    html = client.get("/clinician/").get_data(as_text=True)
    assert "Patient A" not in html
    a = world["patient_a"].id
    for path in (f"/clinician/patients/{a}", f"/clinician/patients/{a}/export.csv",
                 f"/clinician/patients/{a}/export.fhir.json"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Patient A" not in response.get_data(as_text=True)
    ack = client.post(f"/clinician/patients/{a}/alerts/{alert['_id']}/acknowledge", data={"csrf_token": page_csrf(html)})
    assert ack.status_code == 404


def test_every_patient_page_view_is_audited(client, world, db):
    sign_in(client, world["clinician_team"].email)
    assert client.get(f"/clinician/patients/{world['patient_a'].id}").status_code == 200
    event = db.audit_events.find_one({"patient_ids": world["patient_a"].id, "route": "/clinician/patients/<patient_id>"})
    assert (event["actor_id"], event["action"], event["outcome"]) == (world["clinician_team"].id, "R", "success")


def test_a_patient_without_data_gets_empty_states_that_say_what_is_missing(client, world):
    sign_in(client, world["clinician_team"].email)
    html = client.get(f"/clinician/patients/{world['patient_a'].id}").get_data(as_text=True)
    for missing in ("No adherence has been computed", "No TENS sessions in the last 30 days",
                    "No pain ratings in the last 30 days", "No therapy plan has been written", "No open alerts"):
        assert missing in html


def test_a_clinician_on_no_team_is_told_why_the_panel_is_empty(client, services):
    loner = make_user(client, services, key="clinician_loner", role="clinician")
    sign_in(client, loner.email)
    assert "You are not on a care team yet" in client.get("/clinician/").get_data(as_text=True)


def test_a_page_past_the_last_says_so_and_leads_back_to_the_first(client, world):
    sign_in(client, world["clinician_team"].email)
    html = client.get("/clinician/?offset=500").get_data(as_text=True)
    assert "No patients on this page" in html and "You have 1 patient" in html
    assert "No patients enrolled yet" not in html


def test_the_patient_page_draws_charts_with_axes_and_units(client, world, scripted_a):
    sign_in(client, world["clinician_team"].email)
    html = client.get(f"/clinician/patients/{world['patient_a'].id}").get_data(as_text=True)
    assert html.count('class="chart"') == 2 and 'class="heatmap"' in html
    assert "TENS minutes per day" in html and "pain NRS (0-10)" in html and "date (patient" in html
    assert "Battery below 15%" in html


def test_the_patient_page_shows_how_sure_session_times_are_and_lets_the_clinician_decide_on_held_ones(
        client, world, services):
    from companion.api.ingestion import SessionRecordSchema
    from tests.support.records import session_record

    a, serial = world["patient_a"].id, world.a_device
    day_ago = datetime.now(UTC) - timedelta(days=1)
    records = [session_record(serial, 1, started_at=day_ago),
               session_record(serial, 2, started_at=day_ago + timedelta(hours=3), clock_status="skewed", offset_s=7200.0),
               session_record(serial, 3, started_at=day_ago + timedelta(hours=6), duration_s=0)]
    services.ingestion.receive(None, a, [SessionRecordSchema().load(r) for r in records], {serial})
    sign_in(client, world["clinician_team"].email)
    page = client.get(f"/clinician/patients/{a}").get_data(as_text=True)
    assert "2 exact" in page and "1 corrected" in page and "Held back from the figures" in page
    assert "duration must be more than 0" in page and f"{serial}:3" in page
    refused = client.post(f"/clinician/patients/{a}/sessions/{serial}:3/resolve",
                          data={"csrf_token": page_csrf(page), "action": "exclude", "note": "odd\x00one"})
    assert refused.status_code == 422 and "NUL" in refused.get_data(as_text=True)
    assert services.db.session_records.find_one({"_id": f"{serial}:3"}).get("resolution") is None
    answer = client.post(f"/clinician/patients/{a}/sessions/{serial}:3/resolve",
                         data={"csrf_token": page_csrf(page), "action": "exclude"})
    assert answer.status_code == 303
    decided = services.db.session_records.find_one({"_id": f"{serial}:3"})
    assert decided["resolution"]["action"] == "exclude" and decided["resolution"]["by"] == world["clinician_team"].id


def test_the_patient_page_shows_the_sessions_kept_apart_under_a_number_already_used(client, world):
    from tests.support.records import session_record

    serial, gateway = world.a_device, world["gateway_a"].headers
    noon = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    first = session_record(serial, 1, started_at=noon - timedelta(days=7))
    assert client.post("/api/v1/gateway/session-records", json={"records": [first]}, headers=gateway).status_code == 200
    # The unit is reflashed, its counter starts again: yesterday's session comes as number 1, other content.
    again = session_record(serial, 1, started_at=noon - timedelta(days=1), duration_s=2400)
    answer = client.post("/api/v1/gateway/session-records", json={"records": [again]}, headers=gateway)
    assert answer.json["results"][0]["flags"] == ["conflicting_copy"]
    sign_in(client, world["clinician_team"].email)
    page = client.get(f"/clinician/patients/{world['patient_a'].id}").get_data(as_text=True)
    assert "Arrived under a number already used" in page and f"{serial}:1</strong>, 40 min" in page


@pytest.mark.parametrize("uploads", ["one each", "all in one"])
def test_the_patient_page_lists_the_latest_copies_kept_apart_and_says_how_many_there_are(client, world, db,
                                                                                          uploads):
    """A reflashed unit whose new counter conflicts session after session: the latest 50 are listed (not the
    first 50 by id, where 10 sorts before 2; in one upload, they share their receipt time), with the count of
    all."""
    serial, pid = world.a_device, world["patient_a"].id
    received = datetime.now(UTC) - timedelta(days=2)
    db.session_conflicts.insert_many([
        {"_id": f"{serial}:{n}:h{n}", "record_id": f"{serial}:{n}", "device_seq": n, "delivered_for": pid,
         "first_patient_id": pid, "duration_s": 1800, "started_at": received,
         "server_received_at": received + (timedelta(minutes=n) if uploads == "one each" else timedelta(0))}
        for n in range(1, 61)])
    sign_in(client, world["clinician_team"].email)
    page = client.get(f"/clinician/patients/{pid}").get_data(as_text=True)
    listed = re.findall(rf"<strong>{serial}:(\d+)</strong>", page)
    assert listed == [str(n) for n in range(11, 61)] and "The latest 50 of 60 are listed." in page


def test_a_time_from_before_the_patient_moved_is_shown_on_the_clock_of_where_they_were(client, world):
    patient = world["patient_a"]
    base = f"/api/v1/patients/{patient.id}"
    assert client.patch(base, headers=patient.headers, json={"time_zone": "America/New_York"}).status_code == 200
    rated = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)  # after the move to New York
    assert client.post(f"{base}/pain-entries", headers=patient.headers, json={
        "client_entry_id": "before-the-flight", "nrs": 6, "recorded_at": rated.isoformat()}).status_code == 201
    time.sleep(2)  # the flight to Tokyo after the rating (a move takes effect when it is made)
    assert client.patch(base, headers=patient.headers, json={"time_zone": "Asia/Tokyo"}).status_code == 200
    sign_in(client, world["clinician_team"].email)
    page = client.get(f"/clinician/patients/{patient.id}").get_data(as_text=True)
    in_new_york = rated.astimezone(ZoneInfo("America/New_York")).strftime("%d %b %Y %H:%M")
    in_tokyo = rated.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%d %b %Y %H:%M")
    assert f"{in_new_york} (America/New_York)" in page and in_tokyo not in page


def test_every_chart_has_a_table_with_its_figures(client, world, scripted_a):
    sign_in(client, world["clinician_team"].email)
    html = client.get(f"/clinician/patients/{world['patient_a'].id}").get_data(as_text=True)
    tables = {name: re.search(rf'<details class="chart-table" id="{name}-table">(.*?)</details>', html, re.S).group(1)
              for name in ("adherence", "tens", "pain")}
    rows = {name: re.findall(r"<tr><th scope=\"row\">(.*?)</th>(.*?)</tr>", table) for name, table in tables.items()}
    assert (len(rows["adherence"]), len(rows["tens"]), len(rows["pain"])) == (30, 30, 8)
    two_days_ago = str(datetime.now(UTC).date() - timedelta(days=2))
    tens = dict(rows["tens"])[two_days_ago]
    assert re.findall(r'<td class="num">([^<]*)</td>', tens) == ["60", "2", "40"]  # minutes, sessions, target
    assert "partly done (30% TENS)" in dict(rows["adherence"])[two_days_ago]
    assert [cells.count("before the session") for _, cells in rows["pain"]].count(1) == 3


def test_the_diary_shows_the_pain_location_and_a_bpis_scores(client, world, seed):
    a = world["patient_a"].id
    seed.pain(a, datetime.now(UTC) - timedelta(hours=2), 6, location="left knee",
              bpi={"worst": 8, "least": 3, "average": 5, "now": 6,
                   "interference": {"general_activity": 6, "mood": 5, "sleep": 7, "enjoyment_of_life": 4}})
    seed.pain(a, datetime.now(UTC) - timedelta(hours=3), 4, bpi={"worst": 4, "least": 2, "average": 3, "now": 3})
    sign_in(client, world["clinician_team"].email)
    html = client.get(f"/clinician/patients/{a}").get_data(as_text=True)
    diary = re.search(r'<ul class="diary">(.*?)</ul>', html, re.S).group(1)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", diary))
    assert "NRS 6 · location: left knee · walking" in text
    assert "Brief Pain Inventory: severity 5.5 , interference 5.5 worst 8, least 3, average 5, now 6" in text
    assert "severity 3.0 , interference not scored (fewer than 4 of 7 items answered)" in text


def test_sorting_is_announced_on_the_column_header_and_each_navigation_has_its_own_name(client, world, seed):
    seed.enrol(world.team_id, seed.patient("Rosa Quiet"))
    sign_in(client, world["clinician_team"].email)
    html = client.get("/clinician/?sort=pdc_7&order=desc").get_data(as_text=True)
    assert re.search(r'<th scope="col" class="num" aria-sort="descending"><a [^>]*class="sorted">PDC 7 d</a></th>', html)
    assert not re.search(r"<a [^>]*aria-sort", html)
    assert 'aria-sort="other"' in client.get("/clinician/").get_data(as_text=True)  # ordered by need
    navs = re.findall(r"<nav\b[^>]*>", html)
    labels = [re.search(r'aria-label="([^"]+)"', nav).group(1) for nav in navs]
    assert len(navs) == 2 and len(set(labels)) == 2


def test_the_session_time_counts_are_of_the_days_shown(client, world, seed, db):
    """"In the last 14 days" counted the sessions of the day before the 14 too (read with a day's margin for the
    time zones, never dropped), which the page's TENS figures leave out."""
    pid = world["patient_a"].id
    db.users.update_one({"_id": pid}, {"$set": {"time_zone": "UTC", "time_zone_history": []}})
    first = datetime.now(UTC).date() - timedelta(days=13)
    before = seed.session(pid, datetime.combine(first - timedelta(days=1), datetime.min.time(), UTC)
                          + timedelta(hours=12))
    db.session_records.update_one({"_id": before["_id"]}, {"$set": {"time_quality": "corrected"}})
    seed.session(pid, datetime.combine(first, datetime.min.time(), UTC) + timedelta(minutes=30))
    sign_in(client, world["clinician_team"].email)
    page = client.get(f"/clinician/patients/{pid}?days=14").get_data(as_text=True)
    assert "In the last 14 days: 1 exact" in page and " 0 corrected" in page


def _held_in_the_future(db, seed, world) -> tuple[dict, datetime]:
    """A session its unit placed a year ahead (its clock), held; its record reached the server an hour ago."""
    received = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    session = seed.session(world["patient_a"].id, received + timedelta(days=400), serial=world.a_device)
    db.session_records.update_one({"_id": session["_id"]}, {"$set": {
        "held": True, "counts": False, "server_received_at": received,
        "flags": [{"flag": "future", "reason": "starts more than 5 minutes after the server received it"}]}})
    return session, received


def _count_at(client, world, page: str, session: dict, typed: str):
    return client.post(f"/clinician/patients/{world['patient_a'].id}/sessions/{session['_id']}/resolve",
                       data={"csrf_token": page_csrf(page), "action": "count", "started_at": typed})


def _on_london_clock(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo("Europe/London")).strftime("%Y-%m-%dT%H:%M")


def test_a_held_session_placed_in_the_future_is_counted_at_the_start_given_on_the_page(client, world, seed, db):
    """"Count it" answered 422 "give the time it started", and the page had no field to give it in."""
    session, received = _held_in_the_future(db, seed, world)
    seed.session(world["patient_a"].id, received - timedelta(days=1), serial=world.a_device)  # held, time right
    db.session_records.update_many({"started_at": received - timedelta(days=1)}, {"$set": {"held": True}})
    sign_in(client, world["clinician_team"].email)
    page = client.get(f"/clinician/patients/{world['patient_a'].id}").get_data(as_text=True)
    assert page.count('<input type="datetime-local" name="started_at" required') == 1  # only where it is needed
    assert "When it started (the patient's clock, Europe/London)" in page
    started = received - timedelta(hours=3)
    assert _count_at(client, world, page, session, _on_london_clock(started)).status_code == 303
    counted = db.session_records.find_one({"_id": session["_id"]})
    assert counted["started_at"] == started and counted["resolution"]["started_at"] == started
    assert counted["resolution"]["by"] == world["clinician_team"].id


def test_a_start_from_the_page_that_is_no_time_or_after_the_record_arrived_is_refused_on_the_page(
        client, world, seed, db):
    session, received = _held_in_the_future(db, seed, world)
    sign_in(client, world["clinician_team"].email)
    page = client.get(f"/clinician/patients/{world['patient_a'].id}").get_data(as_text=True)
    for typed, says in (("yesterday at nine", "as a date and a time on the patient&#39;s clock (Europe/London)"),
                        ("0001-01-01T00:30", "as a date and a time"),
                        (_on_london_clock(received + timedelta(minutes=30)), "after its record reached the server")):
        answer = _count_at(client, world, page, session, typed)
        text = answer.get_data(as_text=True)
        assert answer.status_code == 422 and says in text and "Back to the patient's page" in text, typed
    assert db.session_records.find_one({"_id": session["_id"]}).get("resolution") is None


def test_a_start_from_the_page_in_the_hour_the_clocks_skip_is_read_as_the_end_of_the_gap(client, world, seed, db):
    session, received = _held_in_the_future(db, seed, world)
    year = received.year if received.month > 4 else received.year - 1
    end_of_march = datetime(year, 3, 31, tzinfo=UTC)
    change = end_of_march - timedelta(days=(end_of_march.weekday() - 6) % 7)  # the last Sunday: 01:00 -> 02:00
    sign_in(client, world["clinician_team"].email)
    page = client.get(f"/clinician/patients/{world['patient_a'].id}").get_data(as_text=True)
    assert _count_at(client, world, page, session, f"{change:%Y-%m-%d}T01:30").status_code == 303
    assert db.session_records.find_one({"_id": session["_id"]})["started_at"] == change.replace(hour=1)


def test_a_closed_patient_is_shown_closed_on_the_panel_and_their_page_offers_only_what_is_still_allowed(
        client, world, seed, db):
    """A patient who closed their account stays on the care team's panel (the record is kept for its retention):
    the panel says since when, their revoked gateway's silence does not make them 'need attention' for ten years,
    and their page says the record is closed and offers no note form (a note is refused, 403, and its text would
    be lost), while an open alert can still be acknowledged."""
    a = world["patient_a"]
    seed.device(a.id, "CTU-CLOSED", last_sync_at=datetime.now(UTC) - timedelta(days=3))
    seed.alert(a.id, datetime.now(UTC) - timedelta(days=1))
    assert client.post(f"/api/v1/patients/{a.id}/closure", headers=a.headers,
                       json={"current_password": PASSWORD, "confirm": True}).status_code == 200
    closed_on = datetime.now(ZoneInfo("Europe/London")).strftime("%d %b %Y")  # (closed a moment ago, A's zone)
    sign_in(client, world["clinician_team"].email)
    row = re.search(r"Patient A.*?</tr>", client.get("/clinician/").get_data(as_text=True), re.S).group(0)
    assert f"Account closed on {closed_on}" in row and "no device sync" not in row and "1 open alert" in row
    page = client.get(f"/clinician/patients/{a.id}").get_data(as_text=True)
    assert f"Account closed on {closed_on}" in page
    assert 'name="text"' not in page and "No new note can be added (the patient closed their account" in page
    assert ">Acknowledge" in page
    refused = client.post(f"/clinician/patients/{a.id}/notes", data={"csrf_token": page_csrf(page), "text": "rang"})
    assert refused.status_code == 403 and db.clinical_notes.count_documents({}) == 0
    assert '<pre class="kept">rang</pre>' in refused.get_data(as_text=True)  # (a form shown before the closure)
    alert_id = db.alerts.find_one({"patient_id": a.id})["_id"]
    acknowledged = client.post(f"/clinician/patients/{a.id}/alerts/{alert_id}/acknowledge",
                               data={"csrf_token": page_csrf(page)})
    assert acknowledged.status_code == 303
    attention = client.get("/clinician/?needs_attention=true").get_data(as_text=True)
    assert "Patient A" not in attention


def test_a_deactivated_patient_is_shown_deactivated_and_still_takes_notes(client, world, services):
    a = world["patient_a"].id
    services.lifecycle.deactivate(a, by=world["clinician_team"].id, reason="lost phone, account suspended")
    sign_in(client, world["clinician_team"].email)
    row = re.search(r"Patient A.*?</tr>", client.get("/clinician/").get_data(as_text=True), re.S).group(0)
    assert "Account deactivated" in row
    page = client.get(f"/clinician/patients/{a}").get_data(as_text=True)
    assert "Account deactivated" in page and 'name="text"' in page  # reversible: the care goes on


def _last_sync_cell(client) -> str:
    row = re.search(r"Patient A.*?</tr>", client.get("/clinician/").get_data(as_text=True), re.S).group(0)
    return re.sub(r"<[^>]+>", "", re.findall(r'<td class="num">(.*?)</td>', row, re.S)[-1])


def test_the_panel_says_how_long_ago_a_unit_synced_as_days_since_sync_counts_it_never_today_for_yesterday(
        client, world, seed, db):
    """days_since_sync counts whole 24-hour periods (as the API documents it): 0 for a sync late yesterday, which
    the panel used to print as 'today'. Under a day it says so (not the hours: a row is exact to the day, see
    test_status_reports_that_change_nothing_shown_leave_the_row_unmarked); from 24 hours on, the days."""
    a = world["patient_a"].id
    db.users.update_one({"_id": a}, {"$set": {"time_zone": "UTC", "time_zone_history": []}})
    late_yesterday = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), UTC) - timedelta(seconds=1)
    seed.device(a, "CTU-YDAY", last_sync_at=late_yesterday)
    with time_machine.travel(late_yesterday + timedelta(minutes=30), tick=False) as clock:
        sign_in(client, world["clinician_team"].email)
        assert _last_sync_cell(client) == "under 1 d ago"
        clock.shift(timedelta(hours=23, minutes=29, seconds=59))  # a second short of 24 h after the sync
        sign_in(client, world["clinician_team"].email)
        assert _last_sync_cell(client) == "under 1 d ago"
        clock.shift(timedelta(seconds=2))  # 24 h and a second after the sync
        sign_in(client, world["clinician_team"].email)
        assert _last_sync_cell(client) == "1 d ago"
    api = client.get("/api/v1/clinician/panel", headers=world["clinician_team"].headers).json["items"]
    assert [r["days_since_sync"] for r in api if r["patient_id"] == a] == [0]


def _note_form(page: str) -> dict:
    return {"csrf_token": page_csrf(page), "form_key": re.search(r'name="form_key" value="([^"]+)"', page).group(1)}


def test_a_note_form_saved_twice_stores_one_note_and_a_new_form_another(client, world, db):
    """A double click on 'Save note', or a resubmission after a slow answer, posts the same form twice; notes are
    insert-only (never edited or deleted), so a duplicate would stay in the clinical record for good. Each form
    shown carries a one-time key: its second submission answers as the first did and stores nothing."""
    a = world["patient_a"].id
    sign_in(client, world["clinician_team"].email)
    page = client.get(f"/clinician/patients/{a}").get_data(as_text=True)
    form = {**_note_form(page), "text": "Discussed stopping paracetamol."}
    first = client.post(f"/clinician/patients/{a}/notes", data=form)
    again = client.post(f"/clinician/patients/{a}/notes", data=form)
    assert first.status_code == again.status_code == 303 and again.location == first.location
    assert db.clinical_notes.count_documents({"patient_id": a}) == 1
    # The same form sent back with other text is another note; a new form with the same text is one too.
    assert client.post(f"/clinician/patients/{a}/notes", data={**form, "text": "Rang again."}).status_code == 303
    page = client.get(f"/clinician/patients/{a}").get_data(as_text=True)
    assert _note_form(page)["form_key"] != form["form_key"]
    client.post(f"/clinician/patients/{a}/notes", data={**_note_form(page), "text": "Discussed stopping paracetamol."})
    assert sorted(n["text"] for n in db.clinical_notes.find({"patient_id": a})) == [
        "Discussed stopping paracetamol.", "Discussed stopping paracetamol.", "Rang again."]


def test_a_note_within_the_forms_limit_is_saved_though_the_browser_sends_its_line_breaks_as_crlf(client, world, db):
    """The textarea's maxlength=5000 counts a line break as one character; a browser submits it as CRLF, so a
    note the form let through reached the service 50 characters longer and was refused."""
    a = world["patient_a"].id
    sign_in(client, world["clinician_team"].email)
    page = client.get(f"/clinician/patients/{a}").get_data(as_text=True)
    assert 'maxlength="5000"' in page
    typed = "\n".join(["x" * 99] * 50) + "y"  # 5000 characters as the form counts them (5049 as sent)
    answer = client.post(f"/clinician/patients/{a}/notes", data={**_note_form(page), "text": typed.replace("\n", "\r\n")})
    assert answer.status_code == 303
    assert db.clinical_notes.find_one({"patient_id": a})["text"] == typed  # kept with LF, as typed
    old_mac = client.post(f"/clinician/patients/{a}/notes", data={**_note_form(page), "text": "rang\rno answer"})
    assert old_mac.status_code == 303 and db.clinical_notes.count_documents({"text": "rang\nno answer"}) == 1


def test_a_refused_note_comes_back_in_its_field_with_why_tied_to_it(client, world, db):
    """A note the service refuses (too long, blank, a NUL) answers 422 with the patient's page, the text as typed
    in the form and the reason announced and tied to the field, not an error page that loses the text."""
    a = world["patient_a"].id
    sign_in(client, world["clinician_team"].email)
    page = client.get(f"/clinician/patients/{a}").get_data(as_text=True)
    too_long = "A long note. " * 385  # 5005 characters
    answer = client.post(f"/clinician/patients/{a}/notes", data={**_note_form(page), "text": too_long})
    html = answer.get_data(as_text=True)
    assert answer.status_code == 422 and db.clinical_notes.count_documents({}) == 0
    field = re.search(r"<textarea[^>]*>(.*?)</textarea>", html, re.S)
    assert field.group(1) == too_long and 'aria-describedby="note-error"' in field.group(0)
    assert 'aria-invalid="true"' in field.group(0)
    error = re.search(r'<p[^>]*id="note-error"[^>]*>(.*?)</p>', html, re.S)
    assert 'role="alert"' in error.group(0) and "between 1 and 5000 characters" in error.group(1)
    assert "Adherence calendar" in html and 'name="form_key"' in html  # the whole page, the form ready again
    assert db.audit_events.find_one({"action": "R", "resource_type": "patient", "patient_ids": a, "status": 422})
    blank = client.post(f"/clinician/patients/{a}/notes", data={**_note_form(page), "text": " \r\n "})
    assert blank.status_code == 422 and 'id="note-error"' in blank.get_data(as_text=True)


def _button_names(html: str) -> list[str]:
    """Each button's accessible name as a screen reader reads it (its text content, hidden text included)."""
    return [" ".join(re.sub(r"<[^>]+>", "", b).split()) for b in re.findall(r"<button[^>]*>(.*?)</button>", html, re.S)]


def test_each_acknowledge_count_and_exclude_button_names_the_alert_or_session_it_acts_on(client, world, seed,
                                                                                          services):
    """A screen reader's list of a page's buttons read 'Acknowledge, Acknowledge, Count it, Exclude it, Count it,
    ...': each now says which alert or session it acts on (visually hidden text after the visible label, so that
    the name begins with what is seen, WCAG 2.5.3)."""
    from companion.api.ingestion import SessionRecordSchema
    from tests.support.records import session_record

    a, serial = world["patient_a"].id, world.a_device
    seed.alert(a, datetime.now(UTC) - timedelta(hours=5), text="Battery below 15%")
    seed.alert(a, datetime.now(UTC) - timedelta(hours=2), kind="electrode_off", text="Electrode came off")
    day_ago = datetime.now(UTC) - timedelta(days=1)
    held = [session_record(serial, n, started_at=day_ago + timedelta(hours=n), duration_s=0) for n in (1, 2)]
    services.ingestion.receive(None, a, [SessionRecordSchema().load(r) for r in held], {serial})
    sign_in(client, world["clinician_team"].email)
    names = _button_names(client.get(f"/clinician/patients/{a}").get_data(as_text=True))
    acting = [n for n in names if n.startswith(("Acknowledge", "Count it", "Exclude it"))]
    assert len(acting) == 6 and len(set(acting)) == 6, acting
    assert any(n.startswith("Acknowledge the alert “Electrode came off”") for n in acting)
    assert any(n.startswith(f"Exclude it (session {serial}:2,") for n in acting)


def test_a_practice_logged_twice_over_the_same_minutes_counts_once_on_the_page(client, world, db):
    """The patient and a caregiver (or two phones) logging the same 20 minutes: the figures count them once, and
    the page said 2 sessions and 40 minutes (it summed the minutes as logged)."""
    pid = world["patient_a"].id
    started = datetime.now(UTC) - timedelta(days=1)
    db.practice_log.insert_many([
        {"_id": f"twice-{n}", "patient_id": pid, "item_slug": "body-scan", "started_at": started,
         "completed_at": started + timedelta(minutes=20), "minutes": 20.0, "seq": 0} for n in (1, 2)])
    sign_in(client, world["clinician_team"].email)
    html = client.get(f"/clinician/patients/{pid}").get_data(as_text=True)
    assert "Mindfulness: 1 practice session(s), 20 minutes (a practice logged twice" in html


def test_the_patient_page_says_when_a_list_was_cut_at_the_rows_it_reads(client, world, seed, services, monkeypatch):
    """The review reads at most so many rows of each kind (5,000); the page said nothing when a list was cut."""
    from companion.services.review import PatientReview
    pid = world["patient_a"].id
    for hours in (30, 20, 10):
        seed.pain(pid, datetime.now(UTC) - timedelta(hours=hours), 4)
    monkeypatch.setattr(services.review, "of_patient",
                        lambda patient: PatientReview(services.stores, patient, at=services.review.clock(), rows=2))
    sign_in(client, world["clinician_team"].email)
    html = client.get(f"/clinician/patients/{pid}").get_data(as_text=True)
    assert "Only the latest 2 pain ratings of this period are shown" in html
    assert "Only the latest 2 diary entries of this period are read" in html
