"""Symbol pools for labels: integers, bijective base-26 letter strings and frequent English words.

Each category has a tuning pool (used to build the symbol-tuning mixture) and a disjoint held-out pool
(used by evaluation without relevant labels), as in Wei et al. (2023):

    integers  tuning 0..9999                   held-out 10000..99999
    letters   tuning A..NTP (indexes 1..10000)  held-out NTQ..EQXD (10001..100000)
    words     tuning 10K most frequent words    held-out the next 90K
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

CATEGORIES = ("integers", "letters", "words")
SPLITS = ("tune", "heldout")
TUNE_SIZE = 10_000
HELDOUT_SIZE = 90_000


class SymbolError(ValueError):
    """Bad symbol-pool configuration."""


def letters(index: int) -> str:
    """Bijective base-26 numeral: 1 -> A, 26 -> Z, 27 -> AA, 10000 -> NTP."""
    if index < 1:
        raise SymbolError(f"letter-string index must be >= 1, got {index}")
    out = []
    while index:
        index, rem = divmod(index - 1, 26)
        out.append(chr(ord("A") + rem))
    return "".join(reversed(out))


@cache
def _word_list() -> tuple[str, ...]:
    """The 100K most frequent English words from `wordfreq`: alphabetic, lower-case, deduplicated."""
    import wordfreq

    seen, words = set(), []
    for w in wordfreq.top_n_list("en", 300_000, wordlist="large"):
        if w.isascii() and w.isalpha() and w.islower() and w not in seen:
            seen.add(w)
            words.append(w)
            if len(words) == TUNE_SIZE + HELDOUT_SIZE:
                return tuple(words)
    raise SymbolError(f"wordfreq yielded only {len(words)} usable words; need {TUNE_SIZE + HELDOUT_SIZE}")


@cache
def category_pool(category: str, split: str) -> tuple[str, ...]:
    """All symbols of one category in one split, in canonical order."""
    if split not in SPLITS:
        raise SymbolError(f"unknown symbol split {split!r}; choose one of {SPLITS}")
    lo, hi = (0, TUNE_SIZE) if split == "tune" else (TUNE_SIZE, TUNE_SIZE + HELDOUT_SIZE)
    if category == "integers":
        return tuple(str(i) for i in range(lo, hi))
    if category == "letters":
        return tuple(letters(i + 1) for i in range(lo, hi))
    if category == "words":
        return _word_list()[lo:hi]
    raise SymbolError(f"unknown symbol category {category!r}; choose from {', '.join(CATEGORIES)}")


@dataclass(frozen=True)
class SymbolPool:
    """The symbols one run draws labels from.

    split: "tune" for the mixture, "heldout" for evaluation.
    categories: which categories to draw from (ablation: e.g. only "words").
    size: number of distinct symbols in all (ablation: 30, 300, 3000, 30000); None keeps the whole pool.
        The subset is spread evenly over the categories and chosen by a fixed seed, so it is the same
        in every run.
    """

    split: str = "tune"
    categories: tuple[str, ...] = CATEGORIES
    size: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "categories", tuple(self.categories))
        if not self.categories:
            raise SymbolError("at least one symbol category is needed")
        for c in self.categories:
            if c not in CATEGORIES:
                raise SymbolError(f"unknown symbol category {c!r}; choose from {', '.join(CATEGORIES)}")
        if len(set(self.categories)) != len(self.categories):
            raise SymbolError(f"symbol categories repeat: {self.categories}")
        if self.size is not None and self.size < len(self.categories):
            raise SymbolError(f"symbol pool size {self.size} is smaller than the number of categories")
        if self.size is not None:
            self.by_category()  # validates the subset early
        category_pool(self.categories[0], self.split)  # validates the split early

    def by_category(self) -> dict[str, tuple[str, ...]]:
        return _subset(self.split, self.categories, self.size)

    def all(self) -> frozenset[str]:
        return frozenset(s for pool in self.by_category().values() for s in pool)

    def sample(self, n: int, rng: random.Random, avoid: Sequence[str] = ()) -> list[str]:
        """n distinct symbols: for each, a category drawn uniformly, then a symbol from it."""
        pools = self.by_category()
        names = self.categories
        taken = set(avoid)
        total = sum(len(p) for p in pools.values())
        if n > total - len(taken):
            raise SymbolError(f"cannot draw {n} distinct symbols from a pool of {total}")
        out = []
        while len(out) < n:
            pool = pools[names[int(rng.random() * len(names))]]
            s = pool[int(rng.random() * len(pool))]
            if s not in taken:
                taken.add(s)
                out.append(s)
        return out


@cache
def _subset(split: str, categories: tuple[str, ...], size: int | None) -> dict[str, tuple[str, ...]]:
    pools = {c: category_pool(c, split) for c in categories}
    if size is None:
        return pools
    rng = random.Random(f"symtune-symbol-subset:{split}:{size}")
    out = {}
    for i, c in enumerate(categories):
        k = size // len(categories) + (1 if i < size % len(categories) else 0)
        pool = pools[c]
        if k > len(pool):
            raise SymbolError(f"symbol pool size {size} exceeds the {c} pool ({len(pool)} symbols)")
        out[c] = tuple(pool[j] for j in sorted(rng.sample(range(len(pool)), k)))
    return out
