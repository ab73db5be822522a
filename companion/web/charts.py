"""Charts for the clinician pages as inline SVG, drawn on the server: no script, nothing to load,
and every chart has labelled axes with units. Functions take plain values and return markup."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from markupsafe import Markup

from companion.domain.review import TensDay, local_date

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 48
INK, GRID, MUTED = "#1f2933", "#d9dee3", "#52606d"
BEFORE, AFTER, ENTRY, BAR, TARGET = "#1f5fbf", "#d9480f", "#7b8794", "#2f9e77", "#1f2933"


def _text(x: float, y: float, body: str, *, anchor: str = "middle", size: int = 12, extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{MUTED}"{extra}>'
            f"{escape(body)}</text>")


def _svg(body: list[str], label: str, height: int = HEIGHT) -> Markup:
    # Every text interpolated into the markup (labels, titles) went through escape().
    return Markup(  # noqa: S704
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(label)}" '
                  f'xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif">'
                  f'<title>{escape(label)}</title>{"".join(body)}</svg>')


def _nice_max(value: float) -> int:
    for step in (10, 20, 30, 60, 90, 120, 180, 240, 360, 480, 720, 1440):
        if value <= step:
            return step
    return int(value) + 1


def _date_axis(first: date, last: date, x_of, bottom: float) -> list[str]:
    span = (last - first).days
    every = max(1, round((span + 1) / 8))
    out = []
    for i in range(0, span + 1, every):
        day = first + timedelta(days=i)
        x = x_of(day)
        out.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="{INK}"/>')
        out.append(_text(x, bottom + 17, day.strftime("%d %b")))
    out.append(_text(LEFT + (WIDTH - LEFT - RIGHT) / 2, bottom + 36, "date (patient's local time)"))
    return out


def _value_axis(top_value: int, steps: int, title: str) -> list[str]:
    bottom = HEIGHT - BOTTOM
    out = [f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="{INK}"/>',
           f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="{INK}"/>']
    for i in range(steps + 1):
        value = top_value * i / steps
        y = bottom - (bottom - TOP) * i / steps
        if i:
            out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(_text(LEFT - 6, y + 4, f"{value:g}", anchor="end"))
    out.append(_text(14, TOP + (bottom - TOP) / 2, title,
                     extra=f' transform="rotate(-90 14 {TOP + (bottom - TOP) / 2:.1f})"'))
    return out


def tens_chart(days: list[TensDay]) -> Markup:
    """Bars of TENS minutes per day with the plan's daily target as a dark line."""
    first, last = days[0].date, days[-1].date
    top = _nice_max(max([d.minutes for d in days] + [d.target_minutes or 0 for d in days] + [1]))
    bottom, plot_w = HEIGHT - BOTTOM, WIDTH - LEFT - RIGHT
    slot = plot_w / len(days)

    def x_of(day: date) -> float:
        return LEFT + slot * ((day - first).days + 0.5)

    def y_of(minutes: float) -> float:
        return bottom - (bottom - TOP) * minutes / top

    body = _value_axis(top, 4, "TENS minutes per day")
    for day in days:
        x = x_of(day.date)
        if day.minutes:
            body.append(f'<rect x="{x - slot * 0.35:.1f}" y="{y_of(day.minutes):.1f}" width="{slot * 0.7:.1f}" '
                        f'height="{bottom - y_of(day.minutes):.1f}" fill="{BAR}"><title>{day.date}: {day.minutes:g} min, '
                        f'{day.sessions} session(s), target {day.target_minutes or "none"}</title></rect>')
        if day.target_minutes:
            y = y_of(day.target_minutes)
            body.append(f'<line x1="{x - slot / 2:.1f}" y1="{y:.1f}" x2="{x + slot / 2:.1f}" y2="{y:.1f}" '
                        f'stroke="{TARGET}" stroke-width="2" stroke-dasharray="5 3"/>')
    body += _date_axis(first, last, x_of, bottom)
    return _svg(body, f"TENS minutes per day from {first} to {last}, with the plan's target")


def pain_chart(entries: list[dict], pairs: list, zone_of: Callable[[datetime], str], first: date, last: date) -> Markup:
    """Pain NRS over time: every entry as a grey dot; before/after a session in blue/orange, joined. Each is
    placed at its clock time where the patient was (``zone_of`` an instant: their zone history)."""
    bottom, plot_w = HEIGHT - BOTTOM, WIDTH - LEFT - RIGHT
    start = datetime.combine(first, datetime.min.time())
    span = (last - first).days + 1

    def x_at(moment: datetime) -> float:
        local = moment.astimezone(ZoneInfo(zone_of(moment))).replace(tzinfo=None)
        return LEFT + plot_w * ((local - start) / timedelta(days=1)) / span

    def x_of(day: date) -> float:
        return LEFT + plot_w * ((day - first).days + 0.5) / span

    def y_of(nrs: float) -> float:
        return bottom - (bottom - TOP) * nrs / 10

    body = _value_axis(10, 5, "pain NRS (0-10)")
    paired = set()
    for pair in pairs:
        ends = [e for e in entries if e.get("session_record_id") == pair.session_id and e.get("phase") in ("before", "after")]
        if len(ends) < 2:
            continue
        before = max((e for e in ends if e["phase"] == "before"), key=lambda e: e["recorded_at"])
        after = max((e for e in ends if e["phase"] == "after"), key=lambda e: e["recorded_at"])
        paired.update({before["_id"], after["_id"]})
        body.append(f'<line x1="{x_at(before["recorded_at"]):.1f}" y1="{y_of(before["nrs"]):.1f}" '
                    f'x2="{x_at(after["recorded_at"]):.1f}" y2="{y_of(after["nrs"]):.1f}" stroke="{MUTED}" stroke-width="1.5"/>')
    for entry in entries:
        colour = {"before": BEFORE, "after": AFTER}.get(entry.get("phase") or "", ENTRY)
        radius = 4.5 if entry["_id"] in paired else 3.5
        when = local_date(entry["recorded_at"], zone_of(entry["recorded_at"]))
        body.append(f'<circle cx="{x_at(entry["recorded_at"]):.1f}" cy="{y_of(entry["nrs"]):.1f}" r="{radius}" '
                    f'fill="{colour}"><title>{when}: NRS {entry["nrs"]}{" (" + entry["phase"] + " session)" if entry.get("phase") else ""}'
                    f'</title></circle>')
    body += _date_axis(first, last, x_of, bottom)
    return _svg(body, f"Pain NRS from {first} to {last}, with ratings before and after TENS sessions")


HEAT = {"missing": "#eef0f2", "no_tasks": "#ffffff", "no_events": "#f1aeb5"}
CELL, GAP, HEAT_LEFT, HEAT_TOP = 34, 4, 40, 24
LABEL_CHAR_W = 7  # a generous width of one character of an 11 px label, so the last label is never cut
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
HEAT_LEGEND = (("#2f9e44", "covered"), ("#f59f00", "half or more of the TENS"), ("#ffd8a8", "under half"),
               (HEAT["no_events"], "nothing done"), (HEAT["no_tasks"], "nothing planned"),
               (HEAT["missing"], "not computed"))


def heat_colour(day: dict) -> str:
    """Green when covered; amber to pale by the TENS fraction on days with progress; red with none."""
    if day["state"] in HEAT:
        return HEAT[day["state"]]
    if day.get("covered"):
        return "#2f9e44"
    fraction = day.get("tens_fraction") or 0
    return "#f59f00" if fraction >= 0.5 else "#ffd8a8"


def heat_label(day: dict) -> str:
    """What a heat-map cell means, in words (its tooltip, and its row in the table under the chart)."""
    return {"missing": "not computed", "no_tasks": "nothing planned", "no_events": "nothing done"}.get(
        day["state"], f"{'covered' if day['covered'] else 'partly done'} ({round((day.get('tens_fraction') or 0) * 100)}% TENS)")


def month_labels(calendar: list[dict]) -> list[tuple[int, str]]:
    """(column, "Nov 2026") for the heat map. A column is named after the month of its first day shown (its
    Monday, or the calendar's first day), when that month has no label yet: so a month is named at the first
    column that starts in it, and no column is named after a month it does not show (the column of Monday
    30 November, drawn up to that Monday, is November's). When the second column starts a month, the first
    column's label gives way: the two would overlap."""
    first, last = date.fromisoformat(calendar[0]["date"]), date.fromisoformat(calendar[-1]["date"])
    monday = first - timedelta(days=first.weekday())
    labels: list[tuple[int, date]] = []
    for col in range((last - monday).days // 7 + 1):
        shown = max(first, monday + timedelta(weeks=col))
        if not labels or (shown.year, shown.month) != (labels[-1][1].year, labels[-1][1].month):
            labels.append((col, shown))
    if len(labels) > 1 and labels[1][0] == labels[0][0] + 1:
        labels.pop(0)
    return [(col, shown.strftime("%b %Y")) for col, shown in labels]


def adherence_heatmap(calendar: list[dict]) -> Markup:
    """A calendar of weeks (columns) by weekday (rows), each day coloured by its adherence state."""
    first = date.fromisoformat(calendar[0]["date"])
    monday = first - timedelta(days=first.weekday())
    weeks = ((date.fromisoformat(calendar[-1]["date"]) - monday).days // 7) + 1
    width = HEAT_LEFT + weeks * (CELL + GAP) + 8
    height = HEAT_TOP + 7 * (CELL + GAP)
    body = [_text(HEAT_LEFT - 6, HEAT_TOP + i * (CELL + GAP) + CELL / 2 + 4, name, anchor="end", size=11)
            for i, name in enumerate(WEEKDAYS)]
    for col, label in month_labels(calendar):
        body.append(_text(HEAT_LEFT + col * (CELL + GAP), 16, label, anchor="start", size=11))
        width = max(width, HEAT_LEFT + col * (CELL + GAP) + round(len(label) * LABEL_CHAR_W) + 4)
    for day in calendar:
        on = date.fromisoformat(day["date"])
        col, row = (on - monday).days // 7, on.weekday()
        label = heat_label(day)
        body.append(f'<rect x="{HEAT_LEFT + col * (CELL + GAP)}" y="{HEAT_TOP + row * (CELL + GAP)}" width="{CELL}" '
                    f'height="{CELL}" rx="3" fill="{heat_colour(day)}" stroke="{GRID}" data-state="{day["state"]}">'
                    f"<title>{on}: {escape(label)}</title></rect>")
        ink = "#ffffff" if day.get("covered") else INK
        body.append(f'<text x="{HEAT_LEFT + col * (CELL + GAP) + CELL / 2}" y="{HEAT_TOP + row * (CELL + GAP) + CELL / 2 + 4}" '
                    f'text-anchor="middle" font-size="11" fill="{ink}" aria-hidden="true">{on.day}</text>')
    # Drawn at its natural size (the page lets it shrink, never grow), so the day cells stay legible.
    return Markup(  # noqa: S704 - texts escaped as above
        f'<svg class="heatmap" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Adherence calendar" xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif">'
        f'<title>Adherence calendar, {calendar[0]["date"]} to {calendar[-1]["date"]}</title>{"".join(body)}</svg>')
