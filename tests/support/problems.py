"""Checking that an answer is the one problem-details shape (RFC 9457), with no stack trace in it."""

from __future__ import annotations


def assert_problem(response, status):
    """Assert ``response`` (Flask test client) is an ``application/problem+json`` of ``status``; its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.json
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    assert "Traceback" not in response.get_data(as_text=True)
    return body
