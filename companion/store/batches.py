"""Reading many documents by a list of keys, a bounded ``$in`` at a time."""

from __future__ import annotations

from collections.abc import Iterator

CHUNK = 2000  # keys per $in query unless a caller says otherwise


def chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]
