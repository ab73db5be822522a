"""One bad item never stops a job for everyone: each item is tried on its own; a failure is logged with the
item's id (never its content), counted, and the item is left as it is for the next pass."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

logger = logging.getLogger("companion.jobs")
T = TypeVar("T")


class ItemFailures:
    """The items one pass of ``job`` could not handle."""

    def __init__(self, job: str):
        self.job = job
        self.item_ids: list[str] = []

    def attempt(self, item_id: str, work: Callable[[], T]) -> T | None:
        """Run ``work`` for one item; on any error log it, count it and return None."""
        try:
            return work()
        except Exception as exc:  # noqa: BLE001 - one item's failure is contained, the pass goes on
            self.item_ids.append(str(item_id))
            logger.error("%s: item failed (%s); skipped until the next pass", self.job, type(exc).__name__,
                         extra={"job_id": self.job, "item_id": str(item_id)})
            return None

    def each(self, item_ids: Iterable[str], work: Callable[[str], object]) -> int:
        """Run ``work`` for each item on its own (as :meth:`attempt`); how many returned something truthy."""
        return sum(1 for item_id in item_ids if self.attempt(item_id, lambda item_id=item_id: work(item_id)))

    def __len__(self) -> int:
        return len(self.item_ids)
