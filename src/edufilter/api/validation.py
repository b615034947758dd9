"""JSON Schema builders and the validator the API checks requests with.

The schemas made here (api/schemas.py) are the one source of both the request validation
and the OpenAPI document, so the two cannot drift apart. The validator knows exactly the
keywords the builders use; `check_keywords` refuses any other, so a schema can never
promise a rule that requests are not checked against.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, fields
from datetime import date, datetime, timezone
from enum import StrEnum
from typing import Any

Schema = dict[str, Any]

# Every schema object the API names; the OpenAPI document publishes it as components.schemas.
COMPONENTS: dict[str, Schema] = {}

_ANNOTATIONS = frozenset(("description", "title", "readOnly", "writeOnly", "default", "examples", "format"))
_VALIDATED = frozenset(
    (
        "$ref", "type", "enum", "minimum", "maximum", "minLength", "maxLength", "pattern",
        "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
    )
)
_FORMATS = frozenset(("date-time", "date", "binary"))
MAX_INT64 = 2**63 - 1  # SQLite's INTEGER range; larger numbers cannot name anything stored


def component(name: str, schema: Schema) -> Schema:
    """Register a named schema and return a reference to it."""
    if name in COMPONENTS:
        raise ValueError(f"schema {name} is defined twice")
    COMPONENTS[name] = schema
    return ref(name)


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


# The validator refuses NUL in every string; a text schema without a pattern of its own says so.
NO_NUL = r"^[^\x00]*$"
SLUG = r"^[a-z0-9][a-z0-9_.-]{0,63}$"  # as policy.model.check_id
# As the fast path's normalise_name: labels of letters, digits, '-' and '_', the last not all
# digits; an optional final dot. (Each label's 63 and the whole name's 253 are checked there.)
HOST_NAME = r"^([A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{0,62}[A-Za-z_-][A-Za-z0-9_-]{0,62}\.?$"


def text(max_length: int = 200, min_length: int = 0, pattern: str | None = NO_NUL, **extra: Any) -> Schema:
    schema: Schema = {"type": "string", "maxLength": max_length, **extra}
    if min_length:
        schema["minLength"] = min_length
    if pattern:
        schema["pattern"] = pattern
    return schema


def slug(what: str) -> Schema:
    return text(64, 1, SLUG, description=f"{what}: 1-64 lowercase letters, digits, '-', '_' or '.'")


def host_name(what: str) -> Schema:
    return text(254, 1, HOST_NAME, description=f"{what}: a host name (letters, digits, '-', '_', dots)")


def integer(minimum: int = 0, maximum: int = MAX_INT64, **extra: Any) -> Schema:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, **extra}


def boolean(**extra: Any) -> Schema:
    return {"type": "boolean", **extra}


def choice(kind: type[StrEnum], **extra: Any) -> Schema:
    return {"type": "string", "enum": [member.value for member in kind], **extra}


def nullable(schema: Schema) -> Schema:
    """The schema, or null; enums list null as a value too (JSON Schema checks both)."""
    result = dict(schema)
    result["type"] = [schema["type"], "null"]
    if "enum" in result:
        result["enum"] = [*result["enum"], None]
    return result


def array(items: Schema, max_items: int = 1000, **extra: Any) -> Schema:
    return {"type": "array", "items": items, "maxItems": max_items, **extra}


def date_time(**extra: Any) -> Schema:
    return {"type": "string", "format": "date-time", "maxLength": 64, **extra}


def obj(properties: dict[str, Schema], required: tuple[str, ...] | list[str] = (), **extra: Any) -> Schema:
    """A closed object: properties not listed are rejected."""
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False, **extra}
    if required:
        schema["required"] = list(required)
    return schema


def model_defaults(model: type) -> dict[str, Any]:
    """The defaults of a model dataclass, as JSON values (enums by value, tuples as lists)."""
    defaults = {}
    for field in fields(model):
        if field.default is not MISSING:
            value = field.default
            if isinstance(value, StrEnum):
                value = value.value
            defaults[field.name] = list(value) if isinstance(value, tuple) else value
    return defaults


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a resource: its schema and where it may appear."""

    schema: Schema
    required: bool = False  # a create (and a PUT) must give it
    read_only: bool = False  # set by the server, never accepted in a body
    identity: bool = False  # given on create, then part of the path: never changed


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource's schemas: the representation, the create, replace (PUT) and patch bodies."""

    name: str
    fields: dict[str, Field]

    @property
    def representation(self) -> Schema:
        return ref(self.name)

    @property
    def create(self) -> Schema:
        return ref(f"{self.name}Create")

    @property
    def replace(self) -> Schema:
        return ref(f"{self.name}Replace")

    @property
    def patch(self) -> Schema:
        return ref(f"{self.name}Patch")

    @property
    def writable(self) -> list[str]:
        return [name for name, field in self.fields.items() if not field.read_only and not field.identity]


def resource(
    name: str,
    resource_fields: dict[str, Field],
    defaults_from: type | None = None,
    creatable: bool = True,
    updatable: bool = True,
) -> Resource:
    """Register a resource's schemas: the representation (every field, always present), and
    the create, replace (PUT) and patch bodies; defaults come from its model dataclass."""
    defaults = model_defaults(defaults_from) if defaults_from else {}

    def with_default(field_name: str, field: Field) -> Schema:
        if field_name in defaults and not field.required:
            return {**field.schema, "default": defaults[field_name]}
        return field.schema

    result = Resource(name, resource_fields)
    items = resource_fields.items()
    component(name, obj({n: f.schema for n, f in items}, required=list(resource_fields)))
    if creatable:
        component(
            f"{name}Create",
            obj(
                {n: with_default(n, f) for n, f in items if not f.read_only},
                required=[n for n, f in items if f.required and not f.read_only],
            ),
        )
    if updatable:
        writable = {n: resource_fields[n] for n in result.writable}
        component(
            f"{name}Replace",
            obj(
                {n: with_default(n, f) for n, f in writable.items()},
                required=[n for n, f in writable.items() if f.required],
            ),
        )
        component(f"{name}Patch", obj({n: f.schema for n, f in writable.items()}))
    return result


def page(item: Schema, name: str) -> Schema:
    """A page of a collection: items, and the cursor of the next page (null on the last)."""
    return component(
        name,
        obj(
            {
                "items": {"type": "array", "items": item},
                "next_cursor": nullable(text(100)),
                "total": nullable(integer(description="items matching the filters over all pages; null: not counted")),
            },
            required=["items", "next_cursor", "total"],
        ),
    )


# Validation


@dataclass(frozen=True, slots=True)
class Invalid:
    """One problem with a value: where (JSON path like slots[0].start) and why."""

    name: str
    reason: str


def resolve(schema: Schema) -> Schema:
    while "$ref" in schema:
        schema = COMPONENTS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def validate(value: Any, schema: Schema, path: str = "") -> list[Invalid]:
    """Every way `value` breaks `schema` (at most 20), [] when it conforms."""
    problems: list[Invalid] = []
    for problem in _problems(value, schema, path):
        problems.append(problem)
        if len(problems) == 20:
            break
    return problems


# bool before int: True is an int to Python, a boolean to JSON.
_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"),
               (dict, "object"))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__)


def _problems(value: Any, schema: Schema, path: str) -> Iterator[Invalid]:
    schema = resolve(schema)
    name = path or "body"
    allowed = schema.get("type")
    if allowed is not None:
        types = allowed if isinstance(allowed, list) else [allowed]
        actual = _json_type(value)
        if actual not in types and not (actual == "integer" and "number" in types):
            yield Invalid(name, f"must be {' or '.join(types)}, not {actual}")
            return
    if "enum" in schema and value not in schema["enum"]:
        yield Invalid(name, f"must be one of {', '.join(str(choice) for choice in schema['enum'])}")
        return
    if isinstance(value, str):
        yield from _string_problems(value, schema, name)
    elif isinstance(value, int) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            yield Invalid(name, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            yield Invalid(name, f"must be at most {schema['maximum']}")
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield Invalid(name, f"needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield Invalid(name, f"takes at most {schema['maxItems']} items")
            return
        for index, item in enumerate(value):
            yield from _problems(item, schema.get("items", {}), f"{path}[{index}]")
    elif isinstance(value, dict):
        properties = schema.get("properties", {})
        for required in schema.get("required", ()):
            if required not in value:
                yield Invalid(_join(path, required), "is required")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                yield from _problems(item, properties[key], _join(path, key))
            elif extra is False:
                yield Invalid(_join(path, key), "is not a known field")
            elif isinstance(extra, dict):
                yield from _string_problems(key, {"maxLength": 64}, _join(path, key))
                yield from _problems(item, extra, _join(path, key))


def _string_problems(value: str, schema: Schema, name: str) -> Iterator[Invalid]:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        yield Invalid(name, "is not valid Unicode text (lone surrogate)")
        return
    if "\0" in value:
        yield Invalid(name, "contains a NUL character")
        return
    if "minLength" in schema and len(value) < schema["minLength"]:
        yield Invalid(name, f"must be at least {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        yield Invalid(name, f"must be at most {schema['maxLength']} characters")
    elif "pattern" in schema and not re.search(schema["pattern"], value):
        yield Invalid(name, f"does not match {schema['pattern']}")
    elif schema.get("format") == "date-time" and parse_date_time(value) is None:
        yield Invalid(name, "is not an RFC 3339 date and time with a time zone offset, between 0001-02-01 and"
                            " 9999-12-01")
    elif schema.get("format") == "date" and parse_date(value) is None:
        yield Invalid(name, "is not a date (YYYY-MM-DD)")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


# Moments the policy engine can work with: a month inside datetime's range on either side, so
# converting to UTC or the school's zone and compiling a schedule window (8 days) never overflow.
_EARLIEST = datetime(1, 2, 1, tzinfo=timezone.utc)
_LATEST = datetime(9999, 12, 1, tzinfo=timezone.utc)


def parse_date_time(value: str) -> datetime | None:
    """An RFC 3339 date-time (offset required) as an aware datetime, or None; also None for
    moments outside 0001-02-01..9999-12-01 (UTC), where date arithmetic overflows."""
    if not _RFC3339.fullmatch(value):
        return None
    try:
        moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        return moment if _EARLIEST <= moment <= _LATEST else None
    except (ValueError, OverflowError):
        return None


def checked_date_time(value: str) -> datetime:
    """A date-time its schema has already checked (format date-time), as a datetime."""
    moment = parse_date_time(value)
    if moment is None:
        raise ValueError(f"{value!r} was not checked as a date-time")
    return moment


def parse_date(value: str) -> date | None:
    if not re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def check_keywords(schema: Any, where: str = "schema") -> None:
    """Raise ValueError when a schema uses a keyword the validator does not check."""
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            check_keywords(item, f"{where}[{index}]")
        return
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        if key not in _VALIDATED and key not in _ANNOTATIONS:
            raise ValueError(f"{where}: keyword {key!r} is not checked by the API's validator")
        if key == "format" and value not in _FORMATS:
            raise ValueError(f"{where}: format {value!r} is not checked by the API's validator")
        if key == "properties":
            for name, item in value.items():
                check_keywords(item, f"{where}.{name}")
        elif key in ("items", "additionalProperties"):
            check_keywords(value, f"{where}.{key}")
