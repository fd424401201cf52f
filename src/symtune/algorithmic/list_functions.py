"""Generated list functions: composable rule families over lists of natural numbers.

Each family draws its parameters from a seeded `random.Random`, states its rule in words (like BIG-bench's
descriptions) and belongs to one category of `categories.CATEGORIES`. A generated task has 32
input/output pairs, like a BIG-bench list_functions subtask, and is evaluated the same way. Inputs are lists
of length 0-10 (at least what the rule needs) of numbers 0-99 (0-9 for families that need repeats).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .bigbench import Subtask

MAX_LEN = 10
MAX_VALUE = 99
LIST_TASK_PREFIX = (
    "Apply a function to the final input list to generate the output list. "
    "Use any preceding inputs and outputs as examples."
)


def show(xs: Sequence[int]) -> str:
    """BIG-bench's list notation: "[3, 4, 1]", "[]"."""
    return "[" + ", ".join(str(x) for x in xs) + "]"


@dataclass(frozen=True)
class ListRule:
    family: str
    category: str
    words: str  # the rule in words, e.g. "remove all but element 3"
    fn: Callable[[list[int]], list[int]] = field(compare=False, repr=False)
    params: dict = field(default_factory=dict, compare=False)
    min_len: int = 0
    max_value: int = MAX_VALUE  # inputs draw values 0..max_value

    def __call__(self, xs: Sequence[int]) -> list[int]:
        return self.fn(list(xs))

    def then(self, other: ListRule) -> ListRule:
        """This rule, then `other` on its output; the category is the first operation's (see categories)."""
        return ListRule(
            f"{self.family}+{other.family}",
            self.category,
            f"{self.words}, then {other.words}",
            lambda xs: other(self(xs)),
            {"first": self.params, "then": other.params},
            max(self.min_len, other.min_len),
            min(self.max_value, other.max_value),
        )


def _value(rng: random.Random) -> int:
    return rng.randint(0, MAX_VALUE)


def _take(rng):
    n = rng.randint(1, 5)
    return ListRule("take", "removing", f"the first {n} elements", lambda xs: xs[:n], {"n": n})


def _drop(rng):
    n = rng.randint(1, 4)
    return ListRule("drop", "removing", f"remove the first {n} elements", lambda xs: xs[n:], {"n": n})


def _drop_last(rng):
    n = rng.randint(1, 3)
    return ListRule("drop_last", "removing", f"remove the last {n} elements", lambda xs: xs[: max(len(xs) - n, 0)], {"n": n})


def _keep_element(rng):
    i = rng.randint(1, 5)
    return ListRule("keep_element", "removing", f"remove all but element {i}", lambda xs: xs[i - 1 : i], {"i": i}, min_len=i)


def _remove_element(rng):
    i = rng.randint(1, 5)
    return ListRule("remove_element", "removing", f"remove element {i}", lambda xs: xs[: i - 1] + xs[i:], {"i": i}, min_len=i)


def _filter_greater(rng):
    t = rng.randint(20, 80)
    return ListRule("filter_greater", "removing", f"keep only elements greater than {t}", lambda xs: [x for x in xs if x > t], {"t": t})


def _filter_parity(rng):
    r = rng.randint(0, 1)
    word = ("even", "odd")[r]
    return ListRule("filter_parity", "removing", f"keep only {word} elements", lambda xs: [x for x in xs if x % 2 == r], {"r": r})


def _unique(rng):
    def fn(xs):
        return list(dict.fromkeys(xs))

    return ListRule("unique", "removing", "unique elements in order of first appearance", fn, max_value=9)


def _replace(rng):
    i, v = rng.randint(1, 5), _value(rng)

    def fn(xs):
        return xs[: i - 1] + [v] + xs[i:]

    return ListRule("replace", "modifying", f"replace element {i} with {v}", fn, {"i": i, "v": v}, min_len=i)


def _insert(rng):
    i, v = rng.randint(1, 5), _value(rng)
    return ListRule("insert", "modifying", f"insert {v} as element {i}", lambda xs: xs[: i - 1] + [v] + xs[i - 1 :], {"i": i, "v": v}, min_len=i - 1)


def _append(rng):
    v = _value(rng)
    return ListRule("append", "modifying", f"append {v}", lambda xs: xs + [v], {"v": v})


def _prepend(rng):
    v = _value(rng)
    return ListRule("prepend", "modifying", f"prepend {v}", lambda xs: [v] + xs, {"v": v})


def _add(rng):
    c = rng.randint(1, 9)
    return ListRule("add", "modifying", f"add {c} to every element", lambda xs: [x + c for x in xs], {"c": c})


def _multiply(rng):
    c = rng.randint(2, 3)
    return ListRule("multiply", "modifying", f"multiply every element by {c}", lambda xs: [x * c for x in xs], {"c": c})


def _repeat_each(rng):
    n = rng.randint(2, 3)
    return ListRule("repeat_each", "modifying", f"repeat every element {n} times in order of appearance", lambda xs: [x for x in xs for _ in range(n)], {"n": n})


def _concat(rng):
    tail = [_value(rng) for _ in range(rng.randint(2, 4))]
    return ListRule("concat", "modifying", f"concatenate input and {show(tail)}", lambda xs: xs + tail, {"tail": tail})


def _reverse(rng):
    return ListRule("reverse", "reordering", "elements in reverse order", lambda xs: xs[::-1])


def _sort(rng):
    desc = rng.random() < 0.5
    word = "descending" if desc else "ascending"
    return ListRule("sort", "reordering", f"elements in {word} order", lambda xs: sorted(xs, reverse=desc), {"desc": desc})


def _rotate(rng):
    k, left = rng.randint(1, 3), rng.random() < 0.5

    def fn(xs):
        if not xs:
            return xs
        s = (k if left else -k) % len(xs)
        return xs[s:] + xs[:s]

    return ListRule("rotate", "reordering", f"{'left' if left else 'right'}-rotate by {k}", fn, {"k": k, "left": left})


def _swap(rng):
    i, j = sorted(rng.sample(range(1, 6), 2))

    def fn(xs):
        xs[i - 1], xs[j - 1] = xs[j - 1], xs[i - 1]
        return xs

    return ListRule("swap", "reordering", f"swap elements {i} and {j}", fn, {"i": i, "j": j}, min_len=j)


def _length(rng):
    return ListRule("length", "counting", "input length", lambda xs: [len(xs)])


def _sum(rng):
    return ListRule("sum", "counting", "sum of elements", lambda xs: [sum(xs)])


def _extreme(rng):
    big = rng.random() < 0.5
    word = "maximum" if big else "minimum"
    return ListRule("extreme", "counting", f"{word} element", lambda xs: [(max if big else min)(xs)], {"max": big}, min_len=1)


def _count_value(rng):
    v = rng.randint(0, 9)
    return ListRule("count_value", "counting", f"number of {v}s", lambda xs: [xs.count(v)], {"v": v}, max_value=9)


def _count_parity(rng):
    r = rng.randint(0, 1)
    word = ("even", "odd")[r]
    return ListRule("count_parity", "counting", f"number of {word} elements", lambda xs: [sum(x % 2 == r for x in xs)], {"r": r})


def _cumsum(rng):
    def fn(xs):
        out, s = [], 0
        for x in xs:
            s += x
            out.append(s)
        return out

    return ListRule("cumsum", "counting", "cumulative sum of elements", fn)


def _constant(rng):
    c = [_value(rng) for _ in range(rng.randint(1, 5))]
    return ListRule("constant", "constant", f"the list {show(c)}", lambda xs: list(c), {"c": c})


FAMILIES: dict[str, Callable[[random.Random], ListRule]] = {
    f.__name__.lstrip("_"): f
    for f in (
        _take, _drop, _drop_last, _keep_element, _remove_element, _filter_greater, _filter_parity, _unique,
        _replace, _insert, _append, _prepend, _add, _multiply, _repeat_each, _concat,
        _reverse, _sort, _rotate, _swap,
        _length, _sum, _extreme, _count_value, _count_parity, _cumsum,
        _constant,
    )
}  # fmt: skip


def family_category(family: str) -> str:
    return FAMILIES[family](random.Random(0)).category


def sample_rule(family: str, rng: random.Random, depth: int = 1) -> ListRule:
    """A rule of `family` with drawn parameters; depth 2+ follows it with rules of other random families."""
    if family not in FAMILIES:
        raise KeyError(f"unknown list-function family {family!r}; choose from {', '.join(FAMILIES)}")
    rule = FAMILIES[family](rng)
    names = sorted(FAMILIES)
    for _ in range(depth - 1):
        rule = rule.then(FAMILIES[names[rng.randrange(len(names))]](rng))
    return rule


def sample_input(rule: ListRule, rng: random.Random) -> list[int]:
    n = rng.randint(min(rule.min_len, MAX_LEN), MAX_LEN)
    return [rng.randint(0, rule.max_value) for _ in range(n)]


def generate_list_task(family: str, seed: int, index: int, n_examples: int = 32, depth: int = 1) -> Subtask:
    """Generated task number `index` of `family`: a rule and n_examples pairs with distinct inputs (where
    the input space allows), drawn from random.Random(f"{seed}:gen_list:{family}:{index}")."""
    rng = random.Random(f"{seed}:gen_list:{family}:{index}:d{depth}")
    rule = sample_rule(family, rng, depth)
    examples, seen = [], set()
    for _ in range(n_examples * 20):
        if len(examples) == n_examples:
            break
        xs = sample_input(rule, rng)
        if tuple(xs) in seen:
            continue
        seen.add(tuple(xs))
        try:
            target = rule(xs)
        except (IndexError, ValueError):  # a composed rule's first step left too little for the next (max of [])
            continue
        examples.append({"input": show(xs), "target": show(target)})
    name = f"{family}-{index}" if depth == 1 else f"{family}-d{depth}-{index}"
    return Subtask(
        "gen_list",
        name,
        f'Generated list function. The target function is "{rule.words}".',
        examples,
        LIST_TASK_PREFIX,
        "generated",
        {"family": rule.family, "category": rule.category, "params": rule.params, "rule": rule.words},
    )
