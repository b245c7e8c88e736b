"""A fault injected where a tokenizer could fail: requests whose prompt ends like a given one
fail inside the engine step that reads their first token (their detokenizer raises)."""

from baseboard.engine.detokenizer import IncrementalDetokenizer


class DecodeFailure(RuntimeError):
    pass


def poison(monkeypatch, tokenizer, prompt: str) -> str:
    """Make requests whose prompt ends like ``prompt`` fail; returns ``prompt``."""
    marker = tokenizer(prompt).input_ids[-1]
    init, add = IncrementalDetokenizer.__init__, IncrementalDetokenizer.add

    def tagging_init(self, tokenizer, prompt_token_ids, skip_special_tokens=True):
        init(self, tokenizer, prompt_token_ids, skip_special_tokens)
        self.poisoned = list(prompt_token_ids[-1:]) == [marker]

    def failing_add(self, token_id):
        if self.poisoned:
            raise DecodeFailure(f"cannot decode token {token_id}")
        return add(self, token_id)

    monkeypatch.setattr(IncrementalDetokenizer, "__init__", tagging_init)
    monkeypatch.setattr(IncrementalDetokenizer, "add", failing_add)
    return prompt
