"""A process that stops between two writes, as a test plays it: a store method that fails like a dead database
once the first write has happened."""

from __future__ import annotations

from collections.abc import Callable

from pymongo.errors import ConnectionFailure


def dead_database(*args, **kwargs):
    raise ConnectionFailure("the database went away between two writes")


def fail_once(monkeypatch, store, method: str, happened: Callable[[], bool]) -> None:
    """``store.method`` raises ConnectionFailure while ``happened()`` holds (the write before it landed) and
    works as before otherwise; ``monkeypatch.undo()`` puts it back."""
    real = getattr(store, method)

    def stopping(*args, **kwargs):
        if happened():
            dead_database()
        return real(*args, **kwargs)

    monkeypatch.setattr(store, method, stopping)
