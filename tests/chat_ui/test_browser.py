"""The chat page in a real browser: headless Debian Chromium driven by Selenium, in front of the real model
server on the embedded SmolLM2-135M-Instruct, both on 127.0.0.1.

One conversation, in order: a question; a follow-up that needs the history; an answer seen growing while
it streams, with its code block rendered; a long answer stopped mid-stream, after which the server's
`llamacpp:requests_processing` is back to 0 long before the answer could have finished; then the model
server is stopped and the next question shows the clear error. Screenshots and the page text go to
test-artifacts/chat_ui/ (git-ignored).

Skipped where chromium/chromedriver are missing; required when LLAMA_EKS_BROWSER_TEST=required, which
.ci/run sets after installing them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import ARTIFACTS

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
REQUIRED = os.environ.get("LLAMA_EKS_BROWSER_TEST") == "required"
#: Flags that work in this sandbox: no GPU, no sandbox (root), nothing that phones home.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1100,1000",
)
#: The story would run into it (greedy SmolLM2 writes on); it is stopped well before.
MAX_TOKENS = 120
#: Waits are bounds for a hang, not expectations: on a quiet 2-core machine the whole test takes about a
#: minute, but the shared development VM (load 15 on 2 cores) made one 108-token answer take over 2 minutes.
ANSWER_TIMEOUT_S = 360

pytestmark = pytest.mark.slow


def _missing() -> list[str]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (requirements-dev.txt)")
    return missing


@pytest.fixture(scope="module")
def browser() -> Iterator:
    missing = _missing()
    if missing:
        message = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if REQUIRED:
            pytest.fail(f"LLAMA_EKS_BROWSER_TEST=required but {message}")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chat-ui-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(
    what: str, check: Callable[[], object], timeout: float = ANSWER_TIMEOUT_S, every: float = 0.05
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Page:
    """The chat page as a user sees it (selectors: Gradio's chatbot inside #chatbot, input #chat-input)."""

    def __init__(self, driver) -> None:
        from selenium.webdriver.common.by import By

        self.driver = driver
        self.by = By

    def open(self, url: str) -> None:
        self.driver.get(url)
        wait_for(
            "the chat input", lambda: self.driver.find_elements(self.by.CSS_SELECTOR, "#chat-input textarea")
        )

    def ask(self, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.driver.find_element(self.by.CSS_SELECTOR, "#chat-input textarea")
        wait_for("the input to accept text", box.is_enabled)
        box.send_keys(text, Keys.ENTER)

    def bot_messages(self) -> list[str]:
        """Text of each answer (a row of assistant messages), oldest first; one JS round trip, so no element
        goes stale while Gradio re-renders the streaming answer."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#chatbot .bot-row')).map(e => e.innerText.trim())"
        )

    def generating(self) -> bool:
        """The stop button is shown (Gradio swaps it in for the send button while an answer streams)."""
        return self.driver.execute_script(
            "const b = document.querySelector('#chat-input button.stop-button');"
            "return !!(b && b.offsetParent !== null);"
        )

    def stop(self) -> None:
        self.driver.find_element(self.by.CSS_SELECTOR, "#chat-input button.stop-button").click()

    def code_blocks(self, answer: int) -> list[str]:
        """Text of the rendered code blocks (<pre><code>) of answer number `answer` (0-based)."""
        return self.driver.execute_script(
            "const row = document.querySelectorAll('#chatbot .bot-row')[arguments[0]];"
            "return row ? Array.from(row.querySelectorAll('pre code')).map(e => e.innerText) : [];",
            answer,
        )

    def chat_text(self) -> str:
        return self.driver.find_element(self.by.ID, "chatbot").text

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.driver.save_screenshot(str(path))
        (ARTIFACTS / f"{path.stem}.txt").write_text(self.chat_text())
        return path


def answer_after(page: Page, count: int, timeout: float = ANSWER_TIMEOUT_S) -> str:
    """Wait until bot message number `count` is complete (generation over) and return its text."""
    wait_for(f"bot message {count}", lambda: len(page.bot_messages()) >= count, timeout)
    wait_for("the answer to complete", lambda: not page.generating(), timeout)
    return page.bot_messages()[count - 1]


def test_conversation_in_a_real_browser(browser, smol_gguf, tmp_path, start_ui) -> None:
    from .conftest import Server

    server = Server(
        smol_gguf,
        tmp_path,
        max_concurrency=2,
        n_ctx=2048,
        max_tokens_limit=MAX_TOKENS,
        n_threads=2,
    )
    page = None
    try:
        server.wait_ready()
        ui = start_ui(
            server.url, temperature=0, max_tokens=MAX_TOKENS, system_prompt="You are a helpful assistant."
        )
        page = Page(browser)
        page.open(ui.url + "/")

        # 1. A first answer.
        page.ask("What is the capital of France? Answer in one sentence.")
        first = answer_after(page, 1)
        assert "Paris" in first, first

        # 2. Multi-turn: the follow-up only makes sense with the history. (Greedy SmolLM2 repeats "The capital
        # of France is Paris." with it, and says something unrelated without it.)
        def prompt_tokens() -> float:  # computed, and reused from the first turn's cached prompt
            return server.metric("llamacpp:prompt_tokens_total") + server.metric(
                "model_server_prefix_cache_reused_tokens_total"
            )

        tokens_before = prompt_tokens()
        page.ask("Repeat your previous answer.")
        follow_up = answer_after(page, 2)
        assert "Paris" in follow_up, follow_up
        # Its prompt held the first question and answer: well over the ~25 tokens it has on its own.
        assert prompt_tokens() - tokens_before > 50

        # 3. Streaming and markdown: a longer answer is seen growing (several increasing lengths before it
        # completes) and its code block is rendered as code.
        page.ask("Write a Python function that adds two numbers, in a markdown code block.")
        lengths: list[int] = []

        def grown() -> bool:
            bots = page.bot_messages()
            if len(bots) >= 3 and bots[2] and (not lengths or len(bots[2]) != lengths[-1]):
                lengths.append(len(bots[2]))
            return bool(lengths) and not page.generating()

        wait_for("the code answer", grown, every=0.01)
        # Grown in steps (markdown re-rendering may shorten the text for a moment, e.g. when a fence opens).
        assert len(set(lengths)) >= 3 and lengths[0] < lengths[-1] / 2, f"not seen streaming: {lengths}"
        code = page.code_blocks(2)
        assert code and "def add_two_numbers" in code[0], code
        page.screenshot("conversation.png")

        # 4. Stop: a long answer stopped mid-stream frees the server's slot long before it could finish.
        predicted_before = server.metric("llamacpp:tokens_predicted_total")
        page.ask("Write a very long story about a dragon who learns to bake bread. Use many chapters.")
        wait_for(
            "the story to start", lambda: len(page.bot_messages()) >= 4 and len(page.bot_messages()[3]) > 30
        )
        assert server.metric("llamacpp:requests_processing") == 1
        page.stop()
        stopped_at = time.monotonic()
        wait_for(
            "the slot to be freed", lambda: server.metric("llamacpp:requests_processing") == 0, timeout=30
        )
        freed_after = time.monotonic() - stopped_at
        wait_for("the input to come back", lambda: not page.generating(), timeout=30)
        story = page.bot_messages()[3]
        time.sleep(0.5)
        assert page.bot_messages()[3] == story, "the answer kept growing after stop"
        assert "token limit" not in story  # stopped, not cut at MAX_TOKENS
        predicted = server.metric("llamacpp:tokens_predicted_total") - predicted_before
        assert predicted < MAX_TOKENS - 30, f"generation ran on: {predicted} of {MAX_TOKENS} tokens"
        assert freed_after < 20, freed_after  # cancelled, not finished: see the token count above
        page.screenshot("stopped.png")

        # 5. Model down: the next question gets the clear message, not a stack trace.
        assert server.stop() == 0
        page.ask("Are you still there?")
        # The note's title can show while the UI still retries (pending): wait for the final note's text.
        hint = "It may be starting up or restarting. Try again in a minute."
        wait_for("the error note", lambda: hint in page.chat_text(), timeout=60)
        text = page.chat_text()
        assert "The model server is not reachable." in text
        assert "Traceback" not in text
        assert page.bot_messages()[:2] == [first, follow_up]  # the conversation is still there
        page.screenshot("model-down.png")
    except BaseException:
        if page is not None:
            page.screenshot("failure.png")
        raise
    finally:
        server.stop()
