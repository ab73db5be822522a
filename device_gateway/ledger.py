"""The buffer's ledger: a small file beside the buffer saying that the buffer is in use and how far each
unit's records have been stored in it.

Why it exists: the gateway acknowledges records to a unit once they are committed to the buffer, and the
unit then frees them. If the buffer file is later lost (deleted, truncated to zero bytes after a power cut,
swapped for an old copy), SQLite opens an empty database without a word and the link would greet every
unit as a first contact: the records already acknowledged would be gone with one INFO line. The ledger is
written (atomically, fsync'd) after each commit and before the unit is acknowledged, so it is never ahead
of what the buffer held. A buffer that holds less than its ledger says is refused at open, and
``device-gateway buffer-recover`` starts a new buffer that resumes each unit after what it already freed.

The file holds unit serials and sequence numbers only, never session content.
"""

import json
from collections.abc import Mapping
from pathlib import Path

from device_gateway.atomic_file import write_atomically

FORMAT = 1


class LedgerUnreadable(ValueError):
    """The ledger file exists but is not a ledger (damaged, or not written by this gateway)."""


def ledger_path_for(buffer_path: str | Path) -> Path:
    """Where a buffer's ledger lives by default: beside it, ``buffer.db`` → ``buffer.ledger.json``."""
    path = Path(buffer_path)
    return path.with_name(path.stem + ".ledger.json")


def shortfalls(recorded: Mapping[str, int], stored: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Units whose buffer holds fewer records than the ledger says: ``{serial: (stored, recorded)}``.

    The ledger is written after the buffer commits, so it may lag behind the buffer (a crash between
    the two) but never lead it: any unit where it leads means committed records were lost.
    """
    return {
        serial: (stored.get(serial, 0), seq)
        for serial, seq in sorted(recorded.items())
        if stored.get(serial, 0) < seq
    }


class BufferLedger:
    """Reads and replaces the ledger file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, int] | None:
        """Per-unit stored-up-to sequence, or None when there is no ledger (a buffer never opened here,
        or one from before ledgers existed). Raises LedgerUnreadable for a file that is not a ledger."""
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            body = json.loads(raw)
            units = body["units"]
            if body.get("format") != FORMAT or not isinstance(units, dict):
                raise ValueError("unexpected layout")
            return {str(serial): int(seq) for serial, seq in units.items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            raise LedgerUnreadable(f"{self.path} is not a buffer ledger") from None

    def write(self, units: Mapping[str, int]) -> None:
        """Replace the ledger, durably (see ``atomic_file``)."""
        body = {"format": FORMAT, "units": dict(sorted(units.items()))}
        write_atomically(self.path, json.dumps(body, indent=1) + "\n")
