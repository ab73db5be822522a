"""FCM registration tokens, one per app install (a person may have several phones)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from companion.clock import now
from companion.domain.notifications import PLATFORMS
from companion.store.batches import chunks

INDEXES = {
    "push_tokens": [
        IndexModel([("user_id", ASCENDING), ("install_id", ASCENDING)], unique=True, name="install_unique"),
        IndexModel([("token", ASCENDING)], name="token"),
        IndexModel([("updated_at", ASCENDING)], name="updated"),
    ],
}

# FCM calls a token stale after a month without refresh; the app refreshes at least monthly, and we
# stop addressing a phone that has not checked in for 60 days.
STALE_AFTER = timedelta(days=60)
# A person's phones, kept at most (docs/pushes.md "Which phones"): a phone, a tablet, a reinstall or two. An app
# that makes a new install id at each launch, or an abusive account, would otherwise grow without end and
# make each push go to every one of them.
MAX_PHONES_PER_USER = 10
READ_ALL_OVER = 5000
_IDS_PER_QUERY = 500


class PushTokens:
    def __init__(self, db: Database, clock: Callable[[], datetime] = now):
        self.col = db.push_tokens
        self.clock = clock
        self.read_all_over = READ_ALL_OVER

    def register(self, user_id: str, install_id: str, token: str, platform: str,
                 address: str = "token", locale: str | None = None, session: str | None = None) -> dict:
        """Record (or refresh) the token of one install of the app, under the API session (token family)
        ``session`` that registered it: the phone is forgotten when that session ends.

        ``address`` is ``"token"`` for an FCM registration token, ``"fid"`` for a Firebase installation
        id. The same token under another user or install is removed first: a phone handed over to
        someone else must stop receiving the previous owner's notifications. A person keeps at most
        ``MAX_PHONES_PER_USER`` phones: beyond them, those least recently registered are forgotten.
        """
        if platform not in PLATFORMS:
            raise ValueError(f"unknown platform {platform!r}")
        if address not in ("token", "fid"):
            raise ValueError(f"unknown address kind {address!r}")
        self.col.delete_many({"token": token, "$or": [{"user_id": {"$ne": user_id}},
                                                      {"install_id": {"$ne": install_id}}]})
        update = {"$set": {"token": token, "platform": platform, "address": address, "locale": locale,
                           "session": session, "updated_at": self.clock()}}
        try:
            phone = self._upsert(user_id, install_id, update)
        except DuplicateKeyError:
            # Two first registrations of the same install raced; the other insert won, so update it.
            phone = self._upsert(user_id, install_id, update)
        self._keep_newest(user_id, but=install_id)
        return phone

    def _keep_newest(self, user_id: str, *, but: str) -> None:
        """Forget the person's phones beyond ``MAX_PHONES_PER_USER``, least recently registered first; never
        ``but``, the install registering now."""
        others = self.col.find({"user_id": user_id, "install_id": {"$ne": but}}, {"_id": 1})
        beyond = [doc["_id"] for doc in others.sort([("updated_at", DESCENDING), ("_id", DESCENDING)])
                  .skip(MAX_PHONES_PER_USER - 1)]
        if beyond:
            self.col.delete_many({"_id": {"$in": beyond}})

    def _upsert(self, user_id: str, install_id: str, update: dict) -> dict:
        return self.col.find_one_and_update({"user_id": user_id, "install_id": install_id}, update,
                                            upsert=True, return_document=ReturnDocument.AFTER)

    def for_users(self, user_ids: Iterable[str]) -> dict[str, list[dict]]:
        """The registered phones of each of ``user_ids`` (users without one are absent), at most
        ``MAX_PHONES_PER_USER`` each, the most recently registered.

        Up to ``read_all_over`` (``READ_ALL_OVER``) people are looked up through the ``user_id`` index, 500 at a time; a
        larger set (a peak minute's recipients, a sizeable share of everyone) is served by one
        sequential read of the collection instead of that many lookups. No read is cut short by a count shared
        among the people it reads: one person's many phones would hide another's. Registration keeps each
        person to ``MAX_PHONES_PER_USER`` phones, which bounds the read; phones registered beyond it before
        that cap (or by two registrations at once) are left out here until the person's next registration
        forgets them.
        """
        ids = sorted(set(user_ids))
        phones: dict[str, list[dict]] = {}
        if len(ids) > self.read_all_over:
            wanted = set(ids)
            for doc in self.col.find({}):
                if doc["user_id"] in wanted:
                    phones.setdefault(doc["user_id"], []).append(doc)
        else:
            for part in chunks(ids, _IDS_PER_QUERY):
                for doc in self.col.find({"user_id": {"$in": part}}):
                    phones.setdefault(doc["user_id"], []).append(doc)
        for user_id, theirs in phones.items():
            if len(theirs) > MAX_PHONES_PER_USER:
                theirs.sort(key=lambda doc: doc["updated_at"], reverse=True)
                phones[user_id] = theirs[:MAX_PHONES_PER_USER]
        return phones

    def unregister(self, user_id: str, install_id: str, *, session: str | None = None) -> int:
        """Forget one install's token (sign-out on that phone); with ``session``, only if registered under it."""
        query = {"user_id": user_id, "install_id": install_id}
        if session is not None:
            query["session"] = session
        return self.col.delete_one(query).deleted_count

    def delete_for_user(self, user_id: str, *, except_phone: tuple[str, str] | None = None) -> int:
        """Forget every phone of a person (every session of theirs ended, or their account was closed), but
        ``except_phone`` if given: the install (its second item) if registered under the session (its first)."""
        query: dict = {"user_id": user_id}
        if except_phone is not None:
            session, install_id = except_phone
            query["$or"] = [{"session": {"$ne": session}}, {"install_id": {"$ne": install_id}}]
        return self.col.delete_many(query).deleted_count

    def forget_session(self, user_id: str, session: str) -> int:
        """Forget the phones registered under one API session of a person (it ended)."""
        return self.col.delete_many({"user_id": user_id, "session": session}).deleted_count

    def move_phone(self, user_id: str, phone: tuple[str, str], new: str) -> int:
        """The phone ``phone`` (the session that registered it and its install) goes on under session ``new``
        (which replaced that session)."""
        session, install_id = phone
        return self.col.update_one({"user_id": user_id, "install_id": install_id, "session": session},
                                   {"$set": {"session": new}}).modified_count

    def remove_dead(self, token: str) -> int:
        """Delete a token FCM reported dead (UNREGISTERED, SENDER_ID_MISMATCH, invalid).

        Only that exact token goes: an install that has meanwhile registered a fresh one keeps it.
        """
        return self.col.delete_many({"token": token}).deleted_count

    def prune_stale(self, older_than: timedelta = STALE_AFTER) -> int:
        """Delete tokens not refreshed for ``older_than`` (60 days by default)."""
        return self.col.delete_many({"updated_at": {"$lt": self.clock() - older_than}}).deleted_count
