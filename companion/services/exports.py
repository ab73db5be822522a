"""Exports for the health record: CSV (a patient's days, a patient's events, a clinician's panel) and a
FHIR R4 transaction Bundle (companion/services/fhir.py).

CSV files are UTF-8 with a byte order mark, so that spreadsheet programs (Excel in particular) read names
and notes outside ASCII correctly; programs that read them (Python's csv with encoding="utf-8-sig",
pandas, R) skip the mark. Booleans are `true`/`false`, whole numbers are written without a decimal point,
and a cell a spreadsheet would run as a formula starts with an apostrophe.
"""

from __future__ import annotations

import csv
import heapq
import io
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from companion.domain import review as rules
from companion.domain.sessions import counted_minutes_shown, how_it_counts
from companion.services import fhir
from companion.services.review import PatientReview

BOM = "\ufeff"
_UNSAFE_CELL = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str:
    """One CSV cell: booleans as true/false, whole numbers without ".0", text a spreadsheet will not run
    as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    if isinstance(value, str) and text.startswith(_UNSAFE_CELL):
        return "'" + text
    return text


ROWS_PER_CHUNK = 200  # rows a streamed CSV sends at a time


def csv_chunks(header: list[str], rows: Iterable[list]) -> Iterator[str]:
    """A CSV file (byte order mark, header, CRLF lines) in pieces of up to ROWS_PER_CHUNK rows, to stream."""
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for n, row in enumerate(rows, start=1):
        writer.writerow([_cell(v) for v in row])
        if n % ROWS_PER_CHUNK == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def _csv(header: list[str], rows: Iterable[list]) -> str:
    return "".join(csv_chunks(header, rows))


PATIENT_CSV_HEADER = ["date", "adherence_state", "covered", "tens_minutes", "tens_target_minutes", "tens_sessions",
                      "pain_entries", "pain_mean_nrs", "pain_max_nrs"]


def patient_csv(review: PatientReview, days: int) -> str:
    """One row per local day: adherence, TENS delivered against the plan, and pain.

    A row's adherence state and covered are worked out from its own minutes and target (review.tens: the sessions
    as stored now, by the adherence rule), not read from the stored adherence days: those wait for the adherence
    job after late data, and a row read from them could say its target met and not covered."""
    pain: dict[str, list[int]] = defaultdict(list)
    for entry in review.period_entries(days):
        pain[review.local_date(entry["recorded_at"]).isoformat()].append(entry["nrs"])
    rows = []
    for day in review.tens(days):
        on = day.date.isoformat()
        scores = pain.get(on, [])
        rows.append([on, day.state, day.covered, day.minutes, day.target_minutes, day.sessions,
                     len(scores), round(sum(scores) / len(scores), 2) if scores else None,
                     max(scores) if scores else None])
    return _csv(PATIENT_CSV_HEADER, rows)


PANEL_CSV_HEADER = ["patient_id", "name", "time_zone", "pdc_7", "pdc_30", "pain_mean_14d", "pain_change_14d",
                    "pain_direction", "days_since_sync", "open_alerts", "needs_attention_because"]


def panel_csv(rows: Iterable[rules.PanelRow]) -> str:
    """The panel as shown, one patient per row."""
    return _csv(PANEL_CSV_HEADER, ([r.patient_id, r.display_name, r.time_zone, r.pdc_7, r.pdc_30, r.pain.recent_mean,
                                    r.pain.change, r.pain.direction, r.days_since_sync, r.open_alerts,
                                    "; ".join(r.reasons)] for r in rows))


EVENTS_CSV_HEADER = [
    "event", "id", "local_date", "local_time", "utc_offset", "utc_time", "time_zone", "duration_min", "counted_min",
    "title", "status",
    "device_serial", "programme", "frequency_hz", "pulse_width_us", "intensity_mean_ma", "intensity_peak_ma",
    "end_reason", "clock_status",
    "nrs", "phase", "session_id", "location", "activity", "sleep_quality", "mood", "note",
    "bpi_worst", "bpi_least", "bpi_average", "bpi_now", "bpi_severity", "bpi_interference"]
EVENT_KINDS = ("tens_session", "pain_entry", "medication_dose", "mindfulness_practice")


ZONE = "_zone"  # (an event row's own zone, when it has one: a kept dose's slot)


def _when(moment: datetime, zone: str) -> dict:
    local = moment.astimezone(ZoneInfo(zone))
    offset = local.strftime("%z")
    return {"local_date": local.date().isoformat(), "local_time": local.strftime("%H:%M"),
            "utc_offset": f"UTC{offset[:3]}:{offset[3:]}", "utc_time": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "time_zone": zone}


def _minutes(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


Event = tuple[datetime, int, dict]  # (its moment, its kind: an index of EVENT_KINDS, its row's fields)


def _sessions(review: PatientReview, days: int) -> Iterator[Event]:
    for s in review.period_sessions(days):
        yield (s["started_at"], 0, {
            "id": s["_id"], "duration_min": _minutes((s.get("duration_s") or 0) / 60),
            "counted_min": counted_minutes_shown(s), "status": how_it_counts(s),
            **{k: s.get(k) for k in ("device_serial", "programme", "frequency_hz", "pulse_width_us",
                                     "intensity_mean_ma", "intensity_peak_ma", "end_reason", "clock_status")}})


def _entries(review: PatientReview, days: int) -> Iterator[Event]:
    for e in review.period_entries(days):
        context, bpi = e.get("context") or {}, e.get("bpi") or {}
        yield (e["recorded_at"], 1, {
            "id": e["_id"], "nrs": e["nrs"], "phase": e.get("phase"), "session_id": e.get("session_record_id"),
            **{k: context.get(k) for k in ("location", "activity", "sleep_quality", "mood", "note")},
            **{f"bpi_{k}": bpi.get(k) for k in ("worst", "least", "average", "now", "severity")},
            "bpi_interference": bpi.get("interference_score")})


def _doses(review: PatientReview, days: int) -> Iterator[Event]:
    for o in review.period_doses(days):
        # A dose a move east jumped over is on its slot's clock (the new one) and day (review.occurrence_day), as
        # the figures and the app count it; any other on the clock of its moment, as every event.
        kept = o.get("skipped_by_move_at") is not None
        yield (o["due_at"], 2, {"id": o["_id"], "title": o.get("title"), "status": o.get("status"),
                                "note": o.get("skip_reason"), **({ZONE: o["zone"]} if kept else {})})


def _practice(review: PatientReview, days: int) -> Iterator[Event]:
    for p in review.period_practice(days):
        # duration_min as recorded; counted_min what it adds to the figures (a stretch recorded twice counts once)
        yield (p["started_at"], 3, {"id": p["_id"], "title": p.get("item_slug"),
                                    "duration_min": _minutes(p.get("minutes")),
                                    "counted_min": _minutes(p["counted_minutes"]),
                                    "status": "completed" if p.get("completed_at") else "started"})


def _event_order(event: Event) -> tuple:
    return event[0], event[1], str(event[2]["id"])


def events_csv_chunks(review: PatientReview, days: int) -> Iterator[str]:
    """One row per TENS session, diary entry, medication dose and mindfulness practice, oldest first, each
    with its local time in the patient's zone and its UTC time; the columns that do not apply stay empty. In
    pieces, to stream: every event of the period, each kind read a page at a time, oldest first, and merged."""
    def rows() -> Iterator[list]:
        # Each kind comes in this order already (its moment, then its id): merged, they stay in it.
        for moment, kind, fields in heapq.merge(_sessions(review, days), _entries(review, days),
                                                _doses(review, days), _practice(review, days), key=_event_order):
            zone = fields.pop(ZONE, None) or review.zone_of(moment)
            row = {"event": EVENT_KINDS[kind], **_when(moment, zone), **fields}
            yield [row.get(column) for column in EVENTS_CSV_HEADER]
    return csv_chunks(EVENTS_CSV_HEADER, rows())


def events_csv(review: PatientReview, days: int) -> str:
    """The events CSV (events_csv_chunks) as one text."""
    return "".join(events_csv_chunks(review, days))


def fhir_bundle(review: PatientReview, days: int) -> dict:
    """The patient's record as a FHIR R4 transaction Bundle (see companion.services.fhir)."""
    return fhir.transaction_bundle(review, days)
