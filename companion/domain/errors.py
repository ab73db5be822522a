"""Errors the domain and services raise; the HTTP layer maps each to one problem-details answer."""


class DomainError(Exception):
    """Base of the errors a caller can act on."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str = "", *, errors: dict | None = None, headers: dict | None = None):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors
        self.headers = headers or {}


class NotFound(DomainError):
    """The object does not exist, or exists but the caller may not know it does."""

    status = 404
    title = "Not found"


class Forbidden(DomainError):
    """The caller may see the object but not do this to it."""

    status = 403
    title = "Forbidden"


class Unauthorized(DomainError):
    """No valid credentials."""

    status = 401
    title = "Unauthorized"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class Invalid(DomainError):
    """The request is well-formed but breaks a domain rule."""

    status = 422
    title = "Unprocessable content"


class TooManyRequests(DomainError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str = "", *, retry_after_s: int = 60):
        super().__init__(detail, headers={"Retry-After": str(max(1, int(retry_after_s)))})
        self.retry_after_s = max(1, int(retry_after_s))


class ServiceUnavailable(DomainError):
    status = 503
    title = "Service unavailable"
