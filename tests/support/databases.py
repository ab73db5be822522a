"""Test databases handed out with every declared index in place, and emptied for the next test after each.

Creating a database's 85 indexes costs the development server about 0.17 s, paid by every test that makes an
app; emptying the collections of one used before, and checking its indexes are still exactly the declared
ones, costs about 0.04 s. A database whose indexes a test changed (dropped, added, redefined) or which never
got them is dropped instead, and so is every collection no store declares, so a test starts from what a
fresh database would be once the app has started on it: the declared collections, empty, with their indexes.
A test that must see a database the app has never touched asks for one with ``@pytest.mark.fresh_database``.
"""

from __future__ import annotations

import uuid

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from companion.store.db import declared_indexes, index_form


def fresh_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


class DatabasePool:
    def __init__(self, client: MongoClient):
        self.client = client
        self.free: list[str] = []
        self.declared = {collection: {model.document["name"]: index_form(model.document) for model in models}
                         for collection, models in declared_indexes()}

    def take(self, *, fresh: bool = False) -> str:
        return self.free.pop() if self.free and not fresh else fresh_name()

    def give_back(self, name: str) -> None:
        """Empty ``name`` for the next test if its indexes are still the declared ones; drop it otherwise."""
        db = self.client[name]
        try:
            present = set(db.list_collection_names())
            if present and self._as_declared(db, present):
                for collection in present - set(self.declared):
                    db.drop_collection(collection)
                for collection in present & set(self.declared):
                    db[collection].delete_many({})
                self.free.append(name)
                return
        except PyMongoError:
            pass
        self.client.drop_database(name)

    def drop_all(self) -> None:
        for name in self.free:
            self.client.drop_database(name)
        self.free.clear()

    def _as_declared(self, db, present: set[str]) -> bool:
        """Every declared collection holds exactly its declared indexes (and ``_id_``); one that declares none
        need not exist yet."""
        for collection, forms in self.declared.items():
            if collection not in present:
                if forms:
                    return False
                continue
            held = {index["name"]: index_form(index) for index in db[collection].list_indexes()}
            if held.pop("_id_", None) is None or held != forms:
                return False
        return True
