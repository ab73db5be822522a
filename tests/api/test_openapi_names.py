"""Every schema in the OpenAPI document has its own name (apispec renames duplicates silently)."""

from __future__ import annotations

import warnings

from companion import create_app


def test_no_two_schemas_share_a_name(settings_overrides):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = create_app(settings_overrides)
        app.test_client().get("/openapi.json")
        app.extensions["companion"].client.close()
    assert [str(w.message) for w in caught if "Multiple schemas resolved" in str(w.message)] == []
