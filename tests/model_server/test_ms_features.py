"""Issue 14's OpenAI features over HTTP on the embedded SmolLM2 (real llama.cpp, real server): structured
output, tools, log-probabilities, logit bias, min_tokens, ignore_eos, n > 1, seeds, echo. The model is tiny:
the tests assert structure (valid JSON against the schema, shapes, logprobs <= 0, ordering), not quality."""

from __future__ import annotations

import json

import jsonschema
import pytest
from conftest import Server

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 32}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The current time."}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def smol(smol_features: Server) -> Server:
    return smol_features


def chat(server: Server, **body: object) -> dict:
    body.setdefault("messages", [{"role": "user", "content": "Describe a person."}])
    body.setdefault("temperature", 0)
    r = server.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def sse(server: Server, path: str, body: dict) -> list[dict]:
    with server.client.stream("POST", path, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


# --------------------------------------------------------------------------- response_format
def test_json_schema_output_is_valid_against_the_schema(smol):
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    out = chat(smol, response_format=rf)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), PERSON)


def test_json_object_output_is_a_json_object_streamed_too(smol):
    rf = {"type": "json_object"}
    whole = chat(smol, response_format=rf, messages=[{"role": "user", "content": "A cat as JSON."}])
    assert isinstance(json.loads(whole["choices"][0]["message"]["content"]), dict)
    chunks = sse(smol, "/v1/chat/completions", {"messages": [{"role": "user", "content": "A cat as JSON."}],
                                                "temperature": 0, "response_format": rf})  # fmt: skip
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]


def test_completions_take_a_json_schema_too(smol):
    r = smol.client.post(
        "/v1/completions",
        json={"prompt": "A person in JSON:", "temperature": 0, "max_tokens": 120,
              "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}},
    )  # fmt: skip
    jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), PERSON)


@pytest.mark.parametrize(
    ("schema", "part"),
    [
        (
            {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}},
            "#/properties/n/minimum",
        ),
        ({"type": "object", "not": {"required": ["a"]}}, "#/not"),
        ({"type": "strings"}, "#/type"),
        ({"$ref": "https://example.com/s.json"}, "#/$ref"),
        ({"type": "string", "pattern": "a+"}, "#/pattern"),
    ],
)
def test_a_schema_the_grammar_cannot_enforce_is_a_400_naming_the_part(smol, schema, part):
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    r = smol.client.post("/v1/chat/completions", json={"messages": ASK, "response_format": rf})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_schema" and err["param"] == "response_format"
    assert part in err["message"]


def test_a_bad_gbnf_grammar_is_a_400(smol):
    r = smol.client.post("/v1/completions", json={"prompt": "x", "grammar": "root ::= ("})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_grammar" and r.json()["error"]["param"] == "grammar"


def test_gbnf_grammar_constrains_the_output(smol):
    r = smol.client.post(
        "/v1/completions",
        json={"prompt": "Answer yes or no: is the sky blue?", "grammar": 'root ::= ("yes" | "no") "."',
              "temperature": 0.9, "seed": 3},
    )  # fmt: skip
    assert r.json()["choices"][0]["text"] in ("yes.", "no.")


def test_two_output_constraints_at_once_are_refused(smol):
    r = smol.client.post(
        "/v1/chat/completions",
        json={"messages": ASK, "response_format": {"type": "json_object"}, "grammar": 'root ::= "a"'},
    )
    assert r.status_code == 400 and "at most one" in r.json()["error"]["message"]


# --------------------------------------------------------------------------- tools
def _calls(out: dict) -> list[dict]:
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert choice["message"]["content"] is None
    return choice["message"]["tool_calls"]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_required_and_named_tool_calls_are_valid_calls(smol, choice):
    (call,) = _calls(chat(smol, messages=ASK, tools=[WEATHER, TIME], tool_choice=choice))
    assert call["type"] == "function" and call["id"].startswith("call_")
    if isinstance(choice, dict):
        assert call["function"]["name"] == "get_weather"
    fn = {"get_weather": WEATHER, "get_time": TIME}[call["function"]["name"]]["function"]
    args = json.loads(call["function"]["arguments"])
    jsonschema.validate(args, fn.get("parameters", {"type": "object", "additionalProperties": False}))


def test_legacy_functions_and_function_call(smol):
    out = chat(smol, messages=ASK, functions=[WEATHER["function"]], function_call={"name": "get_weather"})
    (call,) = _calls(out)
    assert call["function"]["name"] == "get_weather"


def test_auto_answers_with_a_call_or_text_and_none_never_calls(smol):
    out = chat(smol, messages=ASK, tools=[WEATHER], tool_choice="auto")
    msg = out["choices"][0]["message"]
    assert (msg["content"] is None) != (msg.get("tool_calls") is None)
    out = chat(smol, messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=8)
    assert out["choices"][0]["message"].get("tool_calls") is None
    assert out["choices"][0]["finish_reason"] in ("stop", "length")


def test_tool_calls_stream_as_openai_deltas(smol):
    body = {"messages": ASK, "tools": [WEATHER], "tool_choice": "required", "temperature": 0}
    whole = _calls(chat(smol, **body))[0]
    chunks = sse(smol, "/v1/chat/completions", body)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["index"] == 0 and calls[0]["function"]["name"] == "get_weather" and calls[0]["id"]
    assert "".join(c["function"]["arguments"] for c in calls) == whole["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_tool_result_round_trip_completes(smol):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}}  # fmt: skip
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    out = chat(smol, messages=messages, tools=[WEATHER], max_tokens=40)
    msg = out["choices"][0]["message"]
    assert msg["content"] or msg.get("tool_calls")


def test_tool_errors_name_the_parameter(smol):
    r = smol.client.post("/v1/chat/completions", json={"messages": ASK, "tool_choice": "required"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"
    r = smol.client.post(
        "/v1/chat/completions",
        json={
            "messages": ASK,
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "x"}},
        },
    )
    assert r.status_code == 400 and "'x'" in r.json()["error"]["message"]
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}
    r = smol.client.post(
        "/v1/chat/completions", json={"messages": ASK, "tools": [bad], "tool_choice": "required"}
    )
    assert (
        r.status_code == 400
        and r.json()["error"]["param"] == "tools"
        and "#/not" in r.json()["error"]["message"]
    )


# --------------------------------------------------------------------------- logprobs
def test_chat_logprobs_are_real_and_ordered(smol):
    out = chat(smol, logprobs=True, top_logprobs=3, max_tokens=8)
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == out["usage"]["completion_tokens"] == 8
    text = out["choices"][0]["message"]["content"]
    assert "".join(e["token"] for e in content) == text
    assert text == chat(smol, max_tokens=8)["choices"][0]["message"]["content"]  # logprobs change nothing
    for e in content:
        assert e["logprob"] <= 0 and bytes(e["bytes"]).decode(errors="replace") == e["token"]
        tops = [t["logprob"] for t in e["top_logprobs"]]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and all(t <= 0 for t in tops)
        # greedy: the sampled token is the most likely one
        assert e["top_logprobs"][0]["token"] == e["token"] and e["top_logprobs"][0]["logprob"] == e["logprob"]


def test_completion_logprobs_shape_and_streamed_logprobs(smol):
    body = {"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0, "logprobs": 2}
    out = smol.client.post("/v1/completions", json=body).json()["choices"][0]
    lp = out["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 6
    assert "".join(lp["tokens"]) == out["text"]
    assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])
    assert all(v <= 0 for v in lp["token_logprobs"]) and all(len(t) <= 2 for t in lp["top_logprobs"])
    chunks = sse(smol, "/v1/completions", body)
    streamed = [
        t
        for c in chunks
        if c["choices"] and c["choices"][0]["logprobs"]
        for t in c["choices"][0]["logprobs"]["token_logprobs"]
    ]
    assert streamed == lp["token_logprobs"]


def test_top_logprobs_without_logprobs_is_a_400(smol):
    r = smol.client.post("/v1/chat/completions", json={"messages": ASK, "top_logprobs": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_logprobs"


# ------------------------------------------------------------------- logit_bias, min_tokens, ignore_eos
def test_logit_bias_bans_and_forces_tokens(smol):
    plain = chat(smol, max_tokens=4, logprobs=True)["choices"][0]
    first = plain["logprobs"]["content"][0]["token"]
    tok = smol.client.post("/tokenize", json={"content": first}).json()["tokens"]
    banned = chat(smol, max_tokens=4, logprobs=True, logit_bias={str(tok[0]): -100})["choices"][0]
    assert banned["logprobs"]["content"][0]["token"] != first
    forced = chat(smol, max_tokens=3, logit_bias={"28": 100})["choices"][0]  # token 28: "="
    detok = smol.client.post("/detokenize", json={"tokens": [28, 28, 28]}).json()["content"]
    assert forced["message"]["content"] == detok


def test_min_tokens_and_ignore_eos_hold_off_the_end(smol):
    short = chat(smol, messages=[{"role": "user", "content": "Say hi."}], max_tokens=160)
    n = short["usage"]["completion_tokens"]
    assert short["choices"][0]["finish_reason"] == "stop" and n < 150
    longer = chat(smol, messages=[{"role": "user", "content": "Say hi."}], max_tokens=160, min_tokens=n + 5)
    assert longer["usage"]["completion_tokens"] >= n + 5
    endless = chat(smol, messages=[{"role": "user", "content": "Say hi."}], max_tokens=n + 3, ignore_eos=True)
    assert (
        endless["usage"]["completion_tokens"] == n + 3 and endless["choices"][0]["finish_reason"] == "length"
    )


# --------------------------------------------------------------------------- n, seed, echo
def test_n_choices_with_seeds_per_choice(smol):
    body = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 1.0, "n": 3, "seed": 42}
    a = smol.client.post("/v1/completions", json=body).json()
    b = smol.client.post("/v1/completions", json=body).json()
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    assert [c["text"] for c in a["choices"]] == [c["text"] for c in b["choices"]]  # seeded: reproducible
    assert len({c["text"] for c in a["choices"]}) > 1  # seed + i per choice: different samples
    one = smol.client.post("/v1/completions", json={**body, "n": 1, "seed": 43}).json()
    assert one["choices"][0]["text"] == a["choices"][1]["text"]  # choice 1 ran with seed 43
    assert (
        a["usage"]["completion_tokens"] == 36 and a["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]
    )


def test_n_greedy_chat_choices_are_equal_and_streamed_by_index(smol):
    out = chat(smol, n=2, max_tokens=6)
    assert out["choices"][0]["message"] == out["choices"][1]["message"]
    chunks = sse(smol, "/v1/chat/completions", {"messages": ASK, "temperature": 0, "n": 2, "max_tokens": 6})
    texts = {0: "", 1: ""}
    for c in chunks:
        for ch in c["choices"]:
            texts[ch["index"]] += ch["delta"].get("content", "")
    assert texts[0] == texts[1]


def test_n_over_the_slots_is_a_400(smol):
    r = smol.client.post("/v1/completions", json={"prompt": "x", "n": 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_echo_prepends_the_prompt(smol):
    body = {"prompt": "The llama", "max_tokens": 4, "temperature": 0}
    plain = smol.client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    echoed = smol.client.post("/v1/completions", json={**body, "echo": True}).json()["choices"][0]["text"]
    assert echoed == "The llama" + plain
    chunks = sse(smol, "/v1/completions", {**body, "echo": True})
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == echoed
    r = smol.client.post("/v1/completions", json={**body, "echo": True, "logprobs": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "echo"


# --------------------------------------------------------------------------- embeddings
def _embed(server: Server, inp: object, **extra: object) -> dict:
    r = server.client.post("/v1/embeddings", json={"input": inp, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # unit vectors


def test_embeddings_are_deterministic_normalized_and_rank_a_paraphrase_first(smol):
    texts = ["The cat sits on the mat.", "A cat is sitting on a mat.", "Stock markets fell sharply today."]
    out = _embed(smol, texts)
    dim = smol.client.get("/props").json()["embeddings"]["n_embd"]
    vecs = [d["embedding"] for d in out["data"]]
    assert [d["index"] for d in out["data"]] == [0, 1, 2] and all(len(v) == dim == 576 for v in vecs)
    assert all(abs(_cos(v, v) - 1) < 1e-4 for v in vecs)
    assert _cos(vecs[0], vecs[1]) > _cos(vecs[0], vecs[2])
    again = _embed(smol, texts[0])["data"][0]["embedding"]
    assert again == vecs[0]  # deterministic, batch or alone
    tokens = smol.client.post("/tokenize", json={"content": texts[0], "add_special": True}).json()["tokens"]
    assert out["usage"]["prompt_tokens"] > 0 and _embed(smol, tokens)["data"][0]["embedding"] == vecs[0]


def test_embeddings_base64_is_little_endian_float32(smol):
    import base64
    import struct

    floats = _embed(smol, "hello")["data"][0]["embedding"]
    raw = base64.b64decode(_embed(smol, "hello", encoding_format="base64")["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(floats, abs=1e-6)


def test_embeddings_through_the_openai_sdk(smol):
    from openai import OpenAI

    client = OpenAI(base_url=smol.url + "/v1", api_key="unused")
    res = client.embeddings.create(model="any", input=["one", "two"])  # the SDK asks for base64
    assert len(res.data) == 2 and len(res.data[0].embedding) == 576


# --------------------------------------------------------------------------- tokenizer, props
def test_tokenize_detokenize_round_trip_and_props(smol):
    toks = smol.client.post("/tokenize", json={"content": "Hello world<|im_end|>"}).json()["tokens"]
    plain = smol.client.post("/tokenize", json={"content": "Hello world<|im_end|>", "parse_special": False})
    assert len(plain.json()["tokens"]) > len(toks)  # the marker is one special token when parsed
    pieces = smol.client.post("/tokenize", json={"content": "Hello", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Hello"
    assert smol.client.post("/detokenize", json={"tokens": toks}).json()["content"] == "Hello world<|im_end|>"
    r = smol.client.post("/detokenize", json={"tokens": [10**9]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"
    props = smol.client.get("/props").json()
    assert props["total_slots"] == 4 and props["n_ctx"] == 1024 and props["tool_format"] == "generic"
    assert props["embeddings"]["pooling"] == "mean"


# --------------------------------------------------------------------------- one batch for every kind
def _mix_count(server: Server, kinds: str) -> float:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(f'model_server_decode_sampling_mix_total{{kinds="{kinds}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_grammar_logprob_and_plain_sequences_decode_in_the_same_step(smol):
    """Three requests at once, each running 40 tokens (ignore_eos): llama_decode calls whose sequences
    include all three kinds of sampling are counted (model_server_decode_sampling_mix_total)."""
    from concurrent.futures import ThreadPoolExecutor

    before = _mix_count(smol, "grammar+logprobs+plain")
    common = {"prompt": "Write about llamas:", "max_tokens": 40, "ignore_eos": True, "temperature": 0}
    bodies = [
        {**common, "grammar": "root ::= [a-z ]+"},
        {**common, "logprobs": 1},
        common,
    ]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda b: smol.client.post("/v1/completions", json=b), bodies))
    assert all(r.status_code == 200 for r in results)
    assert all(r.json()["usage"]["completion_tokens"] == 40 for r in results)
    assert set(results[0].json()["choices"][0]["text"]) <= set("abcdefghijklmnopqrstuvwxyz ")
    assert _mix_count(smol, "grammar+logprobs+plain") - before >= 10
