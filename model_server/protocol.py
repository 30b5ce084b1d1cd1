"""Schemas of the HTTP API: the seed's /predict and OpenAI's completions and chat completions.

Requests are strict: booleans are not numbers and numbers are not strings, text must be valid Unicode
(no lone surrogates), and every parameter is either honoured or refused with a 400 that names it:
unknown keys, and OpenAI/llama-server parameters this server does not implement (`UNSUPPORTED`), unless
they carry their neutral value (`"logprobs": false`, `"tools": []`, `null`, ...), which changes nothing.

Sampling defaults come from `model_server.sampling.DEFAULTS` (one place); `repeat_penalty` defaults to the
server's MODEL_SERVER_DEFAULT_REPEAT_PENALTY. Response models document the JSON answers in /openapi.json.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError

from model_server.sampling import DEFAULTS, SamplingParams

#: Longest text field (a bound only so that pydantic-core validates text natively, see `Text`).
MAX_TEXT_CHARS = 100_000_000
#: Limits of `stop` (the engine checks every stop string after each token).
MAX_STOPS = 16
MAX_STOP_CHARS = 256


def _valid_stop(stop: str | list[str]) -> str | list[str]:
    """`"stop": ""` and `"stop": [""]` are the same mistake: an empty stop string would match at once."""
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > MAX_STOPS:
        raise PydanticCustomError("too_long", "at most {n} stop strings", {"n": MAX_STOPS})
    for s in stops:
        if not s:
            raise PydanticCustomError("string_too_short", "stop strings must not be empty")
        if len(s) > MAX_STOP_CHARS:
            raise PydanticCustomError(
                "string_too_long", "stop strings have at most {n} characters", {"n": MAX_STOP_CHARS}
            )
    return stop


def _integer(value: Any) -> Any:
    """JSON integers, also written 5.0 (JSON Schema's integers); never booleans or strings."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise PydanticCustomError("bool_type", "Input should be a valid boolean")
    return value


#: An integer parameter: `true` is not 1, "5" is not 5, 5.0 is 5.
Int = Annotated[int, BeforeValidator(_integer)]
#: Neutral values of unimplemented parameters (a Literal alone would take 0 for false and true for 1).
OnlyFalse = Annotated[Literal[False], BeforeValidator(_boolean)]
OnlyZero = Annotated[Literal[0], BeforeValidator(_integer)]
OnlyOne = Annotated[Literal[1], BeforeValidator(_integer)]

#: User text: any valid Unicode string. The length bound (far above any body limit) makes pydantic-core
#: convert the string natively, which refuses lone UTF-16 surrogates ("\udfff", valid JSON but not text)
#: at no cost; errors.validation_error names them (code invalid_unicode).
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
#: `stop`: one string or a list, each non-empty and short (the engine checks them after every token).
_STOP_STRING = {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS}
Stop = Annotated[
    Text | list[Text],
    AfterValidator(_valid_stop),
    WithJsonSchema(
        {"anyOf": [_STOP_STRING, {"type": "array", "items": _STOP_STRING, "maxItems": MAX_STOPS}]}
    ),
]


class _Strict(BaseModel):
    # strict: `true` is not 1 and "5" is not 5; forbid: an unknown key is a 400 naming it.
    model_config = ConfigDict(strict=True, extra="forbid")


# --------------------------------------------------------------------------- unsupported parameters
#: Parameters OpenAI or llama-server define that this server does not implement. Each is accepted only
#: with its neutral value (shown in its schema); anything else is a 400 naming it.
UNSUPPORTED: frozenset[str] = frozenset({"suffix", "best_of", "n_probs"})

_NOT_IMPLEMENTED = "Not implemented by this server: only the neutral value shown is accepted."
#: Most choices per request (`n`); each takes a slot, so also at most MODEL_SERVER_MAX_CONCURRENCY.
MAX_N = 16
#: Most tools (functions) per request.
MAX_TOOLS = 128
#: Most alternatives per token in chat's top_logprobs (completions' logprobs: 5, as OpenAI).
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5

JsonSchemaObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "description": "A JSON Schema.", "additionalProperties": True}),
]


class TextFormat(_Strict):
    type: Literal["text"]


class JsonObjectFormat(_Strict):
    """Any JSON object."""

    type: Literal["json_object"]
    schema_: JsonSchemaObject | None = Field(
        None, alias="schema", description="llama-server's extension: a schema for the object."
    )


class JsonSchemaSpec(_Strict):
    name: str = Field("response", max_length=64)
    description: str | None = None
    schema_: JsonSchemaObject | None = Field(None, alias="schema", description="Default: any JSON object.")
    strict: bool | None = Field(None, description="Accepted; the output always follows the schema (grammar).")


class JsonSchemaFormat(_Strict):
    """Output valid against the schema (grammar-constrained sampling)."""

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class _Unsupported(_Strict):
    """Neutral-only declarations of the unsupported parameters both OpenAI endpoints share."""

    n_probs: OnlyZero | None = Field(None, description=_NOT_IMPLEMENTED)


# --------------------------------------------------------------------------- requests
class SamplingFields(_Unsupported):
    """The sampling parameters shared by both OpenAI endpoints (OpenAI's plus llama.cpp's extras)."""

    max_tokens: Int | None = Field(
        None,
        ge=1,
        description="Default MODEL_SERVER_DEFAULT_MAX_TOKENS; capped by "
        "MODEL_SERVER_MAX_TOKENS_LIMIT and by the room left in the context.",
    )
    temperature: float = Field(DEFAULTS.temperature, ge=0.0, le=2.0, description="0 = greedy.")
    top_p: float = Field(DEFAULTS.top_p, gt=0.0, le=1.0)
    top_k: Int = Field(DEFAULTS.top_k, ge=0, le=100_000, description="0 = off.")
    min_p: float = Field(DEFAULTS.min_p, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(
        None,
        gt=0.0,
        le=10.0,
        description="llama.cpp's repetition penalty; default "
        "MODEL_SERVER_DEFAULT_REPEAT_PENALTY (1.0 = off).",
    )
    frequency_penalty: float = Field(DEFAULTS.frequency_penalty, ge=-2.0, le=2.0)
    presence_penalty: float = Field(DEFAULTS.presence_penalty, ge=-2.0, le=2.0)
    seed: Int | None = Field(None, ge=-(2**63), le=2**64 - 1, description="Default: random.")
    stop: Stop | None = Field(
        None, description=f"Up to {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} characters."
    )
    n: Int = Field(
        1,
        ge=1,
        le=MAX_N,
        description="Choices to generate, decoded together (each takes a slot: at most "
        "MODEL_SERVER_MAX_CONCURRENCY); choice i uses seed + i.",
    )
    user: str | None = Field(None, max_length=256, description="Accepted and ignored (OpenAI end-user id).")
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        None,
        max_length=1024,
        description="Token id (as a string) -> bias added to its logit; -100 bans the token, 100 forces it.",
    )
    response_format: ResponseFormat | None = Field(
        None, description="text, json_object, or json_schema: output constrained by a grammar."
    )
    min_tokens: Int = Field(
        0, ge=0, description="End-of-generation tokens are banned until this many tokens."
    )
    ignore_eos: bool = Field(
        False, description="Never stop at end-of-generation tokens (llama.cpp extension)."
    )
    grammar: Annotated[Text, Field(min_length=1)] | None = Field(
        None,
        description="A GBNF grammar for the output (llama.cpp extension).",
    )
    json_schema: JsonSchemaObject | None = Field(
        None,
        description="A JSON Schema for the output (llama.cpp extension; as response_format json_schema).",
    )

    def sampling(self, default_repeat_penalty: float) -> SamplingParams:
        """The sampling parameters (grammar, log-probabilities and seeds per choice are the serving's)."""
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty if self.repeat_penalty is not None else default_repeat_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            seed=self.seed,
            logit_bias=tuple((int(k), v) for k, v in (self.logit_bias or {}).items()),
            min_tokens=self.min_tokens,
            ignore_eos=self.ignore_eos,
        )

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class StreamOptions(_Strict):
    include_usage: bool = False


class PredictRequest(_Strict):
    """The seed's contract (chapter 2): prompt + system message, optional max_tokens."""

    prompt: Text = Field(..., max_length=1_000_000)
    sys_msg: Text = ""
    max_tokens: Int | None = Field(None, ge=1, description="Default MODEL_SERVER_DEFAULT_MAX_TOKENS.")


class CompletionRequest(SamplingFields):
    model: str | None = Field(None, description="Ignored: the server serves one model.")
    prompt: (
        Annotated[Text, Field(min_length=1)]
        | Annotated[list[Annotated[Text, Field(min_length=1)]], Field(min_length=1, max_length=1)]
    ) = Field(..., description="Plain text: special-token texts in it are ordinary characters.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: Int | None = Field(
        None,
        ge=0,
        le=MAX_COMPLETION_LOGPROBS,
        description="Log-probabilities of the sampled tokens and this many top alternatives.",
    )
    echo: bool = Field(False, description="Prepend the prompt to the text (not with logprobs).")
    suffix: Literal[""] | None = Field(None, description=_NOT_IMPLEMENTED)
    best_of: OnlyOne | None = Field(None, description=_NOT_IMPLEMENTED)

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


FunctionName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_.-]+$")]


class FunctionCall(_Strict):
    name: FunctionName
    arguments: Text = Field(..., description="The arguments as a JSON text.")


class ToolCall(_Strict):
    id: str = Field(..., max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDef(_Strict):
    name: FunctionName
    description: str | None = Field(None, max_length=8192)
    parameters: JsonSchemaObject | None = Field(None, description="A JSON Schema; default: no arguments.")
    strict: bool | None = Field(None, description="Accepted; calls always follow the schema (grammar).")


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Strict):
    name: FunctionName


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Text | list[TextPart] | None = None
    name: str | None = Field(None, max_length=256, description="Function name of a `function` message.")
    tool_calls: list[ToolCall] | None = Field(None, max_length=MAX_TOOLS, description="An assistant's calls.")
    function_call: FunctionCall | None = Field(None, description="Legacy: an assistant's function call.")
    tool_call_id: str | None = Field(None, max_length=256, description="A `tool` message's call id.")

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(SamplingFields):
    """An OpenAI chat completion request (`limited()` adds the server's message limit)."""

    model: str | None = Field(None, description="Ignored: the server serves one model.")
    messages: list[ChatMessage] = Field(
        ..., min_length=1, description="At most MODEL_SERVER_MAX_MESSAGES messages."
    )
    max_completion_tokens: Int | None = Field(None, ge=1, description="Preferred over max_tokens.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = Field(None, description="Log-probabilities of the sampled tokens.")
    top_logprobs: Int | None = Field(
        None, ge=0, le=MAX_TOP_LOGPROBS, description="Alternatives per token (needs logprobs: true)."
    )
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="Default: auto with tools, none without."
    )
    functions: list[FunctionDef] | None = Field(None, max_length=MAX_TOOLS, description="Legacy tools.")
    function_call: Literal["none", "auto"] | NamedFunction | None = Field(
        None, description="Legacy tool_choice."
    )
    parallel_tool_calls: bool | None = Field(
        None, description="Accepted; a response carries at most one tool call."
    )

    @classmethod
    def limited(cls, max_messages: int) -> type[ChatRequest]:
        """This schema with the server's message limit, checked on the list's length before any message
        is validated (a 1 MB body of tiny messages must not cost the event loop 100+ ms)."""
        messages = Annotated[list[ChatMessage], Field(min_length=1, max_length=max_messages)]
        limited: type[ChatRequest] = create_model(
            "ChatRequest",
            __base__=cls,
            __doc__=cls.__doc__,
            messages=(messages, Field(..., description=f"At most {max_messages} messages.")),
        )
        return limited

    def template_messages(self) -> list[dict[str, Any]]:
        """The conversation as the chat template expects it (`developer` is OpenAI's new `system`, a
        legacy `function` message is a `tool` message; assistant tool calls as OpenAI sends them)."""
        out: list[dict[str, Any]] = []
        for m in self.messages:
            role = {"developer": "system", "function": "tool"}.get(m.role, m.role)
            msg: dict[str, Any] = {"role": role, "content": m.text()}
            calls = [c.model_dump() for c in m.tool_calls or []]
            if m.function_call is not None:
                calls.append({"id": "call_0", "type": "function", "function": m.function_call.model_dump()})
            if calls:
                msg["tool_calls"] = calls
            if m.tool_call_id is not None:
                msg["tool_call_id"] = m.tool_call_id
            if m.name is not None:
                msg["name"] = m.name
            out.append(msg)
        return out

    def tool_functions(self) -> list[FunctionDef]:
        """The functions the model may call (`tools`, or the legacy `functions`)."""
        if self.tools:
            return [t.function for t in self.tools]
        return list(self.functions or [])

    def tool_mode(self) -> str | FunctionName:
        """none | auto | required | the name of the one function to call (legacy function_call too)."""
        choice: Any = self.tool_choice if self.tool_choice is not None else self.function_call
        if isinstance(choice, NamedToolChoice):
            return choice.function.name
        if isinstance(choice, NamedFunction):
            return choice.name
        if choice is None:
            return "auto" if self.tool_functions() else "none"
        return str(choice)


# --------------------------------------------------------------------------- responses (for the schema)
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length", "tool_calls"]


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason | None


class Completion(BaseModel):
    """A text completion; with `stream: true` the same object arrives in SSE chunks (`usage` last)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class PredictResponse(BaseModel):
    response: Completion


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob]


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    meta: dict[str, int]


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Status(BaseModel):
    """A probe's answer: ok/ready, or why not (loading, draining, error)."""

    status: str
    detail: str | None = None
    active: int | None = None
    queued: int | None = None


# --------------------------------------------------------------------------- embeddings, tokenizer, props
#: Most inputs per embeddings request (OpenAI's limit is 2048).
MAX_EMBEDDING_INPUTS = 256
_NonEmptyText = Annotated[Text, Field(min_length=1)]
_TokenIds = Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(min_length=1)]


class EmbeddingRequest(_Strict):
    input: (
        _NonEmptyText
        | Annotated[list[_NonEmptyText], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
        | (_TokenIds)
        | Annotated[list[_TokenIds], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    ) = Field(
        ...,
        description=f"A text, a list of up to {MAX_EMBEDDING_INPUTS} texts, or token ids (one list or many).",
    )
    model: str | None = Field(None, description="Ignored: the server serves one model.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="base64: little-endian float32 values."
    )
    dimensions: None = Field(None, description=_NOT_IMPLEMENTED)
    user: str | None = Field(None, max_length=256, description="Accepted and ignored.")

    def inputs(self) -> list[str | list[int]]:
        inp: Any = self.input
        if isinstance(inp, str):
            return [inp]
        if inp and isinstance(inp[0], int):
            return [list(inp)]
        return list(inp)


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class TokenizeRequest(_Strict):
    """llama-server's /tokenize."""

    content: Text
    add_special: bool = Field(False, description="Add BOS/EOS as the model does.")
    parse_special: bool = Field(True, description="Special-token texts become their tokens.")
    with_pieces: bool = Field(False, description="Return {id, piece} objects instead of ids.")


class TokenPiece(BaseModel):
    id: int
    piece: str | list[int] = Field(..., description="The text, or its bytes when they are not valid UTF-8.")


class TokenizeResponse(BaseModel):
    tokens: list[int] | list[TokenPiece]


class DetokenizeRequest(_Strict):
    """llama-server's /detokenize."""

    tokens: Annotated[list[Annotated[int, Field(ge=0, le=2**31 - 1)]], Field(max_length=1_000_000)]


class DetokenizeResponse(BaseModel):
    content: str
