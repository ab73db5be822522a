"""Field-level encryption of what the gateway buffer holds (AES-256-GCM), and its key file.

The buffer keeps session records (PHI) until the server acknowledges them. Their content is stored
sealed: ``version byte || 96-bit random nonce || ciphertext+tag``, authenticated together with
associated data that ties each blob to its row (the record id), so a blob moved to another row does
not open. The key is 32 random bytes, base64 in a key file created with mode 0600 on first use.
"""

import base64
import binascii
import hashlib
import hmac
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from device_gateway.atomic_file import sync_directory
from device_gateway.errors import GatewayError

_VERSION = b"\x01"
_NONCE_BYTES = 12
KEY_BYTES = 32


class SealingError(GatewayError):
    """The key file is unusable or does not open what the buffer holds."""


class Sealer:
    """Seals and opens buffer fields with one AES-256-GCM key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SealingError(f"buffer key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._fingerprint_key = hmac.new(key, b"companion buffer fingerprint", hashlib.sha256).digest()

    @classmethod
    def ephemeral(cls) -> "Sealer":
        """A sealer with a fresh random key that lives only in memory (for a throwaway buffer)."""
        return cls(AESGCM.generate_key(bit_length=256))

    def seal(self, plaintext: bytes, context: str) -> bytes:
        """Encrypt and authenticate ``plaintext`` bound to ``context`` (e.g. the record id)."""
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def fingerprint(self, data: bytes, context: str) -> str:
        """A keyed hash of ``data`` bound to ``context`` (hex), to tell the same content again without keeping it
        in clear: without the key it cannot be checked against a guess."""
        return hmac.new(self._fingerprint_key, context.encode() + b"\x00" + data, hashlib.sha256).hexdigest()

    def open(self, blob: bytes, context: str) -> bytes:
        """Decrypt a sealed blob; raises SealingError if it was altered, moved or sealed with another key."""
        if blob[:1] != _VERSION or len(blob) < 1 + _NONCE_BYTES + 16:
            raise SealingError("not a sealed buffer field")
        nonce, body = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, context.encode())
        except InvalidTag:
            raise SealingError("sealed field does not open with this key (wrong key, or altered)") from None


def read_key(path: Path) -> bytes:
    """Read a key file; refuse one that group or others may read (as ssh does for private keys)."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SealingError(f"{path} is accessible by group or others (mode {oct(mode & 0o777)}); chmod 600 it")
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (ValueError, binascii.Error):
        raise SealingError(f"{path} is not a base64 buffer key") from None
    if len(key) != KEY_BYTES:
        raise SealingError(f"{path} holds {len(key)} bytes, expected {KEY_BYTES}")
    return key


def create_key(path: Path) -> bytes:
    """Create a new random key file with mode 0600 (fails if the file appeared meanwhile), durably: its content and
    its name in the directory are on disk before it is used (a power cut must not keep records sealed with a key
    whose file it took back)."""
    made_directory = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = AESGCM.generate_key(bit_length=256)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    sync_directory(path.parent)
    if made_directory:  # (and the directory's own name, made just now)
        sync_directory(path.parent.parent)
    return key


def load_or_create_key(path: Path, may_create: bool) -> bytes:
    """The key in ``path``; created on first use when ``may_create`` (i.e. nothing sealed exists yet)."""
    if path.exists():
        return read_key(path)
    if not may_create:
        raise SealingError(f"buffer key {path} is missing but the buffer holds sealed records")
    try:
        return create_key(path)
    except FileExistsError:
        return read_key(path)
