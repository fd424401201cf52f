"""Packed scoring plans: no padding, each shared prefix forwarded once.

A *tree* is one context (a prompt's tokens) with branches after it (a candidate's tokens each): every
branch attends to the whole context and to its own earlier tokens, never to a sibling, so one forward
scores every candidate of a prompt. Trees are laid side by side in *rows* of up to `row_tokens` tokens,
each tree attending only to itself (a block-diagonal, tree-shaped mask; positions restart per tree).
Trees whose contexts begin with the same tokens (one exemplar set shared by many queries, a common
instruction) form a *group*: the common prefix is forwarded once and every row of the group attends to
its key/value cache. Groups are taken in *waves* of at most a given number of prefix tokens: a wave's
prefixes are forwarded together, then its rows, whichever group they belong to, so that many small groups cost
a few forwards, not two each (a forward has a fixed cost: 15-25 ms of Python and dispatch for a 30-layer model,
measured on a CPU by bench/scoring_modes.py; by FLOPs, a GPU's time for thousands of tokens of a 135M model).

This is planning only (lists of ints); `hf.py` turns a plan into forwards. Written here rather than taken
from a library: the libraries that pack sequences (TRL, flash-attention varlen) pack independent
documents for training; none packs a shared context with sibling continuations for scoring.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Tree:
    context: list[int]
    branches: list[list[int]]  # token ids fed after the context, each attending to the context and itself

    @property
    def size(self) -> int:
        return len(self.context) + sum(len(b) for b in self.branches)


@dataclass
class Placed:
    """Where one tree sits in its row (offsets into the row; the context after the group prefix first)."""

    tree: int
    start: int
    suffix: int  # context tokens after the group's prefix (at least 1: the last one predicts every branch)
    branch_starts: list[int]


@dataclass
class Row:
    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # within the tree, counted after the group's prefix
    owner: list[int] = field(default_factory=list)  # per token: which placed tree
    branch: list[int] = field(default_factory=list)  # per token: -1 in the context, else the branch index
    placed: list[Placed] = field(default_factory=list)

    def add(self, tree_index: int, tree: Tree, prefix_len: int) -> None:
        suffix = tree.context[prefix_len:]
        p = Placed(tree_index, len(self.ids), len(suffix), [])
        owner = len(self.placed)
        self.ids += suffix
        self.positions += range(len(suffix))
        self.owner += [owner] * len(suffix)
        self.branch += [-1] * len(suffix)
        for k, b in enumerate(tree.branches):
            p.branch_starts.append(len(self.ids))
            self.ids += b
            self.positions += range(len(suffix), len(suffix) + len(b))
            self.owner += [owner] * len(b)
            self.branch += [k] * len(b)
        self.placed.append(p)


@dataclass
class Group:
    prefix: list[int]  # forwarded once; empty for trees that share nothing worth a separate forward
    rows: list[Row]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _partition(order: list[int], trees: list[Tree], min_prefix: int) -> list[tuple[list[int], int]]:
    """Split trees sorted by context into runs that share a prefix of at least `min_prefix` tokens, choosing
    the runs (by dynamic programming) that save the most forwarded tokens: (n - 1) x shared length each.
    Returns (members, shared length); a singleton run shares nothing (length 0)."""
    n = len(order)
    # the shared length is capped so that every member keeps at least one context token of its own
    adj = [common_prefix(trees[order[i]].context, trees[order[i + 1]].context) for i in range(n - 1)]
    best = [0] * (n + 1)  # best[i]: saving over order[:i]
    choice = [(i - 1, 0) for i in range(n + 1)]
    for end in range(1, n + 1):
        best[end], choice[end] = best[end - 1], (end - 1, 0)
        shared = len(trees[order[end - 1]].context) - 1
        for start in range(end - 2, -1, -1):  # run order[start:end], at least two trees
            shared = min(shared, adj[start], len(trees[order[start]].context) - 1)
            if shared < min_prefix:
                break
            gain = best[start] + (end - start - 1) * shared
            if gain > best[end]:
                best[end], choice[end] = gain, (start, shared)
    runs, end = [], n
    while end > 0:
        start, shared = choice[end]
        runs.append((order[start:end], shared))
        end = start
    return runs[::-1]


def plan(trees: list[Tree], row_tokens: int = 2048, min_prefix: int = 32) -> list[Group]:
    """Groups of rows that hold every tree once. Deterministic: depends on the trees alone, in any order."""
    order = sorted(range(len(trees)), key=lambda i: (trees[i].context, i))
    loose, groups = [], []
    for members, shared in _partition(order, trees, min_prefix):
        if shared:
            groups.append(Group(trees[members[0]].context[:shared], _pack(members, trees, shared, row_tokens)))
        else:
            loose += members
    if loose:
        groups.insert(0, Group([], _pack(loose, trees, 0, row_tokens)))
    return groups


def waves(groups: list[Group], budget: int) -> list[list[Group]]:
    """Consecutive groups whose prefixes hold at most `budget` tokens together (a group alone may hold more)."""
    out: list[list[Group]] = []
    total = budget + 1
    for g in groups:
        if total + len(g.prefix) > budget:
            out.append([])
            total = 0
        out[-1].append(g)
        total += len(g.prefix)
    return out


def rows_of(contexts: list[list[int]], row_tokens: int) -> list[Row]:
    """The contexts alone (no branches) packed into rows, as `plan` packs trees."""
    trees = [Tree(c, []) for c in contexts]
    return _pack(list(range(len(trees))), trees, 0, row_tokens)


def _pack(members: list[int], trees: list[Tree], prefix_len: int, row_tokens: int) -> list[Row]:
    """First-fit decreasing: the largest tree first, each into the first row with room."""
    size = {i: trees[i].size - prefix_len for i in members}
    rows: list[Row] = []
    for i in sorted(members, key=lambda i: (-size[i], i)):
        for row in rows:
            if len(row.ids) + size[i] <= row_tokens:
                break
        else:
            row = Row()
            rows.append(row)
        row.add(i, trees[i], prefix_len)
    return rows


def trie_tokens(sequences: list[list[int]]) -> int:
    """Distinct token prefixes among the sequences (nodes of their trie): the fewest positions any exact
    causal-LM scorer must forward to see every sequence."""
    total, prev = 0, []
    for s in sorted(sequences):  # in sorted order a sequence shares the most with the one before it
        total += len(s) - common_prefix(prev, s)
        prev = s
    return total
