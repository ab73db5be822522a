"""Per-install FCM tokens in the real database (FerretDB in CI)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from companion.store.push_tokens import MAX_PHONES_PER_USER, PushTokens
from tests.notify.clock import FakeClock


@pytest.fixture
def tokens(store_db, clock):
    return PushTokens(store_db, clock=clock)


def test_each_install_keeps_one_token_refreshed_in_place(tokens, store_db):
    tokens.register("u-1", "phone-a", "tok-1", "android")
    tokens.register("u-1", "phone-a", "tok-2", "android")
    assert [d["token"] for d in store_db.push_tokens.find({"user_id": "u-1"})] == ["tok-2"]


def test_a_person_with_three_phones_has_three_tokens(tokens):
    for n in range(3):
        tokens.register("u-1", f"phone-{n}", f"tok-{n}", "ios")
    assert len(tokens.for_users(["u-1"])["u-1"]) == 3


def test_token_handed_to_another_user_leaves_the_previous_owner(tokens):
    tokens.register("u-1", "phone-a", "tok-shared", "android")
    tokens.register("u-2", "phone-b", "tok-shared", "android")
    assert tokens.for_users(["u-1", "u-2"]).keys() == {"u-2"}


def test_dead_token_is_removed_but_a_fresh_one_for_the_same_install_stays(tokens):
    tokens.register("u-1", "phone-a", "tok-old", "android")
    tokens.register("u-1", "phone-a", "tok-new", "android")
    assert tokens.remove_dead("tok-old") == 0
    assert [d["token"] for d in tokens.for_users(["u-1"])["u-1"]] == ["tok-new"]


def test_prune_deletes_only_tokens_not_refreshed_for_60_days(tokens, clock: FakeClock):
    tokens.register("u-1", "phone-old", "tok-old", "android")
    clock.advance(timedelta(days=2))
    tokens.register("u-1", "phone-recent", "tok-recent", "android")
    clock.advance(timedelta(days=59))
    assert tokens.prune_stale() == 1
    assert [d["install_id"] for d in tokens.for_users(["u-1"])["u-1"]] == ["phone-recent"]


def test_one_persons_many_installs_do_not_hide_anothers_phone(tokens):
    for n in range(40):
        tokens.register("u-many", f"install-{n}", f"tok-many-{n}", "android")
    tokens.register("u-other", "phone", "tok-other", "android")
    assert "u-other" in tokens.for_users(["u-many", "u-other"])


def test_a_person_keeps_only_their_most_recently_registered_phones(tokens, store_db, clock: FakeClock):
    for n in range(MAX_PHONES_PER_USER + 5):
        tokens.register("u-1", f"install-{n}", f"tok-{n}", "android")
        clock.advance(timedelta(minutes=1))
    tokens.register("u-1", "install-0", "tok-0-again", "android")
    kept = {d["install_id"] for d in store_db.push_tokens.find({"user_id": "u-1"})}
    assert kept == {"install-0"} | {f"install-{n}" for n in range(6, MAX_PHONES_PER_USER + 5)}


def test_phones_stored_beyond_the_cap_are_not_all_addressed(tokens, store_db, clock: FakeClock):
    # As an account registered before the cap may have them: the read takes the most recently registered.
    store_db.push_tokens.insert_many([
        {"user_id": "u-1", "install_id": f"install-{n}", "token": f"tok-{n}", "platform": "android",
         "address": "token", "locale": None, "session": None, "updated_at": clock() + timedelta(minutes=n)}
        for n in range(MAX_PHONES_PER_USER + 5)])
    tokens.register("u-2", "phone", "tok-other", "android")
    phones = tokens.for_users(["u-1", "u-2"])
    assert sorted(p["install_id"] for p in phones["u-1"]) == sorted(
        f"install-{n}" for n in range(5, MAX_PHONES_PER_USER + 5))
    assert [p["install_id"] for p in phones["u-2"]] == ["phone"]


def test_unknown_platform_is_refused(tokens):
    with pytest.raises(ValueError, match="platform"):
        tokens.register("u-1", "phone-a", "tok-1", "symbian")


def test_install_uniqueness_is_an_index_created_at_start_up(store_db):
    info = store_db.push_tokens.index_information()
    assert info["install_unique"]["unique"] is True
    assert store_db.push_outbox.index_information()["source_recipient_unique"]["unique"] is True
