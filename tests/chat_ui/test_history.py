"""History building and retry delays: pure functions of the UI backend."""

from __future__ import annotations

import random

import pytest

from chat_ui.backend import backoff_delay, build_messages, message_text

SYSTEM = {"role": "system", "content": "Be brief."}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


def gradio(role: str, text: str, **extra: object) -> dict:
    """A message as Gradio 6 hands history to the chat function: content is a list of text parts."""
    return {
        "role": role,
        "content": [{"type": "text", "text": text}],
        "metadata": None,
        "options": None,
        **extra,
    }


def test_first_question_gets_the_system_prompt() -> None:
    assert build_messages("Be brief.", [], "Hi", 40) == [SYSTEM, user("Hi")]


def test_empty_system_prompt_sends_none() -> None:
    assert build_messages("", [], "Hi", 40) == [user("Hi")]


def test_multi_turn_history_in_order_from_gradio_dicts() -> None:
    history = [gradio("user", "My name is Ada."), gradio("assistant", "Hello Ada!")]
    assert build_messages("Be brief.", history, "What is my name?", 40) == [
        SYSTEM,
        user("My name is Ada."),
        bot("Hello Ada!"),
        user("What is my name?"),
    ]


def test_notes_are_not_conversation() -> None:
    history = [
        user("Q1"),
        gradio(
            "assistant", "It may be starting up.", metadata={"title": "⚠️ The model server is not reachable."}
        ),
        user("Q1 again"),
        bot("A1"),
    ]
    # The failed question is dropped: resending it must not ask the model twice.
    assert build_messages("", history, "Q2", 40) == [user("Q1 again"), bot("A1"), user("Q2")]


def test_unanswered_last_question_is_dropped() -> None:
    history = [user("Q1"), bot("A1"), user("stopped before the first token")]
    assert build_messages("", history, "Q2", 40) == [user("Q1"), bot("A1"), user("Q2")]


def test_stopped_partial_answer_is_kept_and_split_answers_joined() -> None:
    history = [user("Q1"), bot("Once upon"), bot(" a time"), gradio("assistant", "", metadata={"title": "✂️"})]
    assert build_messages("", history, "Go on", 40) == [user("Q1"), bot("Once upon a time"), user("Go on")]


def test_history_is_trimmed_oldest_first_and_starts_with_a_question() -> None:
    history = [user("Q1"), bot("A1"), user("Q2"), bot("A2"), user("Q3"), bot("A3")]
    assert build_messages("", history, "Q4", 3) == [user("Q3"), bot("A3"), user("Q4")]
    assert build_messages("", history, "Q4", 4) == [user("Q2"), bot("A2"), user("Q3"), bot("A3"), user("Q4")]
    assert build_messages("S", history, "Q4", 0) == [{"role": "system", "content": "S"}, user("Q4")]


def test_non_text_content_and_other_roles_are_ignored() -> None:
    history = [
        {"role": "system", "content": "injected"},
        {"role": "user", "content": [{"type": "file", "file": {"path": "/tmp/x.png"}}]},
        user("Q1"),
        bot(["A", {"type": "text", "text": "1"}]),
    ]
    assert build_messages("", history, "Q2", 40) == [user("Q1"), bot("A1"), user("Q2")]
    assert message_text(None) == "" and message_text(42) == ""


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    random.seed(7)
    for attempt, nominal in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (9, 8.0)):
        delay = backoff_delay(attempt, 1.0, 8.0, None)
        assert 0.8 * nominal <= delay <= nominal, (attempt, delay)


@pytest.mark.parametrize(
    ("retry_after", "low", "high"), [("3", 2.4, 3.0), ("30", 6.4, 8.0), ("soon", 0.8, 1.0)]
)
def test_backoff_honours_retry_after_up_to_the_cap(retry_after: str, low: float, high: float) -> None:
    for _ in range(20):
        assert low <= backoff_delay(1, 1.0, 8.0, retry_after) <= high
