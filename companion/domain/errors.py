"""Errors the domain and the services raise when a caller can act on them.

They say what went wrong in the patient's world, not how a protocol reports it: the HTTP kernel
(companion.http.problems) maps each class to a status code and problem-details answer, the clinician
pages to an error page, the command line to a message.
"""


class DomainError(Exception):
    """Base of the errors a caller can act on. ``errors`` names the fields at fault, if any; ``current``
    is the stored object the caller should see instead (a conflict's winner), with its ``version``."""

    def __init__(self, detail: str = "", *, errors: dict | None = None, current: dict | None = None,
                 version: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.current = current
        self.version = version


class NotFound(DomainError):
    """The object does not exist, or exists but the caller may not know it does."""


class Forbidden(DomainError):
    """The caller may see the object but not do this to it."""


class Unauthorized(DomainError):
    """No valid credentials."""


class Conflict(DomainError):
    """The object is not in a state that allows this (already done, changed meanwhile)."""


class Contended(Conflict):
    """Others kept changing the same object while this change was tried: nothing was written, and the same
    request is worth sending again after ``retry_after_s`` seconds (unlike the other conflicts)."""

    def __init__(self, detail: str = "", *, retry_after_s: int = 1):
        super().__init__(detail)
        self.retry_after_s = max(1, int(retry_after_s))


class PreconditionFailed(DomainError):
    """The caller changed a version of the object that is no longer the current one (``current``)."""


class ResyncRequired(DomainError):
    """A sync cursor the server can no longer continue from: the caller must fetch everything again."""


class Invalid(DomainError):
    """The request is well-formed but breaks a domain rule."""


class TooManyRequests(DomainError):
    """Too many attempts; try again after ``retry_after_s`` seconds."""

    def __init__(self, detail: str = "", *, retry_after_s: int = 60):
        super().__init__(detail)
        self.retry_after_s = max(1, int(retry_after_s))


class ServiceUnavailable(DomainError):
    """Something the use case needs is not available right now; retry after ``retry_after_s`` seconds."""

    def __init__(self, detail: str = "", *, retry_after_s: int = 5):
        super().__init__(detail)
        self.retry_after_s = max(1, int(retry_after_s))
