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
UNSUPPORTED: frozenset[str] = frozenset(
    {
        "logprobs",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "parallel_tool_calls",
        "logit_bias",
        "echo",
        "suffix",
        "best_of",
        "min_tokens",
        "ignore_eos",
        "grammar",
        "json_schema",
        "n_probs",
    }
)

_NOT_IMPLEMENTED = "Not implemented by this server: only the neutral value shown is accepted."
_EmptyList = Annotated[list[Any], Field(max_length=0)]
_EmptyDict = Annotated[dict[str, Any], Field(max_length=0)]


class TextFormat(_Strict):
    type: Literal["text"]


class _Unsupported(_Strict):
    """Neutral-only declarations of the unsupported parameters both OpenAI endpoints share."""

    logit_bias: _EmptyDict | None = Field(None, description=_NOT_IMPLEMENTED)
    response_format: TextFormat | None = Field(None, description=_NOT_IMPLEMENTED)
    min_tokens: OnlyZero | None = Field(None, description=_NOT_IMPLEMENTED)
    ignore_eos: OnlyFalse | None = Field(None, description=_NOT_IMPLEMENTED)
    grammar: Literal[""] | None = Field(None, description=_NOT_IMPLEMENTED)
    json_schema: _EmptyDict | None = Field(None, description=_NOT_IMPLEMENTED)
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
    n: Int = Field(1, ge=1, le=1, description="Only n=1 is supported.")
    user: str | None = Field(None, max_length=256, description="Accepted and ignored (OpenAI end-user id).")

    def sampling(self, default_repeat_penalty: float) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty if self.repeat_penalty is not None else default_repeat_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            seed=self.seed,
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
    logprobs: None = Field(None, description=_NOT_IMPLEMENTED)
    echo: OnlyFalse | None = Field(None, description=_NOT_IMPLEMENTED)
    suffix: Literal[""] | None = Field(None, description=_NOT_IMPLEMENTED)
    best_of: OnlyOne | None = Field(None, description=_NOT_IMPLEMENTED)

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None
    name: str | None = Field(None, max_length=256, description="Accepted and ignored.")
    tool_calls: _EmptyList | None = Field(None, description=_NOT_IMPLEMENTED)
    tool_call_id: None = Field(None, description=_NOT_IMPLEMENTED)

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
    logprobs: OnlyFalse | None = Field(None, description=_NOT_IMPLEMENTED)
    top_logprobs: OnlyZero | None = Field(None, description=_NOT_IMPLEMENTED)
    tools: _EmptyList | None = Field(None, description=_NOT_IMPLEMENTED)
    tool_choice: Literal["none"] | None = Field(None, description=_NOT_IMPLEMENTED)
    functions: _EmptyList | None = Field(None, description=_NOT_IMPLEMENTED)
    function_call: Literal["none"] | None = Field(None, description=_NOT_IMPLEMENTED)
    parallel_tool_calls: bool | None = Field(None, description="Accepted and ignored (no tools).")

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

    def template_messages(self) -> list[dict[str, str]]:
        """The conversation as the chat template expects it (`developer` is OpenAI's new `system`)."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]


# --------------------------------------------------------------------------- responses (for the schema)
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None
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
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None
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
