"""The clinician's pages: the panel, one patient, acknowledging alerts, notes, and downloads."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import (
    Response,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
    stream_with_context,
    url_for,
)
from marshmallow import ValidationError

from companion.domain.access import Operation, Role
from companion.domain.alerts import label_of as alert_label
from companion.domain.errors import Forbidden, Invalid
from companion.domain.localtime import resolve_local
from companion.domain.review import PanelRow
from companion.http import auditing, services
from companion.http.panel import PanelArgs, panel_filter
from companion.http.problems import status_of
from companion.http.schemas import YEARS
from companion.http.security import allow, public, refusal_of, require_patient
from companion.services import exports
from companion.services.review import PatientReview
from companion.web import bp, charts

PAGE_SIZE = 50
PATIENT_DAYS = (14, 30, 90)
LOCAL_INPUT_SHAPES = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")  # what a datetime-local field sends
FORM_KEY_MAX = 64  # a note form's one-time key (22 characters as rendered)
NOTES_ON_PAGE = 20  # the newest clinical notes the patient's page shows (the API lists more)


def _review(patient_id: str, operation: Operation = Operation.READ) -> PatientReview:
    require_patient(patient_id, operation)
    svc = services()
    return svc.review.of_patient(svc.profiles.patient(patient_id))


def _panel_args() -> dict:
    values = {k: v for k, v in request.args.items() if v != ""}
    try:
        return PanelArgs().load(values)
    except ValidationError as exc:
        raise Invalid("these panel filters are not valid: " + ", ".join(sorted(exc.messages))) from exc


@bp.route("/static/<path:filename>")
@public
def static_file(filename):
    return send_from_directory(bp.root_path + "/static", filename, max_age=3600)


@bp.route("/")
@allow(Role.CLINICIAN)
def panel():
    args = _panel_args()
    page_size = min(args["limit"], PAGE_SIZE)
    rows, total = services().review.panel_page(g.actor.id, sort=args["sort"], descending=args["order"] == "desc",
                                               keep=panel_filter(args), offset=args["offset"], limit=page_size)
    ids = [r.patient_id for r in rows]
    auditing.note(patient_ids=ids, resource="patient", action="search", resource_ids=ids)
    filtered = any(request.args.get(k) for k in ("q", "needs_attention", "pdc_7_below", "pain_rising",
                                                 "silent_days", "open_alerts"))
    svc = services()
    return render_template("panel.html", rows=rows, total=total, args=args, filtered=filtered, page_size=page_size,
                           synced=_synced, has_team=svc.care.has_team(g.actor.id),
                           query={k: v for k, v in request.args.items() if k != "offset"},
                           me=svc.accounts.account(g.actor.id))


@bp.route("/panel.csv")
@allow(Role.CLINICIAN)
def panel_export():
    args = _panel_args()
    rows, _ = services().review.panel_page(g.actor.id, sort=args["sort"], descending=args["order"] == "desc",
                                           keep=panel_filter(args), offset=0, limit=100000)
    ids = [r.patient_id for r in rows]
    auditing.note(patient_ids=ids, resource="patient", action="E", resource_ids=ids)
    return Response(exports.panel_csv(rows), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="panel.csv"'})


@bp.route("/patients/<patient_id>")
@allow(Role.CLINICIAN)
def patient(patient_id):
    return _patient_page(patient_id, request.args.get("days", type=int, default=30))


def _patient_page(patient_id: str, days: int, *, note_typed: str = "", note_error: str | None = None,
                  status: int = 200):
    """The patient's page over the last ``days``; ``note_typed`` and ``note_error``: a note that was not saved, put
    back in the form with why beside it."""
    if days not in PATIENT_DAYS:
        days = 30
    review = _review(patient_id)
    adherence = review.adherence(days)
    tens = review.tens(days)
    pain = review.pain(days)
    history = review.notifications(days)
    device = review.device()
    diary = review.diary(days)
    session_times = review.session_times(days)
    svc = services()
    alerts, alerts_complete = svc.alerts.review_list(patient_id, open_only=True)
    recent = svc.alerts.review_list(patient_id, open_only=False, limit=20)[0]  # the latest few, named as such
    recent_alerts = [a for a in recent if a.get("acknowledged_at") and not a.get("resolved_at")]
    resolved_alerts = [a for a in recent if a.get("resolved_at")]
    notes, notes_complete = svc.review.notes(patient_id, limit=NOTES_ON_PAGE)
    plans, plans_complete = review.plan_history()
    authors = {n["author_id"]: n["author_name"] for n in notes}
    # The page lists the sessions held (session_times["held"]): one whose unit changed hands may be another's.
    maybe = {c for s in session_times["held"] for c in s.get("candidate_patient_ids") or []}
    needs_start = {s["_id"] for s in session_times["held"] if svc.sessions.needs_start(s)}
    auditing.note(patient_ids=[patient_id, *maybe], resource="patient", action="R", resource_ids=[patient_id])
    return render_template(
        "patient.html", patient=review.patient, days=days, day_choices=PATIENT_DAYS, adherence=adherence,
        heatmap=charts.adherence_heatmap(adherence["calendar"]), heat_legend=charts.HEAT_LEGEND,
        heat_label=charts.heat_label,
        has_adherence=any(d["state"] != "missing" for d in adherence["calendar"]),
        tens=tens, tens_chart=charts.tens_chart(tens), has_tens=any(d.sessions for d in tens),
        has_target=any(d.target_minutes for d in tens),
        pain=pain, pain_chart=charts.pain_chart(pain["entries"], pain["pairs"], review.zone_of, review.first_day(days),
                                                review.today),
        programmes=review.programmes(days), history=history, device=device, diary=diary, plans=plans,
        plans_complete=plans_complete, alerts=alerts, alerts_complete=alerts_complete, recent_alerts=recent_alerts,
        resolved_alerts=resolved_alerts, session_times=session_times,
        needs_start=needs_start, alert_label=alert_label, notes=notes, authors=authors,
        notes_complete=notes_complete, notes_on_page=NOTES_ON_PAGE,
        # A closed record takes no new note (403): the page offers no form whose text would be refused.
        notes_refused=refusal_of(patient_id, Operation.CLINICAL), note_form_key=secrets.token_urlsafe(16),
        note_typed=note_typed, note_error=note_error,
        row_limit=f"{review.rows:,}",
        csrf_token=g.web_session["csrf_token"], zone=review.zone, lived=_lived_in(review)), status


def _synced(row: PanelRow) -> str:
    """How long ago a panel line's units were last heard from, as its days_since_sync counts it (whole 24-hour
    periods, as the API gives it): a sync late yesterday is 'under 1 d ago', never 'today'. Not in hours: a row is
    kept exact to the day (a unit's contact about every 30 seconds computes it again only when the days change,
    companion.domain.review.contact_changes_line), and the hours since the contact it holds would count up all day
    for a unit heard from a minute ago."""
    return f"{row.days_since_sync} d ago" if row.days_since_sync else "under 1 d ago"


def _lived_in(review: PatientReview) -> Callable[[datetime], str]:
    """How the page writes an instant: on the clock of the zone the patient was in then (as the charts, the
    figures and the exports place it), that zone named when it is not the one they are in now."""
    def lived(moment: datetime) -> str:
        zone = review.zone_of(moment)
        shown = moment.astimezone(ZoneInfo(zone)).strftime("%d %b %Y %H:%M")
        return shown if zone == review.zone else f"{shown} ({zone})"
    return lived


@bp.route("/patients/<patient_id>/alerts/<alert_id>/acknowledge", methods=["POST"])
@allow(Role.CLINICIAN)
def acknowledge_alert(patient_id, alert_id):
    _review(patient_id, Operation.SETTLE)
    auditing.note(patient_ids=[patient_id], resource="alert", action="U", resource_ids=[alert_id])
    services().alerts.acknowledge(patient_id, alert_id, g.actor.id)
    return redirect(url_for("web.patient", patient_id=patient_id, _anchor="alerts"), code=303)


@bp.route("/patients/<patient_id>/sessions/<record_id>/resolve", methods=["POST"])
@allow(Role.CLINICIAN)
def resolve_session(patient_id, record_id):
    review = _review(patient_id, Operation.SETTLE)
    action = request.form.get("action", "")
    # A session that may be another patient's (its unit changed hands then): the decision names each.
    auditing.note(patient_ids=services().sessions.patients_a_decision_touches(patient_id, record_id),
                  resource="session_record", action="U", resource_ids=[record_id])
    started_at = _started_at(request.form.get("started_at", ""), review.zone) if action == "count" else None
    services().sessions.resolve(patient_id, record_id, action, g.actor.id, started_at=started_at,
                                note=(request.form.get("note") or "")[:500] or None)
    return redirect(url_for("web.patient", patient_id=patient_id, _anchor="session-times"), code=303)


def _started_at(typed: str, zone: str) -> datetime | None:
    """The start a clinician gave a held session (a datetime-local field: date and time on the patient's clock,
    without an offset) as an instant; a time the clock skips or shows twice is read as every local time is
    (companion.domain.localtime.resolve_local). None when none was given."""
    if not typed.strip():
        return None
    for shape in LOCAL_INPUT_SHAPES:
        try:
            local = datetime.strptime(typed.strip(), shape)
        except ValueError:
            continue
        if YEARS[0] <= local.year <= YEARS[1]:
            return resolve_local(local.date(), local.time(), ZoneInfo(zone))
    raise Invalid(f"give the time the session started as a date and a time on the patient's clock ({zone})",
                  errors={"started_at": ["a date and a time, YYYY-MM-DDTHH:MM"]})


@bp.route("/patients/<patient_id>/notes", methods=["POST"])
@allow(Role.CLINICIAN)
def add_note(patient_id):
    typed = request.form.get("text", "")[:20000]
    try:
        _review(patient_id, Operation.CLINICAL)
    except Forbidden as exc:
        # The page offers no note form where a note is refused; a record closed while the note was typed: the
        # refusal shows the text, to be kept elsewhere.
        status, title, headers = status_of(exc)
        return render_template("error.html", status=status, title=title, detail=exc.detail, kept=typed,
                               back=url_for("web.patient", patient_id=patient_id)), status, headers
    try:
        note = services().review.add_note(patient_id, g.actor.id, typed,
                                          form_key=request.form.get("form_key", "")[:FORM_KEY_MAX] or None)
    except Invalid as exc:
        # The page again, the note as typed in its field and why it was not saved tied to it (an error page, and
        # the way back to the form, would lose the text).
        return _patient_page(patient_id, 30, note_typed=typed.replace("\x00", ""), note_error=exc.detail,
                             status=422)
    auditing.note(patient_ids=[patient_id], resource="clinical_note", action="C", resource_ids=[note["_id"]])
    return redirect(url_for("web.patient", patient_id=patient_id, _anchor="notes"), code=303)


@bp.route("/patients/<patient_id>/export.csv")
@allow(Role.CLINICIAN)
def patient_csv(patient_id):
    review = _review(patient_id, Operation.EXPORT)
    auditing.note(patient_ids=[patient_id], resource="patient", action="E", resource_ids=[patient_id])
    return Response(exports.patient_csv(review, 90), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="patient-{patient_id}.csv"'})


@bp.route("/patients/<patient_id>/events.csv")
@allow(Role.CLINICIAN)
def events_csv(patient_id):
    review = _review(patient_id, Operation.EXPORT)
    auditing.note(patient_ids=[patient_id], resource="patient", action="E", resource_ids=[patient_id])
    return Response(stream_with_context(exports.events_csv_chunks(review, 90)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="patient-{patient_id}-events.csv"'})


@bp.route("/patients/<patient_id>/export.fhir.json")
@allow(Role.CLINICIAN)
def patient_fhir(patient_id):
    review = _review(patient_id, Operation.EXPORT)
    auditing.note(patient_ids=[patient_id], resource="patient", action="E", resource_ids=[patient_id])
    return Response(json.dumps(exports.fhir_bundle(review, 90)), mimetype="application/fhir+json",
                    headers={"Content-Disposition": f'attachment; filename="patient-{patient_id}.fhir.json"'})
