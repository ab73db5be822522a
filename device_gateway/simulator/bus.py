"""A private D-Bus "system" bus for the fake BlueZ: a ``dbus-daemon`` on a unix socket in a temp dir."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""


class PrivateSystemBus:
    """Start and stop a private bus; ``address`` is what ``DBUS_SYSTEM_BUS_ADDRESS`` must hold."""

    def __init__(self, daemon: str | None = None) -> None:
        self.daemon = daemon or shutil.which("dbus-daemon") or "/usr/bin/dbus-daemon"
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self.address = ""

    def start(self) -> str:
        """Start ``dbus-daemon`` and return its address."""
        self._dir = tempfile.TemporaryDirectory(prefix="companion-bus-")
        config = Path(self._dir.name) / "bus.conf"
        config.write_text(_CONFIG.format(socket=Path(self._dir.name) / "system_bus_socket"))
        self._proc = subprocess.Popen(
            [self.daemon, f"--config-file={config}", "--nofork", "--print-address"],
            # stderr only ever carries "Failed to set fd limit" when not run as a system service.
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self._proc.stdout is not None
        self.address = self._proc.stdout.readline().strip()
        if not self.address:
            self.stop()
            raise RuntimeError("dbus-daemon did not print its address")
        return self.address

    def export_to_environment(self) -> None:
        """Point bleak (and any dbus-fast client in this process) at this bus."""
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self.address

    def stop(self) -> None:
        """Stop the daemon and remove its socket directory."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> "PrivateSystemBus":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
