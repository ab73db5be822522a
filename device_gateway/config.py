"""Gateway settings: a JSON file in the state directory, overridden by environment variables.

Environment: ``COMPANION_GATEWAY_STATE_DIR`` (default ``~/.companion-gateway``), ``COMPANION_API_URL``,
``COMPANION_GATEWAY_ID``, ``COMPANION_GATEWAY_SECRET``, ``COMPANION_GATEWAY_MAX_BUFFER_BYTES``,
``COMPANION_GATEWAY_CA_FILE`` (CA bundle that signs the API's certificate, instead of the system store)
and ``COMPANION_GATEWAY_KEY_FILE`` (the buffer's encryption key, default ``buffer.key`` in the state dir).
The API URL must be ``https://``, or plain ``http://`` to this host only (``localhost``, 127.0.0.0/8, ``::1``);
another is a ConfigError (exit 78) where it is used to talk to the API (:meth:`GatewayConfig.api_client`,
``pair``), not when the config is loaded: the commands that send nothing work with it.
The file is written with mode 0600 because it holds the gateway secret.
"""

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from device_gateway.api import ApiClient
from device_gateway.atomic_file import write_atomically
from device_gateway.buffer import DEFAULT_MAX_BYTES, RecordBuffer
from device_gateway.errors import ConfigError
from device_gateway.health import HEALTH_FILE

DEFAULT_STATE_DIR = "~/.companion-gateway"
DEFAULT_API_URL = "http://127.0.0.1:5000"  # where `make run` serves the API
CONFIG_FILE = "config.json"
BUFFER_FILE = "buffer.db"
KEY_FILE = "buffer.key"
# The pairing's nonce (GatewayConfig.pairing_nonce): made before the first pairing request, kept until a pairing
# is saved.
PAIRING_NONCE_FILE = "pairing.nonce"
_NONCE = re.compile(r"[A-Za-z0-9_-]{32,128}")


@dataclass
class GatewayConfig:
    """Everything the gateway needs to know about itself."""

    state_dir: str
    api_url: str = DEFAULT_API_URL
    gateway_id: str | None = None
    gateway_secret: str | None = None
    patient_ref: str | None = None
    device_serials: list[str] = field(default_factory=list)
    paired_at: str | None = None
    name: str | None = None
    max_buffer_bytes: int = DEFAULT_MAX_BYTES
    ca_file: str | None = None
    key_file: str | None = None

    @property
    def is_paired(self) -> bool:
        """True once ``pair`` has stored credentials (or the environment supplies them)."""
        return bool(self.gateway_id and self.gateway_secret)

    @property
    def buffer_path(self) -> Path:
        """Where the SQLite buffer lives."""
        return Path(self.state_dir) / BUFFER_FILE

    @property
    def buffer_key_path(self) -> Path:
        """The key file that seals the buffer's records."""
        return Path(self.key_file).expanduser() if self.key_file else Path(self.state_dir) / KEY_FILE

    @property
    def health_path(self) -> Path:
        """Where the running gateway notes its loops' errors, for ``status``."""
        return Path(self.state_dir) / HEALTH_FILE

    def open_buffer(self) -> RecordBuffer:
        """The gateway's buffer with its cap and key (raises BufferDamaged for a damaged or lost one), noting in it
        whose records it holds."""
        buffer = RecordBuffer(self.buffer_path, self.max_buffer_bytes, key_file=self.buffer_key_path)
        if self.patient_ref:
            buffer.note_patient(self.patient_ref)
        return buffer

    def api_client(self) -> ApiClient | None:
        """An API client with this gateway's credentials and CA settings (None when not paired); ConfigError for an
        API URL the gateway may not talk to (:func:`~device_gateway.api.checked_api_url`)."""
        if not (self.gateway_id and self.gateway_secret):
            return None
        return ApiClient(self.api_url, self.gateway_id, self.gateway_secret, ca_file=self.ca_file)

    @property
    def paired_at_datetime(self) -> datetime | None:
        """The pairing time, used to recognise a unit whose clock was reset."""
        return datetime.fromisoformat(self.paired_at) if self.paired_at else None

    @property
    def pairing_nonce_path(self) -> Path:
        return Path(self.state_dir) / PAIRING_NONCE_FILE

    def pairing_nonce(self) -> str:
        """The nonce this gateway sends with its pairing requests: the one kept in the state directory, else a new
        one (32 random bytes, base64url), written there durably (0600) before it is returned, so that a pairing
        retried after its answer was lost (a timeout, the Wi-Fi dropping, a crash or a restart midway) sends the
        same one, and the API answers it again rather than refusing the used code. One cut short or altered is
        replaced by a new one."""
        path = self.pairing_nonce_path
        try:
            kept = path.read_text().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            kept = ""
        if _NONCE.fullmatch(kept):
            return kept
        nonce = secrets.token_urlsafe(32)
        Path(self.state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(path, nonce + "\n")
        return nonce

    def forget_pairing_nonce(self) -> None:
        """Drop the pairing's nonce once its credentials are saved: the next pairing (a new code) gets a new one."""
        self.pairing_nonce_path.unlink(missing_ok=True)

    def save(self) -> None:
        """Write the config file (0600)."""
        directory = Path(self.state_dir)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / CONFIG_FILE
        data = {key: value for key, value in asdict(self).items() if key != "state_dir"}
        # Replaced whole (a power cut while pairing leaves the old file or the new one, never half of one).
        write_atomically(path, json.dumps(data, indent=2))


def load_config(state_dir: str | None = None, environ: dict[str, str] | None = None, *,
                replacing: bool = False) -> GatewayConfig:
    """Read the config file (if any) under the state directory, then apply environment overrides (ConfigError
    for a file that cannot be read, unless ``replacing`` it: pairing again starts from a blank one)."""
    env = os.environ if environ is None else environ
    directory = Path(state_dir or env.get("COMPANION_GATEWAY_STATE_DIR") or DEFAULT_STATE_DIR).expanduser()
    path = directory / CONFIG_FILE
    try:
        stored = json.loads(path.read_text()) if path.exists() else {}
        config = GatewayConfig(state_dir=str(directory), **stored)
    except (OSError, ValueError, TypeError) as exc:
        if replacing:
            return _overridden(GatewayConfig(state_dir=str(directory)), env)
        raise ConfigError(f"{path} cannot be read ({type(exc).__name__}): pair the gateway again "
                          "(`device-gateway pair CODE`); its buffered records are kept") from None
    return _overridden(config, env)


def _overridden(config: GatewayConfig, env) -> GatewayConfig:
    # Not checked here: only where it is used to talk to the API (ApiClient, pair). A gateway upgraded with a
    # stored LAN http:// URL then still answers status, dead-letters and buffer-recover, which send nothing.
    config.api_url = env.get("COMPANION_API_URL", config.api_url)
    config.gateway_id = env.get("COMPANION_GATEWAY_ID", config.gateway_id)
    config.gateway_secret = env.get("COMPANION_GATEWAY_SECRET", config.gateway_secret)
    config.ca_file = env.get("COMPANION_GATEWAY_CA_FILE", config.ca_file)
    config.key_file = env.get("COMPANION_GATEWAY_KEY_FILE", config.key_file)
    if "COMPANION_GATEWAY_MAX_BUFFER_BYTES" in env:
        value = env["COMPANION_GATEWAY_MAX_BUFFER_BYTES"]
        if not value.strip().isdigit() or int(value) <= 0:
            raise ConfigError(f"COMPANION_GATEWAY_MAX_BUFFER_BYTES must be a whole number of bytes above 0, not "
                              f"{value!r}")
        config.max_buffer_bytes = int(value)
    if config.ca_file and not os.access(config.ca_file, os.R_OK):
        raise ConfigError(f"the CA file {config.ca_file} (COMPANION_GATEWAY_CA_FILE) cannot be read")
    return config
