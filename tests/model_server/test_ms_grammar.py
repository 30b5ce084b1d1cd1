"""Schema checks, JSON-Schema-to-grammar conversion and tool-answer parsing, without a model."""

from __future__ import annotations

import json

import pytest

from model_server.grammar import SchemaError, check_schema, schema_grammar
from model_server.protocol import FunctionDef
from model_server.tools import parse, plan, template_tool_format

HERMES_TEMPLATE = (
    "{% for m in messages %}{{ m.content }}{% endfor %}{% if tools %}<tools>{{ tools }}</tools>{% endif %}"
)
CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
WEATHER = FunctionDef(
    name="get_weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "integer", "minimum": 0}, "#/minimum: the keyword 'minimum' cannot be enforced"),
        ({"properties": {"a": {"items": {"uniqueItems": True}}}}, "#/properties/a/items/uniqueItems"),
        ({"anyOf": []}, "#/anyOf: must be a non-empty list"),
        ({"type": ["string", "date"]}, "#/type: unknown type ['date']"),
        ({"$defs": {"x": {"not": {}}}}, "#/$defs/x/not"),
        ({"type": "string", "pattern": "[a-z]+"}, "#/pattern: a pattern must be anchored"),
        ({"type": "array", "maxItems": -1}, "#/maxItems: must be a non-negative integer"),
        (False, "# (the root): the schema `false` admits nothing"),
        ({"type": "string", "allOf": [{"minLength": 1}]}, "#/allOf: allOf is enforced for objects only"),
    ],
)
def test_unenforceable_schemas_are_refused_with_their_path(schema, message):
    with pytest.raises(SchemaError) as exc:
        schema_grammar(schema)
    assert message in str(exc.value)


def test_enforced_and_annotation_keywords_pass():
    check_schema(
        {
            "title": "P", "description": "d", "type": "object", "additionalProperties": False,
            "properties": {"a": {"type": "string", "format": "email", "maxLength": 3, "default": "x"},
                           "b": {"$ref": "#/$defs/B"}},
            "required": ["a"], "$defs": {"B": {"enum": [1, 2]}},
        }
    )  # fmt: skip


def test_grammar_keeps_property_order_and_forbids_raw_control_characters():
    g = schema_grammar({"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "integer"}}})
    root = next(line for line in g.splitlines() if line.startswith("root ::= "))
    assert root.index("z-kv") < root.index("a-kv")
    assert "char ::= " in g and "\\x00-\\x1F" in g.split("char ::= ")[1].splitlines()[0]


def test_converter_failures_are_schema_errors():
    with pytest.raises(SchemaError, match="cannot be converted"):
        schema_grammar({"$ref": "#/$defs/missing"})


def test_tool_format_detection():
    assert template_tool_format(HERMES_TEMPLATE) == "template"
    assert template_tool_format(CHATML) == "generic"


def test_generic_plan_and_parse():
    messages = [{"role": "user", "content": "weather?"}]
    p = plan(messages, [WEATHER], "auto", CHATML)
    assert p.format == "generic" and p.grammar is not None and p.template_tools is None
    assert p.messages[0]["role"] == "system" and "get_weather" in p.messages[0]["content"]
    content, calls = parse(
        '{"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}', p, {"get_weather"}
    )
    assert content is None and calls[0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Oslo"}',
    }
    assert parse('{"response": "It rains."}', p, {"get_weather"}) == ("It rains.", [])
    assert parse('{"tool_call": {"name": "get_wea', p, {"get_weather"}) == (
        '{"tool_call": {"name": "get_wea',
        [],
    )


def test_template_plan_auto_parses_hermes_and_bare_json():
    p = plan([{"role": "user", "content": "x"}], [WEATHER], "auto", HERMES_TEMPLATE)
    assert (
        p.format == "template"
        and p.grammar is None
        and p.template_tools[0]["function"]["name"] == "get_weather"
    )
    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    content, calls = parse(text, p, {"get_weather"})
    assert content == "Let me check." and json.loads(calls[0]["function"]["arguments"]) == {"city": "Rome"}
    _, calls = parse('{"name": "get_weather", "parameters": {"city": "Rome"}}', p, {"get_weather"})
    assert calls[0]["function"]["name"] == "get_weather"
    assert parse("Just text.", p, {"get_weather"}) == ("Just text.", [])
    assert parse('{"name": "unknown", "arguments": {}}', p, {"get_weather"})[1] == []


def test_named_plan_constrains_to_that_function_and_unknown_names_fail():
    p = plan(
        [{"role": "user", "content": "x"}],
        [WEATHER, FunctionDef(name="other")],
        "get_weather",
        HERMES_TEMPLATE,
    )
    assert p.grammar is not None and "other" not in p.grammar
    with pytest.raises(ValueError, match="'nope'"):
        plan([{"role": "user", "content": "x"}], [WEATHER], "nope", CHATML)


def test_generic_history_turns_calls_and_results_into_plain_turns():
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]
    p = plan(messages, [WEATHER], "auto", CHATML)
    assert p.messages[2] == {
        "role": "assistant",
        "content": '{"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}',
    }
    assert p.messages[3] == {"role": "user", "content": "Result of c1: sunny"}
