"""Fake radio for tests and demos: a fake BlueZ on a private D-Bus bus and simulated TENS units.

The real bleak talks to this exactly as it talks to BlueZ; nothing in the gateway knows the difference.
"""
