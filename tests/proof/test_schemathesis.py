"""Schemathesis against the app's own OpenAPI document, authenticated as each role.

Every operation in /openapi.json is called with generated requests: valid ones whose path points at
patient A's real objects (so handlers run past the access gate), valid ones with generated ids, and
invalid ones (negative mode). Nothing may answer 5xx, every status answered must be one the operation
declares by its code (not only as ``default``), and every response must match the schema the document
declares for its status code. Bounded by COMPANION_FUZZ_EXAMPLES per operation and mode
(default 10), derandomized so CI is repeatable; set it higher for a nightly run.

The stateful phase chains operations: schemathesis infers the links between them from the document
(an id in one answer feeds the path or body of another: ``GET /auth/me`` → ``GET /patients/{patient_id}``
→ its reminders, diary, invitations, gateways ...), and runs sequences of them as each role, with the same
checks.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pymongo import monitoring
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.matrix_params import PROVIDERS

ROLES = ("patient_a", "caregiver_linked", "clinician_team", "admin", "gateway_a")


def status_declared_by_its_code(ctx, response, case) -> None:
    """schemathesis's status_code_conformance lets ``default`` cover any status, and every operation has one; an
    app team codes against the statuses declared by their code (and only those carry their headers)."""
    declared = {str(code) for code in case.operation.responses.status_codes} - {"default"}
    if str(response.status_code) not in declared:
        raise AssertionError(f"{case.operation.label} answered {response.status_code}, which it does not declare "
                             f"({', '.join(sorted(declared))})")


CHECKS = [not_a_server_error, status_code_conformance, status_declared_by_its_code, content_type_conformance,
          response_schema_conformance]
MAX_EXAMPLES = int(os.environ.get("COMPANION_FUZZ_EXAMPLES", "10"))
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
)


def _order(operation) -> tuple:
    """Reads first, then writes, deletions after them, and ending the caller's session last of all."""
    if operation.path.endswith("/auth/logout"):
        return (3, operation.path)
    return ({"GET": 0, "DELETE": 2}.get(operation.method.upper(), 1), operation.path)


def _operations(schema) -> list:
    return sorted((result.ok() for result in schema.get_all_operations()), key=_order)


def _real_ids(client, world, services) -> dict[str, str]:
    ids = {name: provide(client, world, services) for name, provide in PROVIDERS.items()}
    return {**ids, "patient_id": world["patient_a"].id}


def _strategy(operation, real_ids: dict[str, str]):
    fixed = {name: value for name, value in real_ids.items()
             if name in {p.name for p in operation.path_parameters}}
    return st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed),
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=fixed),
    )


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_no_operation_answers_5xx_or_breaks_its_schema(role, app, client, world, services):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    headers = world[role].headers
    real_ids = _real_ids(client, world, services)
    failures, answered_2xx, calls = [], set(), []
    operations = _operations(schema)
    for operation in operations:

        @FUZZ_SETTINGS
        @given(case=_strategy(operation, real_ids))
        def call(case):
            # The caller stays authenticated as the role even when negative generation drops or
            # mangles the Authorization header (bad tokens are pinned by tests/api/test_auth.py).
            case.headers = {**(case.headers or {}), **headers}
            response = case.call()
            calls.append(response.status_code)
            if response.status_code < 300:
                answered_2xx.add(f"{case.operation.method.upper()} {case.operation.path}")
            case.validate_response(response, checks=CHECKS)

        try:
            call()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    print(f"schemathesis as {role}: {len(operations)} operations, {len(calls)} calls, {len(calls) * len(CHECKS)} "
          f"checks, {len(answered_2xx)} operations answered 2xx, {len(failures)} failures")
    assert failures == [], "\n\n".join(failures)
    assert answered_2xx, f"no operation accepted {role}: the fuzzing never got past authentication"


STATEFUL_STEPS = int(os.environ.get("COMPANION_FUZZ_STEPS", "12"))


class _Written(monitoring.CommandListener):
    """The collections written since the last restore (by any client made after this module was imported: the
    app's, the test's), so that a scenario's restore rewrites those and not all 48. ``commands`` counts every
    command seen: none at all since the last restore means this listener is not attached to the app's client,
    and the restore falls back to every collection."""

    WRITES = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify", "create", "drop"})

    def __init__(self):
        self.commands = 0
        self.collections: set[str] = set()

    def started(self, event):
        self.commands += 1
        if event.command_name in self.WRITES and isinstance(event.command.get(event.command_name), str):
            self.collections.add(event.command[event.command_name])

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


WRITTEN = _Written()
monitoring.register(WRITTEN)  # before the app's client is made (collection imports this module first)


class _Pristine:
    """The database as a scenario starts from, and :meth:`restore` to put it back: the collections written since
    the last restore (every one the first time, or when the listener saw no command at all)."""

    def __init__(self, db):
        self.db = db
        self.docs = {name: list(db[name].find({})) for name in db.list_collection_names()}
        self.restored = False

    def restore(self) -> None:
        whole = not self.restored or WRITTEN.commands == 0
        names = set(self.db.list_collection_names()) | set(self.docs) if whole else set(WRITTEN.collections)
        for name in sorted(names):
            self.db[name].delete_many({})
            if self.docs.get(name):
                self.db[name].insert_many(self.docs[name])
        self.restored = True
        WRITTEN.commands, WRITTEN.collections = 0, set()


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_linked_sequences_answer_no_5xx_and_keep_their_schema(role, app, client, world, services):
    """The stateful phase, as each role: sequences of linked calls (ids flowing from one answer to the next)."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    headers = world[role].headers
    _real_ids(client, world, services)  # patient A's objects exist for the links to find
    pristine = _Pristine(services.db)
    machine = schema.as_state_machine()
    assert schema.statistic.transitions.total > 100, "no links inferred: the stateful phase would test nothing"
    answered_2xx: set[str] = set()
    calls: list[int] = []

    class AsTheRole(machine):
        def setup(self):
            # Every scenario starts from the same world: Hypothesis replays scenarios and must see the same
            # answers to the same calls (a sequence that deleted or created something must not leak into the next).
            pristine.restore()

        def before_call(self, case):
            # Every call is made as the role, whatever the generated headers say (bad tokens: test_auth.py).
            case.headers = {**(case.headers or {}), **headers}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            calls.append(response.status_code)
            if response.status_code < 300:
                answered_2xx.add(f"{case.operation.method.upper()} {case.operation.path}")
            case.validate_response(response, checks=CHECKS)

    # A gateway reaches few operations (its own, under /gateway): most generated sequences go to patients' routes
    # it is refused, and at six times the examples one document in a few (derandomized: each change of the
    # document draws other sequences) had none of its calls accepted. Three times as many again keeps it off that
    # edge (about a minute).
    examples = MAX_EXAMPLES * (18 if role.startswith("gateway") else 6)
    AsTheRole.run(settings=settings(
        max_examples=examples, stateful_step_count=STATEFUL_STEPS, derandomize=True, database=None,
        deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)))
    print(f"schemathesis linked sequences as {role}: {len(calls)} calls, {len(calls) * len(CHECKS)} checks, "
          f"{len(answered_2xx)} operations answered 2xx")
    assert answered_2xx, f"no linked call was accepted as {role}"
