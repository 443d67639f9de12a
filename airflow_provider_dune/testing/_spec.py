"""Request validation against Dune's OpenAPI spec (the bundled ``dune_openapi.json``)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

SPEC_PATH = Path(__file__).with_name("dune_openapi.json")
SPEC_URI = "urn:dune-openapi"


@functools.lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    """Dune's OpenAPI document, parsed once."""
    with SPEC_PATH.open(encoding="utf-8") as fh:
        spec: dict[str, Any] = json.load(fh)
    return spec


@functools.lru_cache(maxsize=1)
def _registry() -> Registry:
    resource = Resource.from_contents(load_spec(), default_specification=DRAFT7)
    return Registry().with_resource(SPEC_URI, resource)


def validator_for(schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    """A validator for ``schema`` in which ``#/components/...`` style refs point into the spec."""
    return jsonschema.Draft7Validator(schema, registry=_registry())


def _absolute(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        return {**schema, "$ref": SPEC_URI + ref}
    return schema


@functools.cache
def request_body_validator(path: str, method: str) -> jsonschema.Draft7Validator | None:
    """The validator of the request body the spec declares for ``method path`` (``None`` if none)."""
    operation = load_spec()["paths"][path][method.lower()]
    body = operation.get("requestBody")
    if not body:
        return None
    content = body.get("content", {})
    media = content.get("application/json") or next(iter(content.values()), None)
    if not media or "schema" not in media:
        return None
    return validator_for(_absolute(media["schema"]))


@functools.cache
def query_parameter_schema(path: str, method: str, name: str) -> dict[str, Any] | None:
    """The schema of query-string parameter ``name`` of ``method path`` in the spec."""
    operation = load_spec()["paths"][path][method.lower()]
    for param in operation.get("parameters", []):
        if param.get("in") == "query" and param.get("name") == name:
            schema: dict[str, Any] = param.get("schema", {})
            return schema
    return None


@functools.lru_cache(maxsize=1)
def execute_query_body_validator() -> jsonschema.Draft7Validator:
    """Validator for the JSON body clients send to ``POST /v1/query/{query_id}/execute``.

    The spec documents ``performance`` and ``query_parameters`` as query-string parameters; clients (Dune's
    SDKs) send them as a JSON body instead. The body schema is derived from those parameter definitions.
    """
    path = "/v1/query/{query_id}/execute"
    performance = query_parameter_schema(path, "post", "performance") or {"type": "string"}
    schema = {
        "type": "object",
        "properties": {"performance": performance, "query_parameters": {"type": "object"}},
    }
    return validator_for(schema)


def first_error(validator: jsonschema.Draft7Validator, instance: Any) -> str | None:
    """A one-line description of the most relevant validation error, or ``None`` if ``instance`` is valid."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = "".join(f"[{part!r}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path)
    location = f" at body{where}" if where else ""
    return f"invalid request body{location}: {error.message}"
