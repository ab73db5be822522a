"""Beurer EM70 frames, from the publicly reverse-engineered protocol: ``0x5A, len, cmd, data, checksum``.

Only the frame layer is implemented (encode and decode with the 16-bit checksum); the meaning of
the individual commands is not published and is not modelled. ``len`` counts the command byte and
the data; the checksum is the 16-bit little-endian sum of every byte before it, starting with 0x5A.
The DESIGN note gives only the frame shape; the length semantics and the checksum algorithm
(a plain 16-bit sum) are this project's reading and have not been checked against a real unit.
No record of a therapy session is derived from these frames yet, and there is no GATT layout or transfer
to drive, so the link does not pull EM70 units: the runner names units bound with this profile in a
warning and leaves them alone (see ``device_gateway.profiles``).
"""

from dataclasses import dataclass

from device_gateway.profiles.companion_tens import BadChecksum, BadLength, ProfileError, TruncatedFrame

PROFILE_NAME = "beurer-em70"
START_BYTE = 0x5A
_OVERHEAD = 1 + 1 + 2  # start, len, checksum


class BadStartByte(ProfileError):
    """The frame does not start with 0x5A."""


@dataclass(frozen=True, slots=True)
class Em70Frame:
    """One EM70 frame: a command byte and its data."""

    cmd: int
    data: bytes


def checksum(body: bytes) -> int:
    """16-bit sum of ``body`` (start byte, len, cmd and data), modulo 65536."""
    return sum(body) & 0xFFFF


def encode_frame(frame: Em70Frame) -> bytes:
    """Encode a frame; ``len`` covers cmd + data and must fit in one byte."""
    length = 1 + len(frame.data)
    if not 0 <= frame.cmd <= 0xFF or length > 0xFF:
        raise BadLength(f"cmd {frame.cmd} with {len(frame.data)} data bytes does not fit a frame")
    body = bytes([START_BYTE, length, frame.cmd]) + frame.data
    return body + checksum(body).to_bytes(2, "little")


def decode_frame(raw: bytes) -> Em70Frame:
    """Decode one frame; raises TruncatedFrame, BadStartByte, BadLength or BadChecksum."""
    raw = bytes(raw)
    if len(raw) < _OVERHEAD + 1:
        raise TruncatedFrame(f"{len(raw)} bytes, the smallest frame has {_OVERHEAD + 1}")
    if raw[0] != START_BYTE:
        raise BadStartByte(f"start byte 0x{raw[0]:02x}")
    expected = raw[1] + _OVERHEAD
    if raw[1] == 0 or len(raw) != expected:
        raise BadLength(f"len byte {raw[1]} implies {expected} bytes, got {len(raw)}")
    if int.from_bytes(raw[-2:], "little") != checksum(raw[:-2]):
        raise BadChecksum("EM70 checksum does not match")
    return Em70Frame(cmd=raw[2], data=raw[3:-2])
