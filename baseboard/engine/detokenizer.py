"""Incremental detokenization that is right for byte-level BPE and sentencepiece tokens.

A token's text depends on its neighbours: a sentencepiece token drops its leading space
at the start of a decode, and a multi-byte character may be split over several byte
tokens. So each new token is decoded after a few tokens of left context (the prompt's
last ones, then the output's), and new text is released only once it no longer ends in
an incomplete character.

Fast (Rust) tokenizers do this in ``tokenizers.decoders.DecodeStream``; other tokenizers
(slow Python ones, or a tokenizers release without DecodeStream's ``ids`` priming) decode
a short window of ids twice per token and release the difference.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

# Prompt tokens kept as left context for the first output tokens.
CONTEXT_TOKENS = 5
REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turns one token at a time into text deltas; special tokens are left out of the text
    when ``skip_special_tokens``. A None tokenizer produces no text (detokenize=False)."""

    def __init__(self, tokenizer: Any, prompt_token_ids: Sequence[int],
                 skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        context = list(prompt_token_ids[-CONTEXT_TOKENS:])
        self.stream = _decode_stream(tokenizer, context, skip_special_tokens)
        # the decode window: context tokens, then tokens whose text is not released yet
        self.ids = context
        self.prefix_offset = 0  # start of the decode window
        self.read_offset = len(self.ids)  # tokens before this one are already released
        self.held: list[int] = []  # tokens given to hold(), not decoded yet

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens,
                                     clean_up_tokenization_spaces=False)

    def hold(self, token_id: int) -> None:
        """Append one token without decoding; ``flush`` releases all held text at once
        (one decode at the end, where nobody reads the text before)."""
        self.held.append(token_id)

    def add(self, token_id: int) -> str:
        """Append one token; return the text it completes (may be '')."""
        self.held.append(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """Text still held back (held tokens, and an incomplete character at the end of the
        output, which ends in U+FFFD)."""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stream is not None:
            return self._release_stream(final)
        self.ids += self.held
        self.held.clear()
        return self._release_window(final)

    def _release_stream(self, final: bool) -> str:
        text = ""
        if self.held:
            text = self.stream.step(self.tokenizer.backend_tokenizer, self.held) or ""
            self.ids += self.held
            self.held.clear()
        if text:  # every token so far is released: they become the context
            del self.ids[:-CONTEXT_TOKENS]
            self.prefix_offset, self.read_offset = 0, len(self.ids)
        elif final:  # the stream holds an incomplete character back for good
            text = self._release_window(final=True)
        return text

    def _release_window(self, final: bool) -> str:
        if self.read_offset == len(self.ids):
            return ""
        prefix_text = self._decode(self.ids[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.ids[self.prefix_offset:])
        if len(new_text) <= len(prefix_text) or (new_text.endswith(REPLACEMENT_CHAR)
                                                 and not final):
            return ""
        # Keep the window short: the released tokens become the next window's context.
        del self.ids[:self.prefix_offset]
        self.prefix_offset = self.read_offset - self.prefix_offset
        self.read_offset = len(self.ids)
        return new_text[len(prefix_text):]


def _decode_stream(tokenizer: Any, context: list[int], skip_special_tokens: bool
                   ) -> Optional[Any]:
    """A DecodeStream primed with ``context``, or None where the tokenizer is not a fast
    one (no Rust tokenizer to step) or the installed tokenizers cannot prime a stream
    (before 0.22: without the prompt's context, a sentencepiece stream would drop the
    first output token's space). The window decode gives the same text there."""
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        return None
    try:
        from tokenizers.decoders import DecodeStream

        return DecodeStream(ids=context, skip_special_tokens=skip_special_tokens)
    except (ImportError, TypeError):
        return None
