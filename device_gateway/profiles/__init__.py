"""Device profiles: one module per device type, each with its GATT UUIDs and pure byte parsers.

A profile module is registered here by name, the name the API uses in ``GET /gateway/devices``
(``"profile": "companion-tens"``). The link asks :func:`get_profile` for the module.
"""

from types import ModuleType

from device_gateway.profiles import beurer_em70, companion_tens

PROFILES: dict[str, ModuleType] = {
    companion_tens.PROFILE_NAME: companion_tens,
    beurer_em70.PROFILE_NAME: beurer_em70,
}


class UnknownProfile(LookupError):
    """No profile module is registered under that name."""


def get_profile(name: str) -> ModuleType:
    """Return the profile module registered under ``name``."""
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownProfile(name) from None
