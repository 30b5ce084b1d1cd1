"""Chat UI settings, read once at start from `CHAT_UI_*` environment variables (pydantic-settings).

Every field states its default; `python -m chat_ui --help` prints the same table. An invalid value fails at
start-up with the variable's name and the reason (exit code 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CHAT_UI_"

#: The seed's system message (chapter 2's `sys_msg` example), used when the operator sets none.
SEED_SYSTEM_PROMPT = (
    "You are a helpful, respectful, and honest assistant. Always provide safe, unbiased, and positive "
    "responses. Avoid harmful, unethical, or illegal content. If a question is unclear or incorrect, explain "
    "why. If unsure, do not provide false information."
)


class Settings(BaseSettings):
    """Typed chat UI configuration. Environment variable = `CHAT_UI_` + upper-case field name."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- the model server ------------------------------------------------------------------------------
    model_url: AnyHttpUrl = Field(
        AnyHttpUrl("http://127.0.0.1:5000"),
        description="Base URL of the model server's OpenAI API (without /v1); in the cluster its Service.",
    )
    model: str | None = Field(
        None, description="`model` sent with each request. Default: none (the served one)."
    )
    api_key: SecretStr | None = Field(
        None, description="Bearer token for the model server, if it requires one."
    )
    api_key_file: Path | None = Field(None, description="File holding that token (a mounted Secret).")
    connect_timeout_s: float = Field(
        5.0, gt=0, le=300, description="TCP connect timeout to the model server."
    )
    read_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="Longest wait for the next streamed token before giving up."
    )

    # --- the conversation ------------------------------------------------------------------------------
    system_prompt: str = Field(
        SEED_SYSTEM_PROMPT, max_length=20_000, description="System prompt set by the operator (the seed's)."
    )
    system_prompt_file: Path | None = Field(None, description="File with the system prompt; overrides it.")
    max_tokens: int = Field(512, ge=1, le=32_768, description="Upper bound of one answer, in tokens.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    max_history_messages: int = Field(
        40, ge=0, le=1000, description="Earlier messages sent with each question (oldest dropped first)."
    )
    max_message_chars: int = Field(
        16_000, ge=1, le=1_000_000, description="Longest accepted user message; longer ones are refused."
    )

    # --- busy model server (429 / 503 draining) --------------------------------------------------------
    retry_attempts: int = Field(
        5, ge=1, le=20, description="Attempts per question when the server is busy (429), the first included."
    )
    retry_backoff_s: float = Field(1.0, gt=0, le=60, description="First retry delay; doubles per retry.")
    retry_backoff_max_s: float = Field(
        8.0, gt=0, le=300, description="Cap on one retry delay (a larger Retry-After is capped to it)."
    )

    # --- HTTP / operations -----------------------------------------------------------------------------
    host: str = Field("0.0.0.0", description="Listen address (container default; `make chat`: 127.0.0.1).")
    port: int = Field(7860, ge=1, le=65535, description="Listen port.")
    root_path: str = Field("", description="Public path prefix when served behind a proxy under a sub-path.")
    title: str = Field("Llama chat", min_length=1, max_length=200, description="Page title and heading.")
    concurrency_limit: int = Field(
        64, ge=1, le=10_000, description="Answers streamed at once by this replica (more wait in the queue)."
    )
    queue_size: int = Field(256, ge=1, le=100_000, description="Questions waiting in this replica's queue.")
    stream_interval_s: float = Field(
        0.05,
        ge=0,
        le=2,
        description="Least time between two page updates of a streaming answer; 0 = per token.",
    )
    model_status_ttl_s: float = Field(
        2.0, ge=0, le=60, description="How long the UI's /readyz reuses one look at the model's /readyz."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_prompts: bool = Field(False, description="Log question and answer text (off: only sizes and ids).")

    @field_validator("root_path")
    @classmethod
    def _root_path(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError("must start with '/' (e.g. /chat) or be empty")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError(f"set only one of {ENV_PREFIX}API_KEY and {ENV_PREFIX}API_KEY_FILE")
        for name in ("api_key_file", "system_prompt_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{ENV_PREFIX}{name.upper()}: no such file: {path}")
        if self.retry_backoff_s > self.retry_backoff_max_s:
            raise ValueError(
                f"{ENV_PREFIX}RETRY_BACKOFF_S ({self.retry_backoff_s}) exceeds "
                f"{ENV_PREFIX}RETRY_BACKOFF_MAX_S ({self.retry_backoff_max_s})"
            )
        return self

    def base_url(self) -> str:
        """The model server's base URL without a trailing slash."""
        return str(self.model_url).rstrip("/")

    def resolved_api_key(self) -> str | None:
        """The bearer token from CHAT_UI_API_KEY or the file (read once, whitespace stripped)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value().strip() or None
        if self.api_key_file is not None:
            return self.api_key_file.read_text(encoding="utf-8").strip() or None
        return None

    def resolved_system_prompt(self) -> str:
        """The system prompt from CHAT_UI_SYSTEM_PROMPT_FILE, else CHAT_UI_SYSTEM_PROMPT (may be empty)."""
        if self.system_prompt_file is not None:
            return self.system_prompt_file.read_text(encoding="utf-8").strip()
        return self.system_prompt.strip()


def settings_help() -> str:
    """The settings table printed by `python -m chat_ui --help`."""
    lines = ["settings (environment variables):"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "none" if default is None else ("<seed's>" if default == SEED_SYSTEM_PROMPT else str(default))
        lines.append(f"  {ENV_PREFIX}{name.upper():<22} default {shown:<24} {field.description or ''}")
    return "\n".join(lines)
