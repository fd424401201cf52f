"""Binary-string concepts: BIG-bench simp_turing_concept's programs, and generated concepts.

simp_turing_concept writes each concept as a program in P3, a Turing-complete language of seven
one-character instructions (`+ - < > [ ] o`); each example's `comment` is `"['<program>', <length>,
<witness-set size>]"`, e.g. `"['+o', 2, 1]"`. **Program length** is the number of instructions, i.e.
the number of characters of the program (a loop's `[` and `]` count one each): "+o" has 2, "-[-o]" has 5.
BIG-bench's own second field agrees with this count on every concept of the full task.

Generated concepts are string transformations (flip, reverse, rotate, duplicate, delete a position, append
a constant, ...) rendered in simp_turing_concept's format: `Input: '<x>'\\nOutput: '<y>'` shots separated
by a blank line, then `Input: '<query>'\\nOutput:`; the target is the quoted output.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .bigbench import Subtask

P3_INSTRUCTIONS = frozenset("+-<>[]o")
MAX_BITS = 7


class ConceptError(ValueError):
    """A comment that does not name a P3 program."""


def parse_comment(comment: str) -> tuple[str, int | None]:
    """"['+o', 2, 1]" -> ("+o", 2): the program and BIG-bench's stated length (None if absent)."""
    try:
        value = ast.literal_eval(comment)
    except (ValueError, SyntaxError) as e:
        raise ConceptError(f"not a P3 program comment: {comment!r}") from e
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not isinstance(value[0], str):
        raise ConceptError(f"not a P3 program comment: {comment!r}")
    stated = value[1] if len(value) > 1 and isinstance(value[1], int) else None
    return value[0], stated


def program_length(program: str) -> int:
    """Number of P3 instructions in `program` (one per character)."""
    bad = set(program) - P3_INSTRUCTIONS
    if bad:
        raise ConceptError(f"program {program!r} has non-P3 characters {sorted(bad)}")
    return len(program)


def quote(bits: str) -> str:
    return f"'{bits}'"


def render_concept_prompt(shots: list[tuple[str, str]], query: str) -> str:
    """simp_turing_concept's prompt: quoted shots, then the query; the completion is " " + quote(output)."""
    parts = [f"Input: {quote(x)}\nOutput: {quote(y)}" for x, y in shots]
    parts.append(f"Input: {quote(query)}\nOutput:")
    return "\n\n".join(parts)


@dataclass(frozen=True)
class Concept:
    family: str
    category: str  # one of categories.CATEGORIES
    words: str
    fn: Callable[[str], str] = field(compare=False, repr=False)
    params: dict = field(default_factory=dict, compare=False)
    min_len: int = 0

    def __call__(self, s: str) -> str:
        return self.fn(s)


def _bits(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice("01") for _ in range(rng.randint(lo, hi)))


def _flip(rng):
    return Concept("flip", "modifying", "flip every bit", lambda s: s.translate(str.maketrans("01", "10")))


def _reverse(rng):
    return Concept("reverse", "reordering", "reverse the string", lambda s: s[::-1])


def _rotate(rng):
    k, left = rng.randint(1, 2), rng.random() < 0.5

    def fn(s):
        if not s:
            return s
        j = (k if left else -k) % len(s)
        return s[j:] + s[:j]

    return Concept("rotate", "reordering", f"rotate {'left' if left else 'right'} by {k}", fn, {"k": k, "left": left})


def _duplicate(rng):
    return Concept("duplicate", "modifying", "write the string twice", lambda s: s + s)


def _delete(rng):
    i = rng.randint(1, 3)
    return Concept("delete", "removing", f"delete bit {i}", lambda s: s[: i - 1] + s[i:], {"i": i}, min_len=i)


def _append(rng):
    c = _bits(rng, 1, 2)
    return Concept("append", "modifying", f"append {quote(c)}", lambda s: s + c, {"c": c})


def _prepend(rng):
    c = _bits(rng, 1, 2)
    return Concept("prepend", "modifying", f"prepend {quote(c)}", lambda s: c + s, {"c": c})


def _set_bit(rng):
    i, b = rng.randint(1, 3), rng.choice("01")
    return Concept("set_bit", "modifying", f"set bit {i} to {b}", lambda s: s[: i - 1] + b + s[i:], {"i": i, "b": b}, min_len=i)


def _take(rng):
    n = rng.randint(1, 3)
    return Concept("take", "removing", f"keep the first {n} bits", lambda s: s[:n], {"n": n})


def _delete_value(rng):
    b = rng.choice("01")
    return Concept("delete_value", "removing", f"delete every {b}", lambda s: s.replace(b, ""), {"b": b})


def _sort(rng):
    return Concept("sort", "reordering", "all 0s, then all 1s", lambda s: "".join(sorted(s)))


def _count_ones(rng):
    return Concept("count_ones", "counting", "one 1 for every 1 in the input", lambda s: "1" * s.count("1"))


def _constant(rng):
    c = _bits(rng, 1, 4)
    return Concept("constant", "constant", f"always {quote(c)}", lambda s: c, {"c": c})


CONCEPT_FAMILIES: dict[str, Callable[[random.Random], Concept]] = {
    f.__name__.lstrip("_"): f
    for f in (_flip, _reverse, _rotate, _duplicate, _delete, _append, _prepend, _set_bit, _take, _delete_value, _sort, _count_ones, _constant)
}


def sample_concept(family: str, rng: random.Random) -> Concept:
    if family not in CONCEPT_FAMILIES:
        raise KeyError(f"unknown concept family {family!r}; choose from {', '.join(CONCEPT_FAMILIES)}")
    return CONCEPT_FAMILIES[family](rng)


def generate_concept_task(family: str, seed: int, index: int, n_examples: int = 32, shots: int = 4) -> Subtask:
    """Generated concept number `index` of `family`: n_examples prompts in simp_turing_concept's format,
    each with `shots` exemplars whose inputs differ from one another and from the query's."""
    rng = random.Random(f"{seed}:gen_concept:{family}:{index}")
    concept = sample_concept(family, rng)
    lo = min(concept.min_len, MAX_BITS)
    examples = []
    for q in range(n_examples):
        r = random.Random(f"{seed}:gen_concept:{family}:{index}:{q}")
        inputs: list[str] = []
        for _ in range(200):
            if len(inputs) == shots + 1:
                break
            s = _bits(r, lo, MAX_BITS)
            if s not in inputs:
                inputs.append(s)
        *shot_inputs, query = inputs
        prompt = render_concept_prompt([(x, concept(x)) for x in shot_inputs], query)
        examples.append({"input": prompt, "target": quote(concept(query)), "query": query})
    return Subtask(
        "gen_concept",
        f"{family}-{index}",
        f'Generated binary-string concept. The target function is "{concept.words}".',
        examples,
        None,
        "generated",
        {"family": family, "category": concept.category, "params": concept.params, "rule": concept.words},
    )
