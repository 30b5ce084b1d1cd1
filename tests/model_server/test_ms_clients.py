"""Real clients on the real server (embedded SmolLM2): the openai SDK and LangChain's ChatOpenAI use the
structured output, tool calling and logprobs of issue 14 as agents and RAG apps do. Structure, not
answer quality, is asserted: the model is tiny."""

from __future__ import annotations

import json

import pytest
from conftest import Server
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import BaseModel, Field


class Person(BaseModel):
    """A person."""

    name: str = Field(description="The person's name", max_length=24)
    age: int = Field(description="Age in years")


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"It is sunny in {city}."


ASK = "What is the weather in Paris? Use the tool."


@pytest.fixture(scope="module")
def server(smol_features: Server) -> Server:
    return smol_features


@pytest.fixture(scope="module")
def llm(server: Server) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.url + "/v1", api_key="unused", model="smollm2", temperature=0, max_retries=0
    )


@pytest.fixture(scope="module")
def sdk(server: Server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


# --------------------------------------------------------------------------- LangChain
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output_returns_a_valid_object(llm, method):
    out = llm.with_structured_output(Person, method=method).invoke("Invent a person.")
    assert isinstance(out, Person)
    assert len(out.name) <= 24


def test_langchain_bind_tools_returns_a_tool_call(llm):
    msg = llm.bind_tools([get_weather], tool_choice="any").invoke(ASK)
    assert isinstance(msg, AIMessage)
    (call,) = msg.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str) and call["id"]


def test_langchain_tool_result_round_trip_completes(llm):
    bound = llm.bind_tools([get_weather])
    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_abc", "type": "tool_call"}
    history = [
        HumanMessage(ASK),
        AIMessage(content="", tool_calls=[call]),
        ToolMessage(content=get_weather.invoke({"city": "Paris"}), tool_call_id="call_abc"),
    ]
    answer = bound.invoke(history)
    assert isinstance(answer, AIMessage)
    assert answer.content or answer.tool_calls


def test_langchain_streams_a_tool_call(llm):
    chunks = list(llm.bind_tools([get_weather], tool_choice="get_weather").stream(ASK))
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    (call,) = merged.tool_calls
    assert call["name"] == "get_weather" and "city" in call["args"]


# --------------------------------------------------------------------------- openai SDK
def test_sdk_parse_with_a_pydantic_model(sdk):
    res = sdk.chat.completions.parse(
        model="m",
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format=Person,
        temperature=0,
    )
    assert isinstance(res.choices[0].message.parsed, Person)


def test_sdk_logprobs_are_present_and_sensible(sdk):
    res = sdk.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, logprobs=True, top_logprobs=3
    )
    content = res.choices[0].logprobs.content
    assert len(content) == res.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0
        tops = [t.logprob for t in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True) and len(tops) == 3
        assert entry.logprob <= tops[0] + 1e-9


def test_sdk_streamed_tool_call_accumulates(sdk):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]  # fmt: skip
    stream = sdk.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": ASK}],
        tools=tools,
        tool_choice="required",
        stream=True,
    )
    name, args, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                name += tc.function.name or ""
                args += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "get_weather" and finish == "tool_calls"
    assert isinstance(json.loads(args)["city"], str)


def test_sdk_n_choices(sdk):
    res = sdk.completions.create(model="m", prompt="Hello", max_tokens=4, n=2, temperature=1.0, seed=7)
    assert [c.index for c in res.choices] == [0, 1]
