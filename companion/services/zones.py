"""A person's time zones over time, read from their account (see the data contract's `users`)."""

from __future__ import annotations

from companion.domain.localtime import TimeZoneHistory


def zone_history_of(user: dict) -> TimeZoneHistory:
    """The zone history of ``user``: their recorded changes, or their single current zone."""
    changes = [(c["effective_from"], c["zone"]) for c in user.get("time_zone_history") or []
               if c.get("effective_from") is not None and c.get("zone")]
    if not changes:
        return TimeZoneHistory.fixed(user.get("time_zone") or "UTC")
    return TimeZoneHistory.of(changes)
