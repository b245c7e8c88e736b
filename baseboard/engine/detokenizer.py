"""Incremental detokenization that is right for byte-level BPE and sentencepiece tokens.

A token's text depends on its neighbours: a sentencepiece token drops its leading space
at the start of a decode, and a multi-byte character may be split over several byte
tokens. So each new token is decoded inside a short window of the tokens before it, and
the new text is released only once it no longer ends in an incomplete character.
"""

from __future__ import annotations

from typing import Any, Sequence

# Prompt tokens kept as left context for the first output tokens.
CONTEXT_TOKENS = 5
REPLACEMENT_CHAR = "\ufffd"


class IncrementalDetokenizer:
    """Turns one token at a time into text deltas; special tokens are skipped."""

    def __init__(self, tokenizer: Any, prompt_token_ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.ids = list(prompt_token_ids[-CONTEXT_TOKENS:])
        self.prefix_offset = 0  # start of the decode window
        self.read_offset = len(self.ids)  # tokens before this one are already released

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=False)

    def hold(self, token_id: int) -> None:
        """Append one token without decoding; ``flush`` releases all held text at once
        (one decode at the end, where nobody reads the text before)."""
        self.ids.append(token_id)

    def add(self, token_id: int) -> str:
        """Append one token; return the text it completes (may be '')."""
        self.ids.append(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """Text still held back (an incomplete character at the end of the output)."""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
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
