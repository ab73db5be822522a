"""Pure clinician-review rules: PDC, pain trend, before/after pairs, plan targets, panel order."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from companion.domain import review as rules
from companion.domain.localtime import TimeZoneHistory, day_span
from companion.domain.plans import plan_in_force

AT = datetime(2025, 3, 31, 12, tzinfo=UTC)


def _day(on: str, state: str = "progress", covered: bool = True) -> dict:
    return {"date": on, "state": state, "covered": covered}


def test_pdc_counts_only_days_with_tasks_and_leaves_out_days_never_computed():
    days = [_day("2025-03-01"), _day("2025-03-02", covered=False), _day("2025-03-03", "no_tasks", False),
            _day("2025-03-04", "no_events", False), _day("2025-02-28")]
    assert rules.pdc(days, date(2025, 3, 1), date(2025, 3, 7)) == 0.3333
    assert rules.pdc([_day("2025-03-03", "no_tasks", False)], date(2025, 3, 1), date(2025, 3, 7)) is None


def test_completed_days_leave_today_out():
    assert rules.completed_days(date(2025, 3, 8), 7) == (date(2025, 3, 1), date(2025, 3, 7))


def test_pain_trend_compares_fortnights_and_ignores_deleted_entries():
    entries = [{"recorded_at": AT - timedelta(days=d), "nrs": n, "deleted": gone}
               for d, n, gone in [(1, 6, False), (13, 5, False), (15, 3, False), (27, 4, False), (2, 10, True)]]
    trend = rules.pain_trend(entries, AT)
    assert (trend.recent_mean, trend.previous_mean, trend.change, trend.direction) == (5.5, 3.5, 2.0, "rising")
    assert rules.pain_trend(entries[:2], AT).direction == "unknown"


def test_before_after_pairs_need_both_sides_and_keep_the_latest_of_each():
    sessions = {"S:1": {"started_at": AT, "programme": 2, "frequency_hz": 80},
                "S:2": {"started_at": AT + timedelta(hours=3), "programme": 2, "frequency_hz": 80}}
    entries = [{"session_record_id": "S:1", "phase": "before", "nrs": 7, "recorded_at": AT - timedelta(minutes=30)},
               {"session_record_id": "S:1", "phase": "before", "nrs": 6, "recorded_at": AT - timedelta(minutes=5)},
               {"session_record_id": "S:1", "phase": "after", "nrs": 3, "recorded_at": AT + timedelta(hours=1)},
               {"session_record_id": "S:2", "phase": "before", "nrs": 5, "recorded_at": AT + timedelta(hours=3)},
               {"session_record_id": "S:9", "phase": "after", "nrs": 1, "recorded_at": AT}]
    pairs = rules.before_after_pairs(entries, sessions)
    assert [(p.session_id, p.before, p.after, p.change) for p in pairs] == [("S:1", 6, 3, -3)]
    effects = rules.programme_effects(pairs)
    assert [(e.programme, e.frequency_hz, e.sessions, e.mean_change) for e in effects] == [(2, 80, 1, -3.0)]


def test_plan_target_uses_the_version_in_force_at_the_end_of_the_local_day():
    v1 = {"version": 1, "active_from": AT - timedelta(days=10), "active_to": AT,
          "tens": {"sessions_per_day": 2, "minutes_per_session": 30, "start_date": "2025-01-01"}}
    v2 = {"version": 2, "active_from": AT, "active_to": None,
          "tens": {"daily_minutes_target": 45, "start_date": "2025-04-02"}}
    def plan_on(day):  # as tens_by_day and the adherence job take it: in force when the day ended
        return plan_in_force([v1, v2], day_span(TimeZoneHistory.fixed("UTC"), day)[1])

    assert rules.tens_target_minutes(plan_on(date(2025, 3, 30)), date(2025, 3, 30)) == 60
    assert plan_on(date(2025, 3, 31))["version"] == 2
    assert rules.tens_target_minutes(v2, date(2025, 4, 1)) is None  # before the TENS start date
    assert rules.tens_target_minutes(v2, date(2025, 4, 2)) == 45


def test_a_days_tens_minutes_are_the_sum_of_its_sessions_minutes_as_shown():
    """Three sessions of 10 min 2 s each count 10.0 minutes as listed; their day counts 30.0, not 30.1."""
    sessions = [{"started_at": AT + timedelta(hours=h), "duration_s": 602} for h in (0, 2, 4)]
    [day] = rules.tens_by_day(sessions, [], "UTC", AT.date(), AT.date())
    assert (day.minutes, day.sessions) == (30.0, 3)


PANEL_AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _row(name, pdc_7=0.9, alerts=0, change=None, silent=None):
    pain = rules.PainTrend(None if change is None else 5 + change, None if change is None else 5.0)
    synced = None if silent is None else PANEL_AT - timedelta(days=silent)
    return rules.PanelRow(name, name, "UTC", pdc_7, pdc_7, pain, silent, alerts, synced)


def test_need_order_puts_alerts_then_low_pdc_then_rising_pain_first():
    rows = [_row("fine"), _row("pain", change=2), _row("low", pdc_7=0.5), _row("alert", alerts=1),
            _row("lower", pdc_7=0.2), _row("empty", pdc_7=None)]
    assert [r.patient_id for r in rules.order_panel(rows)] == ["alert", "lower", "low", "pain", "fine", "empty"]


def test_figure_sorts_put_patients_without_the_figure_last_either_way():
    rows = [_row("a", silent=None), _row("b", silent=4), _row("c", silent=1)]
    assert [r.patient_id for r in rules.order_panel(rows, "days_since_sync")] == ["c", "b", "a"]
    assert [r.patient_id for r in rules.order_panel(rows, "days_since_sync", descending=True)] == ["b", "c", "a"]


def test_a_closed_record_asks_attention_for_its_open_alerts_alone_and_ranks_by_them():
    def closed(row):
        return replace(row, account_status="closed", closed_at=PANEL_AT - timedelta(days=400))

    silent, low, rising = closed(_row("silent", silent=400)), closed(_row("low", pdc_7=0.2)), closed(
        _row("rising", change=3))
    alerted = closed(_row("alerted", pdc_7=0.2, alerts=1))
    assert [silent.reasons, low.reasons, rising.reasons, alerted.reasons] == [[], [], [], ["1 open alert"]]
    assert not rules.PanelFilter(needs_attention=True).keeps(silent)
    assert rules.PanelFilter(needs_attention=True).keeps(alerted)
    # nor do the figure filters bring it up (open accounts only); it is listed without a filter
    figures = (rules.PanelFilter(silent_days=2), rules.PanelFilter(pdc_7_below=0.8), rules.PanelFilter(pain_rising=True))
    assert [f.keeps(r) for f, r in zip(figures, (silent, alerted, rising), strict=True)] == [False, False, False]
    assert rules.PanelFilter().keeps(silent)
    rows = [silent, low, rising, alerted, _row("fine"), _row("empty", pdc_7=None)]
    # ranked as patients without figures (after those with any), by name; an open alert still ranks first
    assert [r.patient_id for r in rules.order_panel(rows)] == ["alerted", "fine", "empty", "low", "rising", "silent"]
    assert (low.closed_on, _row("fine").closed_on) == (date(2025, 1, 26), None)


@settings(max_examples=300, deadline=None)
@given(shown=st.integers(0, 5 * 86400), heard=st.integers(0, 5 * 86400), at=st.integers(0, 5 * 86400),
       later=st.integers(0, 5 * 86400))
def test_a_contact_that_marks_no_line_leaves_its_days_since_sync_exact_until_the_row_is_computed_again(
        shown, heard, at, later):
    """A line whose row holds ``shown`` and whose unit was heard from at ``heard`` (reported at ``at``) shows, at
    any read before the row's next computation by time alone, the days since sync a row holding ``heard`` would."""
    shown, heard = min(shown, heard, at), min(heard, at)  # a row holds an earlier contact; none is reported ahead
    shown_at, heard_at, at = (AT + timedelta(seconds=s) for s in (shown, heard, at))
    if rules.contact_changes_line(shown_at, heard_at, at):
        return
    read = at + timedelta(seconds=later)
    if read < rules.days_since_changes_at(shown_at, at):
        assert rules.days_since(shown_at, read) == rules.days_since(heard_at, read)


def test_a_units_first_contact_or_one_after_a_day_of_silence_changes_the_line():
    assert rules.contact_changes_line(None, AT, AT)
    assert rules.contact_changes_line(AT - timedelta(days=1), AT, AT)
    assert not rules.contact_changes_line(AT - timedelta(hours=23), AT, AT)
    assert rules.contact_changes_line(AT + timedelta(hours=2), AT, AT)  # a row holding a contact in the future
    assert rules.days_since_changes_at(AT - timedelta(hours=30), AT) == AT + timedelta(hours=18)
    assert rules.days_since_changes_at(None, AT) is None
