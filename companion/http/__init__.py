"""The HTTP kernel: what the JSON API (companion.api) and the clinician pages (companion.web) share.

- :mod:`.security`: every view declares its roles; the gate authenticates, checks the role and decides
  the caller's standing with the patient in the URL once per request (a :class:`~companion.domain.access.Grant`);
- :mod:`.auditing`: views note which patients' data they touched; one audit event per patient is written
  after the view, and a failed audit write fails the request closed;
- :mod:`.problems`: every error as one RFC 9457 problem-details answer, the one place where domain errors
  become status codes and headers;
- :mod:`.schemas`: strict load schemas (unknown fields refused, no operator keys) and shared arguments;
- :mod:`.idempotency`: the ``Idempotency-Key`` header on POSTs that create things;
- :mod:`.conditional`: versions as ETags, ``If-Match`` on writes (412 with the current object),
  ``If-None-Match`` on reads (304).

Views reach the use cases through :func:`services`, and only through it.
"""

from __future__ import annotations

from flask import current_app

from companion.services.container import Services


def services() -> Services:
    """The service container of the running app (one per process)."""
    return current_app.extensions["companion"]
