"""Idempotency-Key claims for the POSTs that create things: the first request with a key does the work,
a repeat replays its answer, a repeat while it runs waits, a key whose holder died is taken over."""

from __future__ import annotations

from datetime import timedelta

from companion.domain.errors import Conflict, Invalid
from companion.settings import Settings
from companion.store.idempotency import DONE, HeldKey, StoredKey
from companion.store.stores import Stores


class IdempotencyClaims:
    def __init__(self, settings: Settings, stores: Stores):
        self.keys = stores.idempotency_keys
        self.lease = timedelta(seconds=settings.idempotency_lease_s)

    def begin(self, caller_id: str, key: str, request_hash: str) -> HeldKey | StoredKey:
        """A HeldKey: this request holds the key and does the work (as that claim: see request_key). A stored
        answer: replay it. Invalid: the key was used for another request (answered, running, or interrupted by a
        failure that may have written part of its work). Conflict (with Retry-After): another request holds it
        right now."""
        stored = self.keys.claim(caller_id, key, request_hash, self.lease)
        if isinstance(stored, HeldKey):
            return stored
        if stored.request_hash != request_hash:
            raise Invalid("this Idempotency-Key was used with a different request")
        if stored.state != DONE:
            raise RetryLater("a request with this Idempotency-Key is still being processed",
                             retry_after_s=max(1, int(self.lease.total_seconds())))
        return stored

    @staticmethod
    def request_key(caller_id: str, key: str, held: HeldKey, request_hash: str) -> str:
        """What names the request that holds the key, for the use case to derive the ids of what it creates from:
        its caller, key and request (``request_hash``: method, path and body). The same for every retry of the
        request, however late: a phone offline for days that retries a create after the key was forgotten (24
        hours) finds what the first attempt made, where naming it by the claim made a second reminder or practice.
        Another request with the key (a corrected body after a refusal, or a key used again for something else
        once forgotten) names another object. A claim stored before claims had ids keeps the name it had then."""
        return f"{caller_id}:{key}:{request_hash}" if held.claim_id else f"{caller_id}:{key}"

    def complete(self, caller_id: str, key: str, held: HeldKey, status: int, body: bytes, mimetype: str,
                 headers: dict[str, str] | None = None) -> bool:
        """Keep the answer (and the headers that name what it made: its Location, its ETag) for replays, under the
        claim ``held`` the request did its work as: not when another request has claimed the key since (its lease
        ran out, a retry took the key over and failed, and another request claimed it anew)."""
        return self.keys.complete(caller_id, key, held, status, body, mimetype, headers)

    def release(self, caller_id: str, key: str, held: HeldKey, *, interrupted: bool = False) -> bool:
        """Let the key go for a retry of a request that failed, while it is still under its claim ``held``: for any
        request when it was refused (nothing written); ``interrupted`` (it may have written part of its work) for its
        retry only, the same request, which finishes that work; another request with the key is then Invalid."""
        return self.keys.release(caller_id, key, held, interrupted=interrupted)


class RetryLater(Conflict):
    """Conflict for now: the same request is in progress; try again after ``retry_after_s`` seconds."""

    def __init__(self, detail: str, *, retry_after_s: int):
        super().__init__(detail)
        self.retry_after_s = retry_after_s
