import random

import pytest

from symtune.symbols import CATEGORIES, SymbolError, SymbolPool, category_pool, letters


def test_letters_are_bijective_base26():
    assert [letters(i) for i in (1, 26, 27, 52, 702, 703)] == ["A", "Z", "AA", "AZ", "ZZ", "AAA"]
    assert letters(10000) == "NTP" and letters(10001) == "NTQ" and letters(100000) == "EQXD"


@pytest.mark.parametrize("category", CATEGORIES)
def test_pool_sizes_and_disjointness(category):
    tune, held = category_pool(category, "tune"), category_pool(category, "heldout")
    assert len(tune) == len(set(tune)) == 10_000
    assert len(held) == len(set(held)) == 90_000
    assert not set(tune) & set(held)


def test_pool_ranges_and_shapes():
    assert category_pool("integers", "tune")[0] == "0" and category_pool("integers", "tune")[-1] == "9999"
    assert category_pool("integers", "heldout")[0] == "10000" and category_pool("integers", "heldout")[-1] == "99999"
    assert category_pool("letters", "tune")[-1] == "NTP" and category_pool("letters", "heldout")[0] == "NTQ"
    words = category_pool("words", "tune") + category_pool("words", "heldout")
    assert all(w.isascii() and w.isalpha() and w.islower() for w in words)
    assert category_pool("words", "tune")[:3] == ("the", "to", "and")  # frequency-ranked


def test_whole_pools_disjoint_across_splits_and_categories():
    tune, held = SymbolPool("tune").all(), SymbolPool("heldout").all()
    assert len(tune) == 30_000 and len(held) == 270_000
    assert not tune & held


def test_sampling_distinct_seeded_and_mixed_categories():
    pool = SymbolPool("tune")
    a = pool.sample(6, random.Random("x"))
    assert a == pool.sample(6, random.Random("x")) and len(set(a)) == 6
    seen = set()
    for i in range(200):
        for s in pool.sample(3, random.Random(i)):
            seen.add("integers" if s.isdigit() else "letters" if s.isupper() else "words")
    assert seen == set(CATEGORIES)
    assert not set(pool.sample(5, random.Random(0), avoid=["the"])) & {"the"}


@pytest.mark.parametrize("size", [30, 300, 3000, 30000])
def test_ablation_sizes(size):
    pool = SymbolPool("tune", size=size)
    assert len(pool.all()) == size
    assert pool.all() <= SymbolPool("tune").all()
    assert pool.by_category() == SymbolPool("tune", size=size).by_category()  # the same subset every time


def test_category_ablation_and_errors():
    only_words = SymbolPool("tune", categories=("words",))
    assert all(s.isalpha() and s.islower() for s in only_words.sample(20, random.Random(1)))
    with pytest.raises(SymbolError, match="unknown symbol category 'emoji'"):
        SymbolPool("tune", categories=("emoji",))
    with pytest.raises(SymbolError, match="unknown symbol split"):
        SymbolPool("test")
    with pytest.raises(SymbolError, match="exceeds"):
        SymbolPool("tune", categories=("integers",), size=20_000)
