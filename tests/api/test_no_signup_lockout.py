"""Someone who knows only a person's email cannot keep them from signing up (docs/access.md §3), nor fill their
mailbox.

The per-email wait on sign-up requests ran from the last request, so someone requesting as each wait ended kept the
owner out for as long as they went on; and each request replaced the pending sign-up with its sender's password, so
the owner's code then worked only with the outsider's password. Now the mails to one email are counted (3 in any 15
minutes, whoever asks; a request past them is answered the same and sends nothing), every request is kept apart, found
at confirmation by its password, and any live code mailed to the email finishes it.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from companion.domain.signup import MAILS
from tests.support.mailbox import CODE
from tests.support.world import PASSWORD

OWNER = "owner@example.org"
HOME = "192.0.2.10"
NETWORKS = itertools.count()
THEIRS = "the outsider's passphrase"


def _elsewhere() -> str:
    """A network no request came from before: the outsider's per-network guards are no obstacle."""
    n = next(NETWORKS)
    return f"10.{n // 62500 % 250}.{n // 250 % 250}.{n % 250 + 1}"


@pytest.fixture
def clock():
    with time_machine.travel(datetime.now(UTC), tick=False) as traveller:
        yield traveller


def _ask(client, email, password, address, **extra):
    body = {"email": email, "password": password, "display_name": "Someone", "time_zone": "UTC"} | extra
    return client.post("/api/v1/auth/signup", json=body, environ_base={"REMOTE_ADDR": address})


def _confirm(client, email, code, password, address=HOME):
    return client.post("/api/v1/auth/signup/confirm", json={"email": email, "code": code, "password": password},
                       environ_base={"REMOTE_ADDR": address})


def _codes(mailbox, email) -> list[str]:
    """The codes mailed to ``email``, oldest first."""
    found = (CODE.search(m.get_payload(decode=True).decode()) for m in mailbox.messages(email))
    return [f.group(1) for f in found if f]


def _login(client, email, password):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": HOME})


def test_an_outsider_requesting_as_fast_as_they_like_neither_blocks_nor_spoils_the_owners_sign_up(client, mailbox,
                                                                                                 clock):
    """Three requests a minute for an hour, each from a fresh network: every one is answered 202 and the mailbox
    gets 12 mails in the hour. The owner, asking at minute 45 (not mailed: the quota is full), finishes with the
    newest mail they got (sent for the outsider at minute 31) up to 15 minutes later, with their own password, and
    the account is the owner's request (name, role, password)."""
    answers = []
    for minute in range(1, 60):
        clock.shift(timedelta(minutes=1))
        answers += [_ask(client, OWNER, THEIRS, _elsewhere()) for _ in range(3)]
        if minute == 45:
            mine = _ask(client, OWNER, PASSWORD, HOME, display_name="The Owner", role="caregiver")
            assert mine.status_code == 202 and mine.get_json() == answers[0].get_json()
            assert len(_codes(mailbox, OWNER)) == 9  # minutes 1, 16 and 31: the owner's was not mailed
            newest_then = _codes(mailbox, OWNER)[-1]
    assert {a.status_code for a in answers} == {202}
    assert len({str(a.get_json()) for a in answers}) == 1
    assert len(mailbox.messages(OWNER)) == 12  # 3 in any 15 minutes
    clock.shift(timedelta(seconds=59))  # 14 min 59 s after the owner asked
    confirmed = _confirm(client, OWNER, newest_then, PASSWORD)
    assert confirmed.status_code == 201, confirmed.get_json()
    assert confirmed.get_json()["display_name"] == "The Owner" and confirmed.get_json()["role"] == "caregiver"
    assert _login(client, OWNER, PASSWORD).status_code == 200
    assert _login(client, OWNER, THEIRS).status_code == 401


def test_a_request_after_the_owners_leaves_the_owners_own_code_working(client, mailbox, clock):
    """The outsider asks right after the owner (their request replaced the owner's, and the owner's code then worked
    only with the outsider's password): the owner's own mail still finishes the owner's request."""
    assert _ask(client, OWNER, PASSWORD, HOME).status_code == 202
    assert _ask(client, OWNER, THEIRS, _elsewhere()).status_code == 202
    owners_own, outsiders = _codes(mailbox, OWNER)
    assert _confirm(client, OWNER, owners_own, PASSWORD).status_code == 201
    assert _login(client, OWNER, PASSWORD).status_code == 200
    # Every other code and request of the email is gone with the account made.
    assert _confirm(client, OWNER, outsiders, THEIRS, address=_elsewhere()).status_code == 401
    assert _login(client, OWNER, THEIRS).status_code == 401


def test_the_outsiders_request_is_never_finished_without_a_code_from_the_owners_inbox(client, mailbox, clock):
    """The outsider's own request holds their password: only a code mailed to the owner's email finishes it. A code
    mailed to the outsider's own address, or guessed, does not."""
    assert _ask(client, OWNER, THEIRS, _elsewhere()).status_code == 202
    assert _ask(client, "outsider@example.net", THEIRS, _elsewhere()).status_code == 202
    (their_own_code,) = _codes(mailbox, "outsider@example.net")
    tries = [_confirm(client, OWNER, their_own_code, THEIRS, address=_elsewhere()),
             *(_confirm(client, OWNER, f"BBBB-BBBB-{i:04d}", THEIRS, address=_elsewhere()) for i in range(20))]
    assert {t.status_code for t in tries} == {401}
    assert _login(client, OWNER, THEIRS).status_code == 401
    # The owner, who never asked, has a code but no request of theirs: their password makes nothing either.
    (owners_code,) = _codes(mailbox, OWNER)
    assert _confirm(client, OWNER, owners_code, PASSWORD).status_code == 401
    # Asking now (mailed), the owner finishes with either code.
    assert _ask(client, OWNER, PASSWORD, HOME).status_code == 202
    assert _confirm(client, OWNER, owners_code, PASSWORD).status_code == 201


@pytest.mark.parametrize("taken", [False, True])
def test_past_the_mails_an_email_may_get_the_answer_is_the_same_and_nothing_is_sent(client, world, mailbox, clock,
                                                                                    taken):
    """New email or taken one (the note that an account exists), the quota is the same and so is every answer."""
    email = world["patient_a"].email if taken else "fresh@example.org"
    answers = [_ask(client, email, THEIRS, _elsewhere()) for _ in range(6)]
    assert {a.status_code for a in answers} == {202} and len({str(a.get_json()) for a in answers}) == 1
    assert len(mailbox.messages(email)) == 3
    assert bool(_codes(mailbox, email)) is not taken
    clock.shift(timedelta(minutes=15))  # the first mails leave the window: mails go out again
    assert _ask(client, email, THEIRS, _elsewhere()).status_code == 202
    assert len(mailbox.messages(email)) == 4


def test_pending_sign_ups_are_bounded_per_network_and_expire(client, db, mailbox, clock):
    """A network keeps its 3 newest requests for one email (with the per-network waits between them); others'
    requests never push the owner's out; each lives 30 minutes, as its code does."""
    assert _ask(client, OWNER, PASSWORD, HOME).status_code == 202
    (owners_code,) = _codes(mailbox, OWNER)
    one_network = "203.0.113.5"
    for i in range(6):
        clock.shift(timedelta(minutes=5 if i >= 3 else 0))  # past the network's own wait (1, 2, 4 minutes)
        assert _ask(client, OWNER, f"{THEIRS} {i}", one_network).status_code == 202
    for _ in range(20):
        assert _ask(client, OWNER, THEIRS, _elsewhere()).status_code == 202
    assert db.pending_signups.count_documents({}) == 1 + 3 + 1  # the same password from elsewhere: one request
    # The owner's request (made 15 minutes before) is still there and finished with the owner's own code.
    clock.shift(timedelta(minutes=14, seconds=59))
    assert _confirm(client, OWNER, owners_code, PASSWORD).status_code == 201


def test_a_request_and_its_code_expire_after_thirty_minutes(client, mailbox, clock):
    assert _ask(client, OWNER, PASSWORD, HOME).status_code == 202
    clock.shift(timedelta(minutes=20))
    assert _ask(client, OWNER, THEIRS, _elsewhere()).status_code == 202
    newest = _codes(mailbox, OWNER)[-1]
    clock.shift(timedelta(minutes=10, seconds=1))  # the code lives 20 minutes more; the owner's request is over
    assert _confirm(client, OWNER, newest, PASSWORD).status_code == 401
    assert _ask(client, OWNER, PASSWORD, HOME).status_code == 202
    assert _confirm(client, OWNER, newest, PASSWORD).status_code == 201


def test_of_concurrent_requests_for_one_email_exactly_the_first_three_are_mailed(services, clock):
    """Requests at the same instant, on several threads: each of the quota's three places goes to one of them (an
    insert under a unique id), so neither does a fourth mail go out (counting the others then deciding let four
    through) nor do all hold back, the owner's among them."""
    throttle = services.accounts.throttle
    with ThreadPoolExecutor(max_workers=8) as pool:
        uses = list(pool.map(lambda _: throttle.within_quota("signup_mail", MAILS, account="concurrent"), range(8)))
    assert sum(use is not None for use in uses) == 3
