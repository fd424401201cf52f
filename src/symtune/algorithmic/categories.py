"""Rule-family categories of list functions, assigned from the rule's words.

A list_functions description states its rule ("remove all but element 3"); the category follows the
**first operation the rule states**, by the ordered keyword rules below (first match wins; matching is
on the lower-cased rule text). Generated tasks carry their family's category directly. Mixed rules
("reverse the input and keep only even elements") go by their first operation, so the table is
predictable rather than a judgement per subtask.
"""

from __future__ import annotations

import re

CATEGORIES = ("removing", "modifying", "reordering", "counting", "constant")
CATEGORY_TITLES = {
    "removing": "removing elements (selection, filtering, slicing, deduplication)",
    "modifying": "modifying or inserting elements (replace, insert, append, map, repeat, concatenate)",
    "reordering": "reordering (reverse, sort, rotate, swap, interleave; the identity)",
    "counting": "counting and aggregating (length, sum, max, counts, counting sequences)",
    "constant": "input-independent outputs (a fixed list)",
}

# (category, pattern) in order; the first pattern that matches the rule text decides.
CATEGORY_RULES: tuple[tuple[str, str], ...] = (
    ("constant", r"^the list \["),
    # counting/aggregating: the output is a statistic of the input or a sequence built from statistics
    (
        "counting",
        r"^(input length|maximum element|minimum element|second largest element|sum of|product of|mean value|number of"
        r"|the number of|count |cumulative|the maximum, |each unique element followed by its number"
        r"|element n counts|replace each element with the number of occurrences|absolute difference of each"
        r"|sums of each|the indices of|list the index|the first m positive multiples)",
    ),
    ("reordering", r"^(the input$|swap elements|swap the first and last|elements in (reverse|ascending|descending) order|reversed? |"
     r"reverse the|input in ascending order|left-rotate|right-rotate|sort|unique elements in (ascending|descending)"
     r"|three (largest|smallest) elements in ascending|interleave|the last element, followed by element 1"
     r"|take the (largest|smallest)|elements [<>] element 1, followed|elements 3, 2, 1"
     r"|use 0s to delimit sublists; concatenate reverse)"),
    ("removing", r"^(remove|keep|drop|the first \d+ elements|elements [\dm]+( \+ \d+)? through|elements (before|after)"
     r"|unique elements( in order of first appearance)?$|repetitions in order|element m, m = element|use 0s to delimit sublists; give element)"),
)
DEFAULT_CATEGORY = "modifying"  # replace, insert, append/prepend, concatenate, repeat, element-wise maps
_COMPILED = tuple((cat, re.compile(p)) for cat, p in CATEGORY_RULES)


class CategoryError(ValueError):
    """An unknown category name."""


def categorize(rule: str) -> str:
    """The category of a list-function rule stated in words ("remove all but element 3" -> "removing")."""
    text = " ".join(rule.lower().split())
    for cat, pattern in _COMPILED:
        if pattern.search(text):
            return cat
    return DEFAULT_CATEGORY


def check_categories(names) -> tuple[str, ...]:
    names = tuple(names)
    bad = [n for n in names if n not in CATEGORIES]
    if bad:
        raise CategoryError(f"unknown categor{'y' if len(bad) == 1 else 'ies'} {bad}; choose from {', '.join(CATEGORIES)}")
    return names
