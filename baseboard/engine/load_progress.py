"""One progress bar over a whole load: metadata, plan, weights, tokenizer, KV cache."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")
FIXED_STEPS = 4  # metadata, plan, tokenizer, KV cache (and graphs); the weights add theirs


class LoadProgress:
    """Shown only when a load takes over a second (a small model's load stays quiet)."""

    def __init__(self, name: str):
        self.bar = tqdm(total=FIXED_STEPS, desc=f"loading {name}", unit="step", delay=1,
                        leave=False)

    def step(self, done: str) -> None:
        self.bar.set_postfix_str(done, refresh=False)
        self.bar.update()

    def weights(self, weights: Iterable[T], count: int) -> Iterator[T]:
        """``weights`` passed through, a step each."""
        self.bar.total += count
        self.bar.set_postfix_str("weights", refresh=False)
        for item in weights:
            yield item
            self.bar.update()

    def close(self) -> None:
        self.bar.close()
