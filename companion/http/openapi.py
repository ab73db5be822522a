"""The OpenAPI document as a contract an app team can generate a client from.

Two kinds of schema, told apart by their base class:

- **requests** (:class:`~companion.http.schemas.StrictSchema`): ``additionalProperties: false``, as they are
  enforced (an unknown field is a 422);
- **answers** (every other schema): open to new members (no ``additionalProperties: false``), so a client
  generated today keeps working when the server adds a field; and every field is ``required`` (always in the
  answer, possibly ``null`` when it is nullable) unless it is declared with ``metadata={"optional": True}``
  because the answer leaves it out in some cases (say which in its description).

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
    return [field.data_key or name for name, field in instance.dump_fields.items()
            if not field.metadata.get(OPTIONAL)]


class ContractPlugin(BasePlugin):
    """Answers open to new members and explicit about what they always carry."""

    def schema_helper(self, name, definition, **kwargs):
        schema = _schema_class(kwargs.get("schema"))
        if schema is None or issubclass(schema, StrictSchema):
            return None
        if definition.get("additionalProperties") is False:
            del definition["additionalProperties"]
        required = always_present(schema)
        if required:
            definition["required"] = required
        return None
