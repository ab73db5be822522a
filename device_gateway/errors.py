"""The base of the gateway's own errors."""


class GatewayError(RuntimeError):
    """An error whose message the gateway writes itself: it names files, units, statuses and counts, never
    session content, so it may go to logs, to ``device-gateway status`` and to the server as is."""


class ConfigError(GatewayError):
    """The gateway's configuration (its file or an environment setting) cannot be used: a person must fix it."""
