"""The clinician panel's query arguments: the same filters and order for the JSON API, its CSV export
and the dashboard page."""

from __future__ import annotations

from marshmallow import fields, validate

from companion.domain.review import SORTS, PanelFilter
from companion.http.schemas import StrictSchema, text

OPEN_ONLY = ("of open accounts only (a closed record asks for attention through its open alerts alone, and is "
             "listed without a filter)")


class PanelArgs(StrictSchema):
    sort = fields.String(load_default="need", validate=validate.OneOf(sorted(SORTS)),
                         metadata={"description": "need (default: open alerts, low 7-day PDC, rising pain, silent "
                                                  "device first) or one figure"})
    order = fields.String(load_default="asc", validate=validate.OneOf(["asc", "desc"]),
                          metadata={"description": "for figure sorts; patients without the figure go last"})
    q = text(100, load_default=None, metadata={"description": "part of the patient's name"})
    needs_attention = fields.Boolean(load_default=False)
    pdc_7_below = fields.Float(load_default=None, validate=validate.Range(min=0, max=1), metadata={
        "description": f"7-day PDC under this, {OPEN_ONLY}"})
    pain_rising = fields.Boolean(load_default=False, metadata={"description": f"pain trend rising, {OPEN_ONLY}"})
    silent_days = fields.Integer(load_default=None, validate=validate.Range(min=0, max=3650), metadata={
        "description": f"days since the last device sync, at least, {OPEN_ONLY}"})
    open_alerts = fields.Boolean(load_default=False)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=100000))


def panel_filter(args: dict) -> PanelFilter:
    """The domain's panel filter from loaded PanelArgs."""
    return PanelFilter(q=args.get("q"), needs_attention=args["needs_attention"], pdc_7_below=args["pdc_7_below"],
                       pain_rising=args["pain_rising"], silent_days=args["silent_days"],
                       open_alerts=args["open_alerts"])
