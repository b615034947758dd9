"""The OpenAPI document: valid OpenAPI 3.1, made from the same table and schemas that route
and check requests, and covering exactly the routes the app serves."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from conftest import LiveApi
from openapi_spec_validator import validate

from edufilter.api.openapi import openapi_document
from edufilter.api.routes import OPERATIONS_TABLE
from edufilter.api.security import COOKIE_ROUTES
from edufilter.api.validation import COMPONENTS, Invalid, check_keywords, resolve
from edufilter.api.validation import validate as check_value


@pytest.fixture
def document(api: LiveApi) -> dict[str, Any]:
    return api.get("/api/openapi.json").json()


def test_the_served_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)  # the OpenAPI 3.1 schema, with JSON Schema 2020-12 for schema objects
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_the_served_document_is_the_one_made_from_the_table(document: dict[str, Any]) -> None:
    assert document == json.loads(json.dumps(openapi_document(OPERATIONS_TABLE)))


def test_it_documents_exactly_the_routes_served(api: LiveApi, document: dict[str, Any]) -> None:
    console = api.app[COOKIE_ROUTES]  # the console's HTML pages, not API operations
    served = {(route.method, route.resource.canonical) for route in api.app.router.routes()
              if route.resource and route not in console}
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    heads = {("HEAD", path) for method, path in documented if method == "GET"}  # HTTP's, not documented
    assert served == documented | heads


def test_every_schema_is_checked_by_the_request_validator() -> None:
    for name, schema in COMPONENTS.items():
        check_keywords(schema, name)
    for operation in OPERATIONS_TABLE:
        for name, schema in {**operation.path_params, **operation.query}.items():
            check_keywords(schema, f"{operation.operation_id}.{name}")
    with pytest.raises(ValueError, match="not checked"):
        check_keywords({"type": "string", "oneOf": []})


def test_every_operation_names_its_roles_and_errors(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert "Roles: " in operation["description"], (method, path)
            assert operation["responses"]["4XX"]["content"]["application/problem+json"]
            if method in ("put", "patch", "delete"):
                assert any(parameter["name"] == "If-Match" and parameter["required"]
                           for parameter in operation["parameters"])
    assert document["paths"]["/healthz"]["get"]["security"] == []


@pytest.mark.parametrize(
    ("value", "schema_name", "problems"),
    [
        ({"name": "a"}, "GroupCreate", []),
        ({"name": "a", "safe_search": 1}, "GroupCreate", [Invalid("safe_search", "must be boolean, not integer")]),
        ({"slots": [{"weekday": 9, "start": "08:00", "end": "24:00"}]}, "ScheduleReplace",
         [Invalid("slots[0].weekday", "must be at most 6")]),
        ({"group": "g", "name": "n", "minutes": 0}, "OverrideCreate", [Invalid("minutes", "must be at least 1")]),
        ({"target": "x", "client": {"address": "1", "vlan": None}}, "CheckRequest", []),
    ],
)
def test_the_validator_agrees_with_jsonschema(value: Any, schema_name: str, problems: list[Invalid]) -> None:
    ours = check_value(value, {"$ref": f"#/components/schemas/{schema_name}"})
    assert ours == problems
    reference = jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}",
                                                 "components": {"schemas": COMPONENTS}})
    assert reference.is_valid(value) == (not problems)


def _longest_text(schema: dict[str, Any]) -> int:
    """The longest a parameter can be in a URL: each character percent-encoded UTF-8 (12 bytes)."""
    schema = resolve(schema)
    if "enum" in schema:
        return max(len(str(choice)) for choice in schema["enum"])
    if schema["type"] in ("integer", "boolean"):
        return 20
    return schema["maxLength"] * 12


def test_no_valid_request_line_is_too_long_for_the_server() -> None:
    # aiohttp refuses request lines over 8190 bytes with a plain-text 400, before any handler.
    for operation in OPERATIONS_TABLE:
        longest = len(operation.path) + sum(_longest_text(schema) for schema in operation.path_params.values())
        longest += sum(len(name) + 2 + _longest_text(schema) for name, schema in operation.query.items())
        assert longest < 8000, operation.operation_id
