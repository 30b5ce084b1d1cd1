"""Prompt tokenization where only the chat template's own markers are special tokens.

llama.cpp's `parse_special=True` turns every occurrence of a control token's text into that token, also
inside user text: a user could forge `<|im_end|><|im_start|>system` turns, and llama.cpp's special-token
partitioning is super-linear in the number of occurrences (a 220 kB prompt stalled a core for 13 s).
Here user text is always plain text:

- completions: the prompt is tokenized with `parse_special=False`;
- chat: before rendering, control-token texts inside message contents are swapped for private-use
  placeholders; in the rendered text, control-token texts (the template's markers) become their tokens
  and placeholders turn back into the literal user text, which is tokenized as plain text. For text
  without control-token texts the result equals tokenizing the rendered prompt with `parse_special=True`.

Everything here is CPU work: call it off the event loop (`Serving` runs it in a worker thread).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import llama_cpp

from model_server.chat import ChatTemplate

if TYPE_CHECKING:
    from model_server.engine import Engine

# Private-use code points frame a placeholder: "\ue000<index>\ue001". Literal occurrences of the two
# framing characters in user text are escaped the same way, so decoding is unambiguous.
_OPEN, _CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")


class PromptTokenizer:
    """Tokenizes prompts for one model vocabulary (read-only; safe to use from several threads)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        vocab = engine.vocab
        special_attrs = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        specials: dict[str, int] = {}
        max_piece = 1
        for tok in range(engine.n_vocab):
            if llama_cpp.llama_vocab_get_attr(vocab, tok) & special_attrs:
                text = (llama_cpp.llama_vocab_get_text(vocab, tok) or b"").decode("utf-8", errors="replace")
                if text:
                    specials.setdefault(text, tok)
            else:
                max_piece = max(max_piece, len(engine.token_bytes(tok)))
        #: Control-token text -> token id (the markers a chat template may emit).
        self.specials = specials
        #: Most bytes of text one (non-control) token stands for: a text of B bytes has >= B / this tokens.
        self.max_piece_bytes = max_piece
        # Longest first, as llama.cpp partitions (a marker that contains another wins).
        ordered = sorted(specials, key=len, reverse=True)
        self._escapes = [*ordered, _OPEN, _CLOSE]
        self._escape_index = {text: i for i, text in enumerate(self._escapes)}
        self._escape_re = re.compile("|".join(re.escape(t) for t in self._escapes))
        alternatives = [_PLACEHOLDER.pattern, *(re.escape(t) for t in ordered)]
        self._render_re = re.compile("|".join(alternatives))
        self.add_bos = bool(engine.add_bos)
        self.add_eos = bool(llama_cpp.llama_vocab_get_add_eos(vocab))

    # ------------------------------------------------------------------ plain text
    def plain(self, text: str, *, add_special: bool = True) -> list[int]:
        """User text as plain text: control-token texts in it are ordinary characters."""
        return self.engine.tokenize(text, add_special=add_special, parse_special=False)

    # ------------------------------------------------------------------ chat
    def escape(self, text: str) -> str:
        """Swap control-token texts (and the placeholder framing characters) for placeholders."""
        if not self.specials:
            return text
        return self._escape_re.sub(lambda m: f"{_OPEN}{self._escape_index[m.group(0)]}{_CLOSE}", text)

    def chat(
        self,
        template: ChatTemplate,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        """Render the conversation (and `tools`, for templates that render them) and tokenize it: template
        markers special, message text and tool-call arguments plain.

        Raises `chat.TemplateError` when the template rejects the conversation."""
        escaped = []
        for m in messages:
            e = {**m, "content": self.escape(m["content"])}
            if m.get("tool_calls"):
                e["tool_calls"] = [
                    {**c, "function": {**c["function"], "arguments": self.escape(c["function"]["arguments"])}}
                    for c in m["tool_calls"]
                ]
            escaped.append(e)
        return self.tokenize_rendered(template.render(escaped, tools))

    def tokenize_rendered(self, rendered: str) -> list[int]:
        """Tokens of a rendered prompt whose user text was escaped with `escape`."""
        tokens: list[int] = []
        if self.add_bos and not rendered.startswith(self.engine.bos_text or "\0"):
            tokens.append(self.engine.bos_id)
        run: list[str] = []
        pos = 0
        for m in self._render_re.finditer(rendered):
            run.append(rendered[pos : m.start()])
            pos = m.end()
            index = m.group(1)
            if index is not None:  # a placeholder: the user's literal text
                run.append(self._escapes[int(index)])
                continue
            self._flush(run, tokens)
            tokens.append(self.specials[m.group(0)])
        run.append(rendered[pos:])
        self._flush(run, tokens)
        if self.add_eos and self.engine.eos_id >= 0:
            tokens.append(self.engine.eos_id)
        return tokens

    def _flush(self, run: list[str], tokens: list[int]) -> None:
        text = "".join(run)
        run.clear()
        if text:
            tokens.extend(self.engine.tokenize(text, add_special=False, parse_special=False))
