"""The floors for API reads, served by the same gunicorn setup as the app: a bare Flask endpoint, and one that
does a single `find_one` by `_id` on the benchmark's database server (the database floor)."""

from __future__ import annotations

import os

import pymongo
from flask import Flask, jsonify

app = Flask(__name__)
FLOOR_ID = "floor"
_collection = None


def _floor_collection():
    global _collection
    if _collection is None:  # one client per worker process, made on first use (after gunicorn forks)
        client = pymongo.MongoClient(os.environ["MONGODB_URI"], tz_aware=True)
        _collection = client[os.environ["MONGODB_DB"]].bench_floor
    return _collection


@app.get("/readyz")
def ready():
    return jsonify(status="ok")


@app.get("/bare")
def bare():
    return jsonify(status="ok", items=[])


@app.get("/floor")
def floor():
    doc = _floor_collection().find_one({"_id": FLOOR_ID})
    return jsonify(status="ok", items=[doc["name"]] if doc else [])
