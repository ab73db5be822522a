"""Self-service sign-up: how many mails one email gets, how long their codes live, what waits for a code.

Someone who knows only a person's email must not keep them from signing up, nor make their confirmation fail,
nor fill their mailbox (docs/access.md §3 and §9). The rules:

- **Mails** (a code, or the note that the email has an account): at most ``MAILS.limit`` to one email in any
  ``MAILS.window``, whoever asks. A request past that is answered as one that was mailed (``202``, the same body:
  nobody learns which) and sends nothing. Only mails sent count: a request that sent nothing renews nothing, so
  whoever keeps the quota full does it by mailing the owner codes, no more than ``MAILS.limit`` in any
  ``MAILS.window``.
- **Codes** live ``CODE_TTL``, twice ``MAILS.window``: when a request is not mailed, the quota is full, so the
  newest mail to that email went out less than ``MAILS.window`` before, and its code has more than
  ``CODE_TTL - MAILS.window`` left. Any live code mailed to an email finishes any pending sign-up of that email:
  the owner finishes theirs with the newest mail they got, whoever's request sent it.
- **Pending sign-ups**: each request's own (its password's hash, name, role, zone), alive ``PENDING_TTL``, found
  at confirmation by the email and the password, never replaced by another's. Someone else's, with their
  password, is finished only with a code mailed to the owner's inbox. Each network keeps at most
  ``PENDING_PER_NETWORK`` for one email (its newest): a bound per email from anywhere would let an outsider
  push the owner's out, or keep it from being stored; per network, only the owner's own network can. What all
  networks keep together is bounded by their request limits (companion.domain.throttling's ``signup`` step).
"""

from __future__ import annotations

from datetime import timedelta

from companion.domain.throttling import Limit

# A request is mailed while fewer than MAILS.limit mails to its email went out in the last MAILS.window (its
# wait_s is 0), concurrent requests included: never more, and none held back while fewer.
MAILS = Limit(3, timedelta(minutes=15))
CODE_TTL = timedelta(minutes=30)
PENDING_TTL = timedelta(minutes=30)
PENDING_PER_NETWORK = 3

