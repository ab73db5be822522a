"""People and gateways for the benchmarks, made through the real app (in-process) in the bench database."""

from __future__ import annotations

from dataclasses import dataclass

from bench.common import SECRET
from companion import create_app
from tests.support.world import make_user, pair_gateway

TOKEN_TTL_S = 6 * 3600  # long enough for the biggest run; the app under test validates these tokens


@dataclass
class Gateway:
    id: str
    patient_id: str
    serial: str
    headers: dict


def bench_app(uri: str, db_name: str, **settings):
    """The app in-process against the bench database (same secret as the gunicorn under test)."""
    return create_app({"mongodb_uri": uri, "mongodb_db": db_name, "secret_key": SECRET,
                       "password_memory_kib": 1024, "password_time_cost": 1, "access_token_ttl_s": TOKEN_TTL_S,
                       **settings})


def paired_gateways(uri: str, db_name: str, count: int, prefix: str = "") -> list[Gateway]:
    """`count` patients, each with one TENS unit and a gateway paired to it (``prefix``: letters and digits
    that set this set of gateways apart from another in the same database)."""
    app = bench_app(uri, db_name)
    client, services = app.test_client(), app.extensions["companion"]
    gateways = []
    for index in range(count):
        # Each pairing from its own address: pairing is throttled per address (a flood bench pairs hundreds).
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"
        patient = make_user(client, services, key=f"bench_patient_{prefix}{index}", role="patient")
        serial = f"CTU-{prefix}G{index:05d}"
        gateway = pair_gateway(client, patient, f"bench_gateway_{prefix}{index}", serial)
        gateways.append(Gateway(gateway.id, patient.id, serial, gateway.headers))
    services.client.close()
    return gateways
