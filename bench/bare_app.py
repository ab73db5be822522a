"""The floor for API reads: a bare Flask endpoint served by the same gunicorn setup as the app."""

from __future__ import annotations

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/readyz")
def ready():
    return jsonify(status="ok")


@app.get("/bare")
def bare():
    return jsonify(status="ok", items=[])
