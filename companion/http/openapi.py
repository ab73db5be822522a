"""The OpenAPI document as a contract an app team can generate a client from.

Two kinds of schema, told apart by their base class:

- **requests** (:class:`~companion.http.schemas.StrictSchema`): ``additionalProperties: false``, as they are
  enforced (an unknown field is a 422);
- **answers** (every other schema): open to new members (no ``additionalProperties: false``), so a client
  generated today keeps working when the server adds a field. A field every answer carries (possibly
  ``null`` when it is nullable) is ``required``: declared with ``required=True``, or, for a schema whose
  ``Meta`` says ``every_field_present = True``, every field but those with ``metadata={"optional": True}``.
  A field marked so is one a generated client may rely on; ``tests/api/test_generated_client.py`` and the
  schemathesis runs check the answers against it.

Every operation has an ``operationId`` (``@blp.doc(operationId=...)`` beside the view); the test suite checks
that they are there and unique.
"""

from __future__ import annotations

from apispec import BasePlugin
from marshmallow import Schema

from companion.http.schemas import StrictSchema

OPTIONAL = "optional"


def _schema_class(schema) -> type[Schema] | None:
    if isinstance(schema, Schema):
        return type(schema)
    return schema if isinstance(schema, type) and issubclass(schema, Schema) else None


def always_present(schema: type[Schema]) -> list[str]:
    """The names (as sent) of an answer schema's fields that every answer carries."""
    instance = schema()
    every = getattr(getattr(schema, "Meta", None), "every_field_present", False)
    return [field.data_key or name for name, field in instance.dump_fields.items()
            if field.required or (every and not field.metadata.get(OPTIONAL))]


LOCATION_HEADER = {"description": "the URL of what was created (or, where the API has none for it, of the "
                                  "collection it was created in)", "schema": {"type": "string"}}


def _nullable_ref(prop: dict) -> None:
    """apispec writes a nullable nested schema as ``anyOf: [{type: object, nullable: true}, {$ref}]``, which any
    object matches by its first branch (generated clients parse it as a bare object); OpenAPI 3.0's idiom is
    ``nullable: true`` beside ``allOf: [{$ref}]``."""
    branches = prop.get("anyOf")
    if not branches or len(branches) != 2:
        return
    refs = [b for b in branches if "$ref" in b]
    if len(refs) == 1 and {"type": "object", "nullable": True} in branches:
        del prop["anyOf"]
        prop["allOf"] = refs
        prop["nullable"] = True


class ContractPlugin(BasePlugin):
    """Answers open to new members and explicit about what they always carry; ``Location`` on every 201."""

    def operation_helper(self, path=None, operations=None, **kwargs):
        for operation in (operations or {}).values():
            responses = operation.get("responses") or {}
            created = responses.get(201, responses.get("201"))
            if isinstance(created, dict):
                created.setdefault("headers", {})["Location"] = LOCATION_HEADER

    def schema_helper(self, name, definition, **kwargs):
        schema = _schema_class(kwargs.get("schema"))
        if schema is None:
            return None
        for prop in (definition.get("properties") or {}).values():
            _nullable_ref(prop)
        if issubclass(schema, StrictSchema):
            return None
        if definition.get("additionalProperties") is False:
            del definition["additionalProperties"]
        required = always_present(schema)
        if required:
            definition["required"] = required
        return None
