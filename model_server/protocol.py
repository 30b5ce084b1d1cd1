"""Request schemas of the HTTP API: the seed's /predict and OpenAI's completions and chat completions.

Sampling defaults come from `model_server.sampling.DEFAULTS` (one place); request-independent limits come
from the settings and are applied by the serving layer.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from model_server.sampling import DEFAULTS, SamplingParams


class _Req(BaseModel):
    # OpenAI clients send fields we do not use (user, logit_bias=None, ...): ignore unknown keys.
    model_config = ConfigDict(extra="ignore")


class SamplingFields(_Req):
    """The sampling parameters shared by both OpenAI endpoints (OpenAI's plus llama.cpp's extras)."""

    max_tokens: int | None = Field(
        None, ge=1, description="Capped by MODEL_SERVER_MAX_TOKENS_LIMIT and context."
    )
    temperature: float = Field(DEFAULTS.temperature, ge=0.0, le=2.0)
    top_p: float = Field(DEFAULTS.top_p, gt=0.0, le=1.0)
    top_k: int = Field(DEFAULTS.top_k, ge=0, le=100_000)
    min_p: float = Field(DEFAULTS.min_p, ge=0.0, le=1.0)
    repeat_penalty: float = Field(DEFAULTS.repeat_penalty, gt=0.0, le=10.0)
    frequency_penalty: float = Field(DEFAULTS.frequency_penalty, ge=-2.0, le=2.0)
    presence_penalty: float = Field(DEFAULTS.presence_penalty, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[Annotated[str, Field(min_length=1)]] | None = Field(None, max_length=16)
    n: int = Field(1, ge=1, le=1, description="Only n=1 is supported.")

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            seed=self.seed,
        )

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class StreamOptions(_Req):
    include_usage: bool = False


class PredictRequest(_Req):
    """The seed's contract (chapter 2): prompt + system message, optional max_tokens."""

    prompt: str = Field(..., max_length=1_000_000)
    sys_msg: str = ""
    max_tokens: int | None = Field(None, ge=1)


class CompletionRequest(SamplingFields):
    model: str | None = None
    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=1)]
    )
    stream: bool = False
    stream_options: StreamOptions | None = None

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(_Req):
    type: Literal["text"]
    text: str


class ChatMessage(_Req):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(SamplingFields):
    model: str | None = None
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def template_messages(self) -> list[dict[str, str]]:
        """The conversation as the chat template expects it (`developer` is OpenAI's new `system`)."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]
