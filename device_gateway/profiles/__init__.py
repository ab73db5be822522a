"""Device profiles: one module per device type, each with its GATT UUIDs and pure byte parsers.

There is deliberately no registry that picks a profile module by name. The link drives one protocol, the
Companion TENS profile (``companion_tens``): its service and characteristics, per-unit sequence numbers,
"send from", "ack up to" and the transfer summary are what make a transfer resumable and exactly-once, and
``link.py`` is written against them. ``beurer_em70`` is a frame codec of a different device (``0x5A, len,
cmd, data, checksum``) with no GATT layout, no session records and no transfer to drive, so a registry
holding both would promise a choice the link cannot honour: looking ``beurer-em70`` up would hand it a
module it cannot use. The runner instead pulls the units whose ``profile`` (from ``GET
/api/v1/gateway/devices``) is ``companion-tens`` and names the others in a warning.

A second drivable profile needs its own transfer (how records are asked for, acknowledged and resumed),
not only a parser; when one exists, the link should take a profile object with that transfer, chosen by
the API's profile name, and this module is where the choice belongs.
"""
