"""Grammars for constrained output: JSON Schema -> GBNF (llama.cpp's converter), with clear refusals.

llama.cpp samples under a GBNF grammar (`llama_sampler_init_grammar`); llama-cpp-python ships llama.cpp's
JSON-Schema-to-GBNF converter (`llama_cpp.llama_grammar.SchemaConverter`). That converter silently ignores
keywords it does not implement (`minimum`, `not`, ...), which would let output break the schema, so every
schema is checked first and a keyword the grammar cannot enforce is refused with the JSON path that holds
it (`SchemaError`, HTTP 400). Keywords that only annotate (`title`, `description`, `format` other than the
enforced date/time/uuid ones, ...) are accepted.

One change to the converter's output: its string characters (`char`) admit raw control characters, which
JSON forbids inside strings; here they must be escaped, so every output parses with a strict JSON parser.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from llama_cpp import llama_grammar

#: A JSON object (any keys and values): `response_format: {"type": "json_object"}`.
JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}

#: Keywords that constrain the output and the converter enforces.
_ENFORCED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "pattern",
        "minLength",
        "maxLength",
        "format",
    }
)
#: Keywords that only annotate or hold definitions (nothing to enforce here).
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "example",
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "definitions",
        "readOnly",
        "writeOnly",
        "deprecated",
        "nullable",
        "strict",
        "discriminator",
    }
)
_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
ENFORCED_FORMATS = frozenset(
    {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
)
#: Control characters must be escaped inside JSON strings (the converter's `char` admits them raw).
_JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


class SchemaError(ValueError):
    """A JSON Schema this server cannot turn into a grammar; the message names the part (HTTP 400)."""


def _path(parts: tuple[str | int, ...]) -> str:
    return "#" + "".join(f"/{p}" for p in parts) if parts else "# (the root)"


def check_schema(schema: Any, parts: tuple[str | int, ...] = ()) -> None:
    """Raise SchemaError naming the first part of `schema` the grammar cannot enforce."""
    if isinstance(schema, bool):
        if schema:
            return
        raise SchemaError(f"{_path(parts)}: the schema `false` admits nothing")
    if not isinstance(schema, dict):
        raise SchemaError(f"{_path(parts)}: a schema must be an object, got {type(schema).__name__}")
    for key, value in schema.items():
        here = (*parts, key)
        if key in ("$defs", "definitions", "properties"):
            if not isinstance(value, dict):
                raise SchemaError(f"{_path(here)}: must be an object of schemas")
            for name, sub in value.items():
                check_schema(sub, (*here, name))
        elif key in _ANNOTATIONS:
            continue
        elif key not in _ENFORCED:
            raise SchemaError(
                f"{_path(here)}: the keyword {key!r} cannot be enforced by the grammar; supported: "
                f"{', '.join(sorted(_ENFORCED))}"
            )
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") or (
            key == "items" and isinstance(value, list)
        ):
            if not isinstance(value, list) or not value:
                raise SchemaError(f"{_path(here)}: must be a non-empty list of schemas")
            for i, sub in enumerate(value):
                check_schema(sub, (*here, i))
            if key == "allOf" and schema.get("type", "object") != "object":
                raise SchemaError(f"{_path(here)}: allOf is enforced for objects only")
        elif key in ("additionalProperties", "items"):
            if not isinstance(value, bool):  # true: anything, false: nothing more
                check_schema(value, here)
        else:
            _check_value(key, value, here)


def _check_value(key: str, value: Any, here: tuple[str | int, ...]) -> None:
    """Keywords whose value is not a schema."""
    if key == "type":
        types = value if isinstance(value, list) else [value]
        bad = [t for t in types if t not in _TYPES]
        if bad or not types:
            raise SchemaError(f"{_path(here)}: unknown type {bad or value!r}; allowed: {sorted(_TYPES)}")
    elif key == "$ref":
        if not isinstance(value, str) or not value.startswith("#/"):
            raise SchemaError(f"{_path(here)}: only local references (#/...) are supported, got {value!r}")
    elif key == "pattern":
        if not isinstance(value, str) or not (value.startswith("^") and value.endswith("$")):
            raise SchemaError(f"{_path(here)}: a pattern must be anchored (start with ^, end with $)")
    elif key in ("minItems", "maxItems", "minLength", "maxLength"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SchemaError(f"{_path(here)}: must be a non-negative integer")
    elif key == "enum" and (not isinstance(value, list) or not value):
        raise SchemaError(f"{_path(here)}: must be a non-empty list")


@functools.lru_cache(maxsize=256)
def _convert(schema_json: str) -> str:
    schema = json.loads(schema_json)
    converter: Any = llama_grammar.SchemaConverter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    try:
        resolved = converter.resolve_refs(schema, "input")
        converter.visit(resolved, "")
    except Exception as exc:  # the converter asserts and indexes its way through bad input
        raise SchemaError(f"the schema cannot be converted to a grammar: {exc}") from exc
    rules = converter._rules
    if "char" in rules:
        rules["char"] = _JSON_CHAR
    return str(converter.format_grammar())


def schema_grammar(schema: Any) -> str:
    """The GBNF grammar (root rule `root`) of a JSON Schema; raises SchemaError for what it cannot enforce.

    Conversions are cached (tool and response schemas repeat across requests)."""
    check_schema(schema)
    return _convert(json.dumps(schema))  # key order kept: it is the output order


def alternatives_grammar(schemas: list[Any]) -> str:
    """A grammar whose output is valid against one of `schemas` (an anyOf; each checked first)."""
    return schema_grammar(schemas[0] if len(schemas) == 1 else {"anyOf": schemas})
