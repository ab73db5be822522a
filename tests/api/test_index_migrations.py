"""An index whose definition changed in the code: the processes say so and which command applies it
(`/readyz` 503 naming the index, not "database is not reachable"), and `companion migrate` applies it."""

from __future__ import annotations

import pytest
from pymongo import ASCENDING, DESCENDING, IndexModel

from companion import cli, create_app
from companion.store import db as store_db
from companion.store.db import IndexesOutOfDate, ensure_indexes, migrate_indexes, plan_indexes


@pytest.fixture
def db(mongo_client, db_name):
    database = mongo_client[db_name]
    ensure_indexes(database)
    return database


@pytest.fixture
def use_database(monkeypatch, mongo_uri, db_name):
    """The commands' settings come from the environment: point it at the test's database."""
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)


def _redefine(db, collection: str, name: str, *keys: str, unique: bool = False) -> None:
    db[collection].drop_index(name)
    db[collection].create_indexes([IndexModel([(k, ASCENDING) for k in keys], name=name, unique=unique)])


def test_every_declared_index_uses_only_options_both_servers_keep():
    # FerretDB v1 keeps keys and `unique` only: another option would look changed at every start.
    for _, models in store_db.declared_indexes():
        for model in models:
            assert set(model.document) <= {"key", "name", "unique"}, model.document


def test_a_database_with_the_declared_indexes_needs_no_migration(db):
    assert plan_indexes(db) == []


def test_a_changed_index_makes_readyz_name_it_and_the_command_that_applies_it(db, settings_overrides, capsys,
                                                                              use_database):
    _redefine(db, "audit_events", "request", "request_id", "at")
    with pytest.raises(IndexesOutOfDate, match=r"audit_events\.request.*companion migrate"):
        ensure_indexes(db)
    app = create_app(settings_overrides)
    try:
        client = app.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "audit_events.request" in ready.json["detail"] and "companion migrate" in ready.json["detail"]
        assert "not reachable" not in ready.json["detail"]

        assert cli.main(["migrate"]) == 0
        out = capsys.readouterr().out
        assert "audit_events.request: recreated, was (request_id 1, at 1), now (request_id 1)" in out
        assert client.get("/readyz").status_code == 200
    finally:
        app.extensions["companion"].client.close()
    assert plan_indexes(db) == []
    assert dict(db.audit_events.index_information()["request"]["key"]) == {"request_id": 1}


def test_an_index_that_became_unique_is_recreated_unique(db):
    _redefine(db, "users", "email_unique", "email")
    assert [(c.name, c.action) for c in plan_indexes(db)] == [("email_unique", "recreate")]
    migrate_indexes(db)
    assert db.users.index_information()["email_unique"]["unique"] is True


def test_a_renamed_index_replaces_the_old_one(db):
    db.audit_events.drop_index("request")
    db.audit_events.create_indexes([IndexModel([("request_id", ASCENDING)], name="by_request")])
    assert [(c.name, c.action, c.was["name"]) for c in plan_indexes(db)] == [("request", "rename", "by_request")]
    migrate_indexes(db)
    names = set(db.audit_events.index_information())
    assert "request" in names and "by_request" not in names


def test_an_index_the_code_does_not_declare_is_left_alone(db):
    db.audit_events.create_indexes([IndexModel([("actor_id", ASCENDING)], name="operators_own")])
    assert plan_indexes(db) == []
    migrate_indexes(db)
    assert "operators_own" in db.audit_events.index_information()


def test_a_unique_index_over_duplicates_fails_with_one_line_naming_it(db, capsys, use_database):
    _redefine(db, "users", "email_unique", "email")
    db.users.insert_many([{"email": "same@example.org"}, {"email": "same@example.org"}])
    assert cli.main(["migrate"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("companion migrate: users.email_unique could not be created (email 1) unique")
    assert len(err.splitlines()) == 1


def test_a_test_database_is_handed_out_again_emptied_unless_its_indexes_changed(mongo_client):
    """tests.support.databases: what every test's database comes from."""
    from tests.support.databases import DatabasePool

    pool = DatabasePool(mongo_client)
    name = pool.take()
    ensure_indexes(mongo_client[name])
    mongo_client[name].users.insert_one({"email": "left@example.org"})
    mongo_client[name].scratch.insert_one({"an": "undeclared collection"})
    pool.give_back(name)
    assert pool.free == [name]
    assert pool.take() == name
    assert mongo_client[name].users.count_documents({}) == 0
    assert "scratch" not in mongo_client[name].list_collection_names()
    mongo_client[name].audit_events.drop_index("request")  # a test changed an index: never handed out again
    pool.give_back(name)
    assert pool.free == [] and name not in mongo_client.list_database_names()


def test_the_notification_lists_are_read_in_the_order_of_their_indexes():
    """The lists sort on (created_at, _id) (NEWEST_FIRST): an index ending in created_at does not give that order,
    and MongoDB sorted every one of the person's (or patient's) notifications in memory for each page."""
    from companion.store.outbox import INDEXES, NEWEST_FIRST
    keys = {model.document["name"]: list(model.document["key"].items()) for model in INDEXES["push_outbox"]}
    assert keys["recipient_history"] == [("recipient_user_id", ASCENDING), *NEWEST_FIRST]
    assert keys["patient_history"] == [("patient_id", ASCENDING), *NEWEST_FIRST]


def test_migrate_brings_the_notification_history_indexes_of_before_to_the_lists_order(db, capsys, use_database):
    """A database made by the version before: (recipient_user_id, created_at) and (patient_id, created_at) under
    the same names. MongoDB refuses another key under an existing name, so the processes leave them to the
    migration step (/readyz names them), which drops and creates each again."""
    for name, field in (("recipient_history", "recipient_user_id"), ("patient_history", "patient_id")):
        db.push_outbox.drop_index(name)
        db.push_outbox.create_indexes([IndexModel([(field, ASCENDING), ("created_at", DESCENDING)], name=name)])
    with pytest.raises(IndexesOutOfDate, match=r"push_outbox\.patient_history.*push_outbox\.recipient_history"):
        ensure_indexes(db)
    assert cli.main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert ("push_outbox.recipient_history: recreated, was (recipient_user_id 1, created_at -1), "
            "now (recipient_user_id 1, created_at -1, _id -1)") in out
    assert "push_outbox.patient_history: recreated" in out
    indexes = db.push_outbox.index_information()
    assert indexes["recipient_history"]["key"] == [("recipient_user_id", 1), ("created_at", -1), ("_id", -1)]
    assert indexes["patient_history"]["key"] == [("patient_id", 1), ("created_at", -1), ("_id", -1)]
    assert plan_indexes(db) == []
