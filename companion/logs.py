"""Clear, structured logs: one line per event, opaque ids only, never health data or tokens."""

from __future__ import annotations

import json
import logging
import sys

_CONFIGURED = False
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<7} {record.name}: " \
               f"{record.getMessage()}"
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        if extra:
            base += " " + json.dumps(extra, default=str, sort_keys=True)
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def configure_logging(level: str = "INFO") -> None:
    """Log Companion's events to stderr, one line each, at ``level`` (from COMPANION_LOG_LEVEL)."""
    global _CONFIGURED
    if _CONFIGURED:
        return
    _CONFIGURED = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("companion")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = True
