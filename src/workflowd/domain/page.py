"""One page of a listing, with a continuation token after each item, so the API can end a page
early when its items would not fit one response message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    after: Sequence[str]
    """`after[i]` continues the listing right after `items[i]`."""
    more: bool
    """Whether anything follows the last item."""

    def cut(self, sizes: Sequence[int], budget: int) -> tuple[int, str]:
        """How many leading items fit in `budget` (at least one: a single item is always
        within the limits values are bounded by), and the token that continues after them."""
        total = 0
        for count, size in enumerate(sizes):
            total += size
            if total > budget and count > 0:
                return count, self.after[count - 1]
        kept = len(self.items)
        return kept, self.after[-1] if self.more and kept else ""
