"""Clinician review: the panel of patients ranked by need (over its read model, companion.services.read_models),
one patient's figures, clinical notes.

Called by the JSON API, the clinician pages and the exports alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta

from companion.clock import Clock, now
from companion.domain import review as rules
from companion.domain.errors import Invalid, NotFound
from companion.domain.localtime import dates_reach
from companion.domain.people import Account
from companion.domain.plans import last_tens_day, next_tens_day
from companion.domain.practice import REACH
from companion.domain.review import PanelFilter
from companion.services.adherence import COVERED_THRESHOLD, day_bounds
from companion.services.day_facts import with_counts, with_counts_in_order
from companion.services.derived_ids import derived_id
from companion.services.read_models import PanelReadModel
from companion.store.adherence import snapshot_id
from companion.store.read_models import ENTRY_ORDERS
from companion.store.stores import Stores

REVIEW_SNAPSHOT_DAYS = 90  # a review reads the snapshots of today and the 90 days before (the 90-day PDC), at least
# Ids per `_id $in`: FerretDB serves up to 10,000 from its _id index but re-checks every fetched document
# against the whole list, so 1,000 at a time is faster there (0.57 s against 0.78 s for 6,000 snapshots).
SNAPSHOT_ID_CHUNK = 1000
# Rows of each kind a review's lists read (the exports and the TENS figures read the whole period: period_*). A list
# that had more says so (its ``*_complete`` flag is false): each is read with one row more than it shows.
MAX_ROWS = 5000
DEVICE_EVENTS_SHOWN = 200  # the last 30 days' device events the review lists (the latest)
NOTE_MAX = 5000
KEPT_APART_SHOWN = 50  # copies kept apart under a used session number that the review lists (the latest)
PLANS_SHOWN = 200  # therapy plan versions the review lists (the newest)
NOTES_SHOWN = 100  # clinical notes the review lists (the newest)


def _cut(rows: list[dict], limit: int) -> tuple[list[dict], bool]:
    """A list read with one row more than ``limit``: the rows it shows, and whether they are all there were."""
    return rows[:limit], len(rows) <= limit


class PatientReview:
    """One patient's figures over the last `days` local days (today included)."""

    def __init__(self, stores: Stores, patient: Account, *, at: datetime | None = None, rows: int = MAX_ROWS,
                 last_day: date | None = None):
        self.stores = stores
        self.patient = patient
        self.rows = rows  # of each kind (sessions, ratings, occurrences, pushes, practice) in the lists, at most
        self.pid = patient.id
        self.zone = patient.time_zone or "UTC"  # today's
        self.history = patient.zone_history()
        self.at = at or now()
        # The last day of the figures: today, or an earlier day for a review of a past period (``at`` its end).
        self.today = last_day or rules.local_date(self.at, self.zone)

    def zone_of(self, moment: datetime) -> str:
        """The zone the patient lived in at an instant (their zone history): a record's day and clock time."""
        return self.history.zone_at(moment).key

    def local_date(self, moment: datetime) -> date:
        """The patient's calendar date at an instant, in the zone in force then."""
        return rules.local_date(moment, self.zone_of(moment))

    def first_day(self, days: int) -> date:
        return self.today - timedelta(days=days - 1)

    def _since(self, days: int) -> datetime:
        # A day's margin either side covers every time zone; callers filter by local date (in_period).
        return self.at - timedelta(days=days + 1)

    def in_period(self, days: int, moment: datetime) -> bool:
        """Whether an instant falls on one of the period's local days (first_day(days) to today)."""
        return self.first_day(days) <= self.local_date(moment) <= self.today

    def occurrence_day(self, occurrence: dict) -> date:
        """The local day a reminder occurrence is on: a slot a move east jumped over (kept, skipped) on its own
        day, as the figures and the app count it; any other on the day of its moment."""
        if occurrence.get("skipped_by_move_at") is not None:
            return date.fromisoformat(occurrence["local_date"])
        return self.local_date(occurrence["due_at"])

    # The period read whole: every record of the period's local days up to the review's moment (one reported a
    # little ahead counts once its time comes), oldest first, a page at a time: what the exports and the TENS
    # figures read, with no cap on any kind and one page held at a time.
    def period_start(self, days: int) -> datetime:
        """The instant the period's first local day began, as the patient lived it."""
        return day_bounds(self.history, self.first_day(days))[0]

    def day_end(self, local_date: date) -> datetime:
        """The instant the patient's local day ended, as they lived it."""
        return day_bounds(self.history, local_date)[1]

    def _of_period(self, days: int, records: Iterable[dict], field: str) -> Iterator[dict]:
        # A move west after the first day began can bring a later instant back onto the day before it.
        return (r for r in records if self.in_period(days, r[field]))

    def period_sessions(self, days: int) -> Iterator[dict]:
        """The period's TENS sessions, held ones included."""
        return self._of_period(days, self.stores.session_records.started_in_order(
            self.pid, self.period_start(days), self.at), "started_at")

    def period_entries(self, days: int) -> Iterator[dict]:
        """The period's pain diary entries (deleted ones left out)."""
        return self._of_period(days, self.stores.pain_entries.recorded_in_order(
            self.pid, self.period_start(days), self.at), "recorded_at")

    def period_deleted_entries(self, days: int) -> Iterator[dict]:
        """The period's pain diary entries the patient deleted, as long as they are tombstones (the sync window)."""
        return self._of_period(days, self.stores.pain_entries.deleted_recorded_in_order(
            self.pid, self.period_start(days), self.at), "recorded_at")

    def period_practice(self, days: int) -> Iterator[dict]:
        """The period's mindfulness practice, oldest first, each with what it counts in the figures
        (``counted_minutes``, ``counts``: companion.services.day_facts.with_counts)."""
        return self._of_period(days, with_counts_in_order(self.stores.practice.started_in_order(
            self.pid, self.period_start(days) - REACH, self.at)), "started_at")

    def period_notifications(self, days: int) -> Iterator[dict]:
        """The push notifications about the patient created in the period."""
        return self._of_period(days, self.stores.outbox.created_in_order(
            self.pid, self.period_start(days), self.at), "created_at")

    def period_doses(self, days: int) -> Iterator[dict]:
        """The medication reminders' occurrences of the period's days due by the review's moment, whatever their
        outcome, each with its reminder's title."""
        titles = self.stores.reminders.titles(self.pid)
        first = self.first_day(days)
        # A slot a move east jumped over is due on the new clock, up to 26 hours (the widest gap between two zones)
        # before its day began where the patient was: read with two days' margin, kept by its day.
        for dose in self.stores.occurrences.due_in_order(self.pid, self.period_start(days) - timedelta(days=2),
                                                         self.at, kind="medication"):
            if first <= self.occurrence_day(dose) <= self.today:
                dose["title"] = titles.get(dose.get("reminder_id"), {}).get("title")
                yield dose

    def adherence(self, days: int) -> dict:
        """The calendar (one entry per local day, `missing` where no snapshot exists) and PDC."""
        first = self.first_day(days)
        back = max(REVIEW_SNAPSHOT_DAYS, days - 1)  # the calendar's first day, or the 90-day PDC's if earlier
        stored = {d["date"]: d for d in self.stores.adherence_days.by_ids(
            [snapshot_id(self.pid, self.today - timedelta(days=n)) for n in range(back, -1, -1)],
            batch=SNAPSHOT_ID_CHUNK)}
        calendar = []
        for i in range(days):
            on = (first + timedelta(days=i)).isoformat()
            day = stored.get(on)
            calendar.append({"date": on, "state": day["state"] if day else "missing",
                             "covered": bool(day and day.get("covered")),
                             **{k: (day or {}).get(k) for k in ("tens_fraction", "tens_minutes", "tens_minutes_target",
                                                               "sessions_done", "sessions_planned",
                                                               "mindfulness_fraction", "medication_fraction")}})
        snapshots = list(stored.values())
        return {"calendar": calendar, "threshold": rules.ADHERENT_PDC,
                **{f"pdc_{n}": rules.pdc(snapshots, *rules.completed_days(self.today, n)) for n in (7, 30, 90)}}

    def sessions(self, days: int) -> tuple[list[dict], bool]:
        """TENS sessions of the period, oldest first (at most ``rows``: the oldest), and whether that is all."""
        return _cut(self.stores.session_records.for_patient(self.pid, self._since(days), self.at + timedelta(minutes=5),
                                                            self.rows + 1, newest_first=False), self.rows)

    def versions_in_reach(self) -> list[dict]:
        """Every plan version that can set what one of the review's days asks (written before today's last
        instant in any zone), newest first."""
        return self.stores.plans.written_before(self.pid, dates_reach(self.today)[1])

    def tens_course_days(self, versions: list[dict], version: dict) -> tuple[date | None, date | None]:
        """The last of the review's days (up to today) whose TENS follows ``version``, and the first after today
        that will, as the versions ``versions`` stand (plans.day_plan; the second only looked for when no day
        up to today followed it)."""
        last = last_tens_day(versions, self.history, version, self.today)
        return last, None if last is not None else next_tens_day(versions, self.history, version, self.today)

    def tens(self, days: int) -> list[rules.TensDay]:
        """Each of the period's days' TENS minutes and sessions against the plan, and its TENS adherence (state,
        covered) from them, from every session of the period as it is stored now."""
        versions = self.versions_in_reach()  # every one that can count
        return rules.tens_by_day(self.period_sessions(days), versions, self.zone, self.first_day(days), self.today,
                                 history=self.history, threshold=COVERED_THRESHOLD)

    def session_times(self, days: int) -> dict:
        """How sure the period's session times are: how many are exact, corrected and estimated, the ones that
        are not exact (newest first), the sessions held back from the figures (the patient's, or possibly
        theirs: a unit that changed hands when they happened), and the copies kept apart (a number used again).
        ``sessions_complete``: whether the counts are of every session of the period (at most ``rows`` are read)."""
        read, complete = self.sessions(days)
        sessions = [s for s in read if self.in_period(days, s["started_at"])]
        counts = {quality: 0 for quality in ("exact", "corrected", "estimated")}
        for session in sessions:
            counts[session.get("time_quality", "exact")] = counts.get(session.get("time_quality", "exact"), 0) + 1
        not_exact = [s for s in reversed(sessions) if s.get("time_quality", "exact") != "exact" and not s.get("held")]
        return {"counts": counts, "not_exact": not_exact[:50], "sessions_complete": complete,
                "held": self.stores.session_records.held_for(self.pid),
                # Sessions that arrived under a number already used, with other content (a unit whose counter
                # restarted): kept apart, counted nowhere; the care team sees them here.
                **self._kept_apart()}

    def _kept_apart(self) -> dict:
        """The latest 50 copies kept apart, oldest of them first, and how many there are in all."""
        latest, total = self.stores.session_conflicts.delivered_for(self.pid, KEPT_APART_SHOWN)
        return {"kept_apart": list(reversed(latest)), "kept_apart_total": total}

    def _pain_entries(self, since: datetime) -> tuple[list[dict], bool]:
        """The entries recorded since ``since``, oldest first (at most ``rows``: the newest, which a clinician
        reviewing wants), and whether that is all of them."""
        newest, complete = _cut(self.stores.pain_entries.newest_recorded_between(
            self.pid, since, self.at + timedelta(minutes=5), self.rows + 1), self.rows)
        return list(reversed(newest)), complete

    def pain(self, days: int) -> dict:
        """Entries in the period, before/after pairs, and the 14-day trend; ``entries_complete`` says whether the
        entries (and the pairs made of them) are all of the period's (at most ``rows`` are read: the newest). The
        trend reads every entry of its 28 days (``trend_complete`` is always true)."""
        read, entries_complete = self._pain_entries(self._since(days))
        entries = [e for e in read if self.in_period(days, e["recorded_at"])]
        linked = sorted({e["session_record_id"] for e in entries if e.get("session_record_id")})
        # Held sessions (kept for a clinician's decision, or excluded by one) are counted nowhere, nor here.
        sessions = {k: s for k, s in self.stores.session_records.of_patient_by_ids(self.pid, linked).items()
                    if not s.get("held")}
        pairs = rules.before_after_pairs(entries, sessions)
        trend_entries = self.stores.pain_entries.ratings_between(self.pid, self.at - timedelta(days=28), self.at)
        return {"entries": entries, "pairs": pairs, "trend": rules.pain_trend(trend_entries, self.at),
                "entries_complete": entries_complete, "trend_complete": True}

    def programme_review(self, days: int) -> dict:
        """What helped, by programme (``items``), and whether it rests on every pain entry of the period
        (``complete``)."""
        pain = self.pain(days)
        return {"items": rules.programme_effects(pain["pairs"]), "complete": pain["entries_complete"]}

    def programmes(self, days: int) -> list[rules.ProgrammeEffect]:
        return self.programme_review(days)["items"]

    def notifications(self, days: int) -> dict:
        """Reminder occurrences of the period's days with their outcome (today's still to come included), and
        push notifications with their delivery state; ``occurrences_complete`` and ``notifications_complete`` say
        whether each list is all of the period's (at most ``rows`` of each are read: the newest)."""
        since = self._since(days)
        titles = self.stores.reminders.titles(self.pid)
        first = self.first_day(days)
        read, occurrences_complete = _cut(self.stores.occurrences.newest_between(
            self.pid, since, self.at + timedelta(days=1), self.rows + 1), self.rows)
        occurrences = [o for o in read if first <= self.occurrence_day(o) <= self.today]
        for occurrence in occurrences:
            occurrence["title"] = titles.get(occurrence.get("reminder_id"), {}).get("title")
        # Bounded at the review's moment too: read newest first, a past period's own would fall past the limit.
        read, notifications_complete = _cut(self.stores.outbox.for_patient(
            self.pid, since=since, until=self.at + timedelta(minutes=5), limit=self.rows + 1), self.rows)
        notifications = [n for n in read if self.in_period(days, n["created_at"])]
        for note in notifications:
            note["to_patient"] = note.get("recipient_user_id") == self.pid
        return {"occurrences": occurrences, "notifications": notifications,
                "occurrences_complete": occurrences_complete, "notifications_complete": notifications_complete}

    def device(self) -> dict:
        """The patient's units with when each was last heard from (TensUnit.last_heard: what the panel's days since
        sync count from), and the last 30 days' device events (the latest DEVICE_EVENTS_SHOWN; ``events_complete``
        says whether that is all of them)."""
        devices = []
        for unit in self.stores.devices.for_patient(self.pid):
            devices.append({"_id": unit.serial, "profile": unit.profile,
                            "bound_at": unit.bound_at, "status": unit.status, "last_heard_at": unit.last_heard,
                            "days_since_sync": rules.days_since(unit.last_heard, self.at)})
        events, complete = _cut(self.stores.device_events.for_patient(self.pid, self.at - timedelta(days=30),
                                                                      DEVICE_EVENTS_SHOWN + 1), DEVICE_EVENTS_SHOWN)
        return {"devices": devices, "events": events, "events_complete": complete}

    def diary(self, days: int) -> dict:
        """The period's diary entries, newest first, and mindfulness practice, each practice with what it counts
        in the figures; ``entries_complete`` and ``practice_complete`` say whether each list is all of the
        period's (at most ``rows`` of each are read: the newest)."""
        practice, practice_complete = _cut(self.stores.practice.started_since(
            self.pid, self._since(days), self.rows + 1, until=self.at + timedelta(minutes=5)), self.rows)
        if practice:  # each counted as the figures count it, with what the oldest shown may overlap
            oldest, shown = practice[-1]["started_at"], {p["_id"] for p in practice}
            earlier = [p for p in self.stores.practice.completed_between(self.pid, oldest - REACH,
                                                                         oldest + timedelta(milliseconds=1))
                       if p["_id"] not in shown]
            counted = {p["_id"]: p for p in with_counts(practice + earlier)}
            practice = [counted[p["_id"]] for p in practice]
        pain = self.pain(days)
        return {"entries": list(reversed(pain["entries"])), "entries_complete": pain["entries_complete"],
                "practice": [p for p in practice if self.in_period(days, p["started_at"])],
                "practice_complete": practice_complete}

    def plans(self, limit: int = PLANS_SHOWN) -> list[dict]:
        """The patient's therapy plan versions, newest first (up to ``limit``)."""
        return self.stores.plans.history(self.pid, limit=limit)

    def plan_history(self) -> tuple[list[dict], bool]:
        """The newest PLANS_SHOWN versions of the therapy plan, newest first, and whether that is all of them."""
        return _cut(self.plans(PLANS_SHOWN + 1), PLANS_SHOWN)


class Review:
    def __init__(self, stores: Stores, clock: Clock = now, panel_rows: PanelReadModel | None = None):
        self.stores = stores
        self.clock = clock
        self.panel_rows = panel_rows or PanelReadModel(stores, clock)

    def panel_page(self, clinician_id: str, *, sort: str = "need", descending: bool = False,
                   keep: PanelFilter | None = None, offset: int = 0, limit: int = 50,
                   at: datetime | None = None) -> tuple[list[rules.PanelRow], int]:
        """One page of the clinician's patients (those of their care teams, and no one else), filtered, ordered
        and paged in the database over the panel's read model, and how many patients matched in all. Rows
        whose inputs changed since the refresher last ran are computed first."""
        keep = keep or PanelFilter()
        versions = self.stores.care_teams.panel_versions_of(clinician_id)
        teams = sorted(versions)
        if len(teams) == 1 and keep == PanelFilter() and sort in ENTRY_ORDERS:
            # The whole panel of one team in a stored order: read from the order's index, whatever its size
            # (or, unchanged since this process read it, kept).
            return self.panel_rows.team_page(teams[0], sort=sort, descending=descending, offset=offset, limit=limit,
                                             at=at, version=versions[teams[0]])
        ids = self.stores.care_teams.patient_ids_of_teams(teams)
        if not ids:
            return [], 0
        self.panel_rows.catch_up(ids)
        return self.panel_rows.page(ids, sort=sort, descending=descending, keep=keep, offset=offset, limit=limit,
                                    at=at)

    def summary(self, patient: Account) -> rules.PanelRow:
        """The patient's figures as their line on the panel shows them (PDC 7/30, pain trend, days since the
        last sync, open alerts, why they may need attention), from their panel row."""
        row = self.panel_rows.one(patient.id)
        if row is None:
            raise NotFound("no such patient")
        return row

    def of_patient(self, patient: Account) -> PatientReview:
        """One patient's figures as of now."""
        return PatientReview(self.stores, patient, at=self.clock())

    def of_period(self, patient: Account, *, days: int | None = None, first: date | None = None,
                  last: date | None = None) -> tuple[PatientReview, int]:
        """One patient's figures over a period of their local days, and how many days it has: the last ``days``
        (30 by default) up to ``last`` (their today by default), or ``first`` to ``last``. Invalid when the
        period ends after their today or is longer than 366 days. A past period's figures are as they stand now,
        seen from the end of its last day."""
        current = self.clock()
        today = rules.local_date(current, patient.zone_history().zone_at(current).key)
        last = last or today
        if last > today:
            raise Invalid("the period ends after the patient's today", errors={"to": [f"is after {today}"]})
        if first is None:
            first = last - timedelta(days=(days or 30) - 1)
        elif first > last:
            raise Invalid("the period starts after it ends", errors={"from": ["must be on or before `to`"]})
        length = (last - first).days + 1
        if length > 366:
            raise Invalid("a period is at most 366 days", errors={"from": ["at most 366 days before `to`"]})
        if last == today:
            return PatientReview(self.stores, patient, at=current), length
        end = day_bounds(patient.zone_history(), last)[1]
        return PatientReview(self.stores, patient, at=end - timedelta(microseconds=1), last_day=last), length

    def notes(self, patient_id: str, limit: int = NOTES_SHOWN) -> tuple[list[dict], bool]:
        """The care team's newest ``limit`` clinical notes about a patient, newest first, with their authors'
        names, and whether that is all of them."""
        notes, complete = _cut(self.stores.clinical_notes.for_patient(patient_id, limit + 1), limit)
        return self._with_authors(notes), complete

    def add_note(self, patient_id: str, author_id: str, text: str, *, form_key: str | None = None,
                 request_key: str | None = None) -> dict:
        """Write a clinical note (notes are never edited: write another). ``form_key``: the one-time key of the
        page's form the note was typed in; the same form sent again with the same text (a double click on Save,
        a resubmission after a slow answer) stores nothing more and answers the note the first one stored. The
        text is part of the key: a form sent back with other text is another note, never lost. With a
        ``request_key`` (the API request's Idempotency-Key) a retry of the same request finds the note the first
        attempt stored."""
        text = rules.lf_line_breaks(text).strip()
        if not 1 <= len(text) <= NOTE_MAX:
            raise Invalid(f"a note needs between 1 and {NOTE_MAX} characters", errors={"text": ["1 to 5000 characters"]})
        if "\x00" in text:  # the API's schema refuses it; the page's form comes here as it was typed
            raise Invalid("a note may not hold a NUL character", errors={"text": ["may not hold a NUL character"]})
        if request_key:
            note_id = derived_id("clinical_note", request_key)
        elif form_key:
            note_id = derived_id("clinical_note", "\x1f".join((patient_id, author_id, form_key, text)))
        else:
            note_id = None
        return self._with_authors([self.stores.clinical_notes.add(patient_id, author_id, text, note_id)])[0]

    def _with_authors(self, notes: list[dict]) -> list[dict]:
        names = self.stores.users.names(n["author_id"] for n in notes)
        for note in notes:
            note["author_name"] = names.get(note["author_id"])
        return notes
