"""Tool (function) calling: how tools reach the prompt, which grammar constrains the answer, and how the
answer becomes OpenAI `tool_calls`.

Two prompt formats, chosen per model by its chat template (`template_tool_format`):

- template: the template renders tools itself (its source uses the `tools` variable, as Qwen2.5, Hermes,
  Llama 3.1 and Mistral templates do). Tools and earlier calls/results go to the template as OpenAI shapes;
  with `tool_choice: auto` the model answers in its own format, and a call is recognised as Hermes'
  `<tool_call>{"name": ..., "arguments": ...}</tool_call>` or as an answer that is one JSON object with
  `name` and `arguments` (or `parameters`).
- generic: the template knows nothing of tools (SmolLM2, ChatML). A system message lists the tools, earlier
  calls become assistant JSON and results user messages, and the answer is grammar-constrained to JSON:
  `{"tool_call": {"name": ..., "arguments": {...}}}` or, with `auto`, `{"response": "..."}` (as
  llama-server's generic tool format).

With `tool_choice: required` or a named function the answer is, in both formats, grammar-constrained to
`{"name": <one of the functions>, "arguments": <valid against its parameters>}`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from model_server.grammar import SchemaError, check_schema, schema_grammar
from model_server.protocol import FunctionDef

#: `parameters` of a function that declares none: an empty object.
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
_HERMES = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
_TOOLS_VAR = re.compile(r"\btools\b")


def template_tool_format(source: str) -> str:
    """`template` when the chat template renders tools itself (it reads a `tools` variable), else
    `generic`."""
    return "template" if _TOOLS_VAR.search(source) else "generic"


@dataclass(frozen=True)
class ToolPlan:
    """How one request uses tools: its prompt messages, the grammar of the answer (None: free text) and
    the parser of the answer."""

    messages: list[dict[str, Any]]
    template_tools: list[dict[str, Any]] | None  # passed to the template as `tools`
    grammar: str | None
    mode: str  # auto | required | <function name>
    format: str  # template | generic


def _call_schema(fn: FunctionDef) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": fn.name}, "arguments": fn.parameters or NO_ARGUMENTS},
        "required": ["name", "arguments"],
    }


def _calls_schema(functions: list[FunctionDef]) -> dict[str, Any]:
    schemas = [_call_schema(f) for f in functions]
    return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def _openai_tools(functions: list[FunctionDef]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": f.model_dump(exclude_none=True)} for f in functions]


def _system_prompt(functions: list[FunctionDef], mode: str) -> str:
    listing = json.dumps(
        [f.model_dump(exclude_none=True, exclude={"strict"}) for f in functions], ensure_ascii=False
    )
    if mode == "auto":
        how = (
            'To call a tool, answer with {"tool_call": {"name": <tool name>, "arguments": {...}}}; '
            'to answer the user directly, answer with {"response": <your answer>}.'
        )
    else:
        how = 'Answer with a tool call: {"name": <tool name>, "arguments": {...}}.'
    return f"You can call these tools (JSON Schema parameters):\n{listing}\n{how} Answer in JSON only."


def generic_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier calls and results in a conversation for a template without tool support."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [
                {
                    "tool_call": {
                        "name": c["function"]["name"],
                        "arguments": _loads(c["function"]["arguments"]),
                    }
                }
                for c in m["tool_calls"]
            ]
            text = "\n".join(json.dumps(c, ensure_ascii=False) for c in calls)
            out.append({"role": "assistant", "content": (m["content"] + "\n" + text).strip()})
        elif m["role"] == "tool":
            who = m.get("name") or m.get("tool_call_id") or "tool"
            out.append({"role": "user", "content": f"Result of {who}: {m['content']}"})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def plan(
    messages: list[dict[str, Any]], functions: list[FunctionDef], mode: str, template_source: str
) -> ToolPlan:
    """The prompt and grammar of a chat request with tools (`mode`: auto | required | a function name).

    Raises `grammar.SchemaError` for parameters the grammar cannot enforce, ValueError for an unknown
    function name."""
    if mode not in ("auto", "required"):
        named = [f for f in functions if f.name == mode]
        if not named:
            raise ValueError(f"tool_choice names {mode!r}, which is not among the tools")
        functions = named
    for fn in functions:
        try:
            check_schema(fn.parameters or NO_ARGUMENTS)
        except SchemaError as exc:
            raise SchemaError(f"function {fn.name!r} parameters: {exc}") from exc
    fmt = template_tool_format(template_source)
    if fmt == "template":
        grammar = None if mode == "auto" else schema_grammar(_calls_schema(functions))
        return ToolPlan(messages, _openai_tools(functions), grammar, mode, fmt)
    history = generic_history(messages)
    system = _system_prompt(functions, mode)
    if history and history[0]["role"] == "system":
        history[0] = {"role": "system", "content": history[0]["content"] + "\n\n" + system}
    else:
        history.insert(0, {"role": "system", "content": system})
    if mode == "auto":
        schema: dict[str, Any] = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"tool_call": _calls_schema(functions)},
                    "required": ["tool_call"],
                },
                {"type": "object", "properties": {"response": {"type": "string"}}, "required": ["response"]},
            ]
        }
    else:
        schema = _calls_schema(functions)
    return ToolPlan(history, None, schema_grammar(schema), mode, fmt)


def _tool_call(name: str, arguments: Any) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": args},
    }


def parse(text: str, tool_plan: ToolPlan, names: set[str]) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) of a model answer. Unparseable output (cut by max_tokens) stays content."""
    obj = _loads(text.strip()) if text.strip().startswith("{") else None
    if tool_plan.mode != "auto" or tool_plan.format == "generic":
        if isinstance(obj, dict):
            call = obj.get("tool_call", obj) if tool_plan.mode == "auto" else obj
            if isinstance(call, dict) and call.get("name") in names and "arguments" in call:
                return None, [_tool_call(call["name"], call["arguments"])]
            if "response" in obj and isinstance(obj["response"], str):
                return obj["response"], []
        return text, []
    # auto, the template's own format: Hermes tags, or one JSON object as the whole answer
    calls = []
    for m in _HERMES.finditer(text):
        call = _loads(m.group(1))
        if isinstance(call, dict) and call.get("name") in names:
            calls.append(_tool_call(call["name"], call.get("arguments", call.get("parameters", {}))))
    if calls:
        rest = _HERMES.sub("", text).strip()
        return rest or None, calls
    if isinstance(obj, dict) and obj.get("name") in names and ("arguments" in obj or "parameters" in obj):
        return None, [_tool_call(obj["name"], obj.get("arguments", obj.get("parameters")))]
    return text, []
