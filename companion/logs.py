"""Structured logs: one JSON object per line on stderr, opaque ids only, never health data or tokens.

Every line has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; a line written while a
request is being served also has its ``request_id`` (and the caller's ``client_request_id``, ``trace_id``
and ``span_id`` when it sent them, see :mod:`companion.http.correlation`), and a line written by a job
its ``job_id``. Whatever a call passes in ``extra`` becomes fields of its own. The formatter is
python-json-logger's; gunicorn's own lines use it too (gunicorn.conf.py).

An identifier a line must let an operator correlate but must not reveal (an email address) is named by its
:func:`pseudonym`, keyed, never by a plain digest: sha256 of an address is recomputed by anyone holding the logs
and a list of candidate addresses.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from pythonjsonlogger.json import JsonFormatter

_CONFIGURED = False
# What every line written in this context carries (request ids, a job's id); one per thread or task.
_context: ContextVar[Mapping[str, str]] = ContextVar("companion_log_context",
                                                                default=MappingProxyType({}))


class CompanionJsonFormatter(JsonFormatter):
    """python-json-logger's formatter with Companion's field names and the current context's ids."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger", "exc_info": "exception"})
        kwargs.setdefault("timestamp", "time")
        super().__init__("{levelname}{name}{message}", *args, style="{", **kwargs)

    def add_fields(self, log_record: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_record, record, message_dict)
        for key, value in _context.get().items():
            log_record.setdefault(key, value)


def pseudonym(key: bytes, value: str) -> str:
    """How a log line names ``value`` (an email address, normalised by the caller): 16 hex digits of its
    HMAC-SHA256 under ``key`` (Settings.pseudonym_key). The same value always gets the same pseudonym, so repeated
    failures of one account line up, but without the key a list of candidate values cannot be matched to it."""
    return hmac.new(key, b"log\x1f" + value.encode(), hashlib.sha256).hexdigest()[:16]


def current_context() -> Mapping[str, str]:
    """The ids that lines written here carry."""
    return _context.get()


def set_context(**ids: str | None) -> object:
    """Make every line written from now on in this thread carry ``ids`` (None values are left out);
    returns a token for :func:`reset_context`."""
    return _context.set({k: v for k, v in ids.items() if v is not None})


def reset_context(token: object) -> None:
    _context.reset(token)  # type: ignore[arg-type]


@contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Lines written inside the block carry ``ids`` as well as the ids already in force."""
    token = _context.set({**_context.get(), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr as JSON lines: Companion's loggers at ``level`` (COMPANION_LOG_LEVEL), the libraries'
    warnings and errors (APScheduler, pymongo, firebase-admin) in the same format."""
    global _CONFIGURED
    if _CONFIGURED:
        return
    _CONFIGURED = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(CompanionJsonFormatter())
    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h.formatter, CompanionJsonFormatter)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    logging.getLogger("companion").setLevel(level)
