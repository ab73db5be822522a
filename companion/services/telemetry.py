"""What the use cases report for the operators' metrics, without knowing how it is measured.

The composition root (container.py) gives each service a :class:`Telemetry`: Prometheus in the web and
worker processes (companion.metrics.PrometheusTelemetry), :class:`NoTelemetry` wherever nothing is
measured. Counts only: outcome words and numbers, never ids or content.
"""

from __future__ import annotations

from typing import Protocol


class Telemetry(Protocol):
    def records_received(self, result: str, count: int) -> None:
        """``count`` session records were answered ``result`` (created, duplicate, rejected)."""

    def records_held(self, count: int) -> None:
        """``count`` of the records just stored were held back from the figures (flagged, until resolved)."""

    def gateway_dead_letters(self, count: int) -> None:
        """Gateways reported ``count`` new items they could not decode into records (given up on there)."""

    def notifications_settled(self, state: str, count: int) -> None:
        """``count`` notifications settled in ``state`` (sent, scheduled, expired, failed)."""

    def outbox_depth(self, depth: int) -> None:
        """The outbox holds ``depth`` notifications waiting to be sent."""


class NoTelemetry:
    """Measures nothing."""

    def records_received(self, result: str, count: int) -> None:
        pass

    def records_held(self, count: int) -> None:
        pass

    def gateway_dead_letters(self, count: int) -> None:
        pass

    def notifications_settled(self, state: str, count: int) -> None:
        pass

    def outbox_depth(self, depth: int) -> None:
        pass
