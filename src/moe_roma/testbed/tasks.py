"""The testbed's multiple-choice task suite: 16 families of short English questions.

Every item is drawn from a family's *content* (the numbers, words or facts it asks about,
its ``key``) and rendered through one of the family's paraphrase templates. Splits:

``pretrain``       the corpus the tiny model is pre-trained on (all 16 families, seen templates)
``train``          the RoMA training set (the 12 non-held-out families, seen templates)
``in_dist``        evaluation: new items, templates seen in ``train``
``shifted``        evaluation: new items of the training families, worded with paraphrase
                   templates that appear in no other split (nor in the pre-training corpus)
``heldout_tasks``  evaluation: new items of the 4 families absent from ``train``

No content key occurs in two splits, so no evaluation question (in any wording) was seen
in pre-training or in RoMA training. The pre-training corpus also holds plain statements
of the bundled facts (``knowledge_sentences``): the knowledge, never the questions.

Everything is deterministic in ``seed``: each split draws from its own ``random.Random``
seeded by the seed and the split's name, evaluation splits first, so the evaluation sets do
not change when the pre-training corpus is made larger or smaller.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_roma.data.example import MCExample
from moe_roma.io.atomic import atomic_path
from moe_roma.testbed import lexicon as lx

SPLITS: tuple[str, ...] = ("pretrain", "train", "in_dist", "shifted", "heldout_tasks")
EVAL_SPLITS: tuple[str, ...] = ("in_dist", "shifted", "heldout_tasks")
# Generation order: evaluation splits claim their content keys first.
_GEN_ORDER: tuple[str, ...] = ("heldout_tasks", "shifted", "in_dist", "train", "pretrain")

DEFAULT_SIZES: dict[str, int] = {
    "pretrain": 48000,  # an upper bound: small families run out of fresh content first
    "train": 960,
    "in_dist": 360,
    "shifted": 360,
    "heldout_tasks": 320,
}


@dataclass(frozen=True)
class Draft:
    """One sampled piece of content, before a template and a choice order are applied."""

    key: tuple  # the content identity: two drafts with equal keys are the same item
    variant: str  # selects the template group (e.g. "largest" / "smallest")
    fields: dict[str, Any]
    answer: str
    distractors: tuple[str, str, str]


@dataclass(frozen=True)
class Family:
    """A task family: a content sampler plus seen and shifted templates per variant."""

    name: str
    sample: Callable[[random.Random], Draft]
    templates: dict[str, tuple[str, ...]]
    shifted_templates: dict[str, tuple[str, ...]]
    # When set, the question lists the choices (in choice order) through "{list}".
    lists_choices: bool = False
    heldout: bool = False
    # How many distinct keys the family can produce (for sizing; an upper bound is fine).
    space: int = 10**9


# --------------------------------------------------------------------------- helpers


def _or_list(items: Sequence[str]) -> str:
    """'a, b, c or d' - the way a question lists its options."""
    return ", ".join(items[:-1]) + " or " + items[-1]


def _pick_distractors(rng: random.Random, answer: str, pool: Iterable[str], k: int = 3) -> tuple[str, ...]:
    cands = sorted({p for p in pool if p != answer})
    return tuple(rng.sample(cands, k))


def _num_distractors(rng: random.Random, answer: int, offsets: Sequence[int], lo: int = 0) -> tuple[str, ...]:
    """Three plausible wrong numbers: the answer moved by near offsets (never below ``lo``)."""
    cands = sorted({answer + o for o in offsets if answer + o >= lo and o != 0})
    return tuple(str(c) for c in rng.sample(cands, 3))


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


# --------------------------------------------------------------------------- families


def _addition(rng: random.Random) -> Draft:
    a, b = rng.randint(2, 49), rng.randint(2, 49)
    s = a + b
    return Draft(
        ("addition", a, b),
        "plus",
        {"a": a, "b": b},
        str(s),
        _num_distractors(rng, s, (-10, -2, -1, 1, 2, 10)),
    )


def _subtraction(rng: random.Random) -> Draft:
    a = rng.randint(10, 60)
    b = rng.randint(2, a - 2)
    d = a - b
    return Draft(
        ("subtraction", a, b),
        "minus",
        {"a": a, "b": b},
        str(d),
        _num_distractors(rng, d, (-10, -2, -1, 1, 2, 10)),
    )


def _multiplication(rng: random.Random) -> Draft:
    a, b = rng.randint(2, 15), rng.randint(2, 15)
    p = a * b
    return Draft(
        ("multiplication", a, b),
        "times",
        {"a": a, "b": b},
        str(p),
        _num_distractors(rng, p, (-a, a, -b, b, -1, 1, 2), lo=1),
    )


def _comparison(rng: random.Random) -> Draft:
    nums = rng.sample(range(1, 100), 4)
    variant = rng.choice(("largest", "smallest"))
    ans = max(nums) if variant == "largest" else min(nums)
    rest = tuple(str(n) for n in nums if n != ans)
    return Draft(("comparison", variant, tuple(sorted(nums))), variant, {}, str(ans), rest)


def _parity(rng: random.Random) -> Draft:
    variant = rng.choice(("even", "odd"))
    want = 0 if variant == "even" else 1
    right = rng.choice([n for n in range(1, 100) if n % 2 == want])
    wrong = rng.sample([n for n in range(1, 100) if n % 2 != want], 3)
    return Draft(
        ("parity", variant, right, tuple(sorted(wrong))),
        variant,
        {},
        str(right),
        tuple(str(n) for n in wrong),
    )


def _sequence(rng: random.Random) -> Draft:
    step = rng.randint(2, 9)
    variant = rng.choice(("up", "down"))
    if variant == "up":
        start = rng.randint(0, 40)
        seq = [start + i * step for i in range(5)]
    else:
        start = rng.randint(4 * step + 2, 4 * step + 45)
        seq = [start - i * step for i in range(5)]
    shown, nxt = seq[:4], seq[4]
    sign = 1 if variant == "up" else -1
    # Wrong continuations a careless reader makes: off by one, a step too far, no step.
    offs = (sign * step, -sign * step, 1, -1, 2, -2, sign * (step + 1))
    wrong = sorted({nxt + o for o in offs if nxt + o >= 0 and o != 0} - {nxt})
    return Draft(
        ("sequence", variant, start, step),
        variant,
        {"seq": ", ".join(map(str, shown))},
        str(nxt),
        tuple(str(w) for w in rng.sample(wrong, 3)),
    )


def _counting(rng: random.Random) -> Draft:
    variant = rng.choice(("length", "occurrence"))
    if variant == "length":
        n = rng.randint(3, 8)
        words = rng.sample(lx.ALL_WORDS, n)
        ans, fields = n, {"items": ", ".join(words)}
        key = ("counting", variant, tuple(words))
    else:
        target = rng.choice(lx.ALL_WORDS)
        n_target = rng.randint(1, 4)
        others = rng.sample([w for w in lx.ALL_WORDS if w != target], rng.randint(2, 5))
        words = [target] * n_target + list(others)
        rng.shuffle(words)
        ans, fields = n_target, {"items": ", ".join(words), "word": target}
        key = ("counting", variant, tuple(words), target)
    return Draft(key, variant, fields, str(ans), _num_distractors(rng, ans, (-2, -1, 1, 2, 3), lo=1))


_LETTER_RELS = {
    (1, 1): "right after",
    (1, 2): "two letters after",
    (-1, 1): "right before",
    (-1, 2): "two letters before",
}


def _letter_order(rng: random.Random) -> Draft:
    (sign, off), rel = rng.choice(sorted(_LETTER_RELS.items()))
    i = rng.randint(0, 25)
    j = i + sign * off
    if not 0 <= j <= 25:
        j = i - sign * off  # flip direction rather than reject, to keep sampling cheap
        sign = -sign
        rel = _LETTER_RELS[(sign, off)]
    ans = lx.LETTERS[j]
    # Neighbours of the right letter and the letter asked about are the tempting mistakes.
    near = {lx.LETTERS[k] for k in (j - 1, j + 1, i, j - 2, j + 2, j + 3, j - 3) if 0 <= k <= 25}
    near.discard(ans)
    return Draft(
        ("letter_order", i, sign, off),
        "rel",
        {"letter": lx.LETTERS[i], "rel": rel},
        ans,
        tuple(rng.sample(sorted(near), 3)),
    )


def _calendar(rng: random.Random) -> Draft:
    kind = rng.choice(("day", "month"))
    seq = lx.DAYS if kind == "day" else lx.MONTHS
    i = rng.randrange(len(seq))
    sign = rng.choice((1, -1))
    off = rng.randint(1, 3)
    word = {1: "right", 2: "two", 3: "three"}[off]
    side = "after" if sign > 0 else "before"
    rel = f"right {side}" if off == 1 else f"{word} {kind}s {side}"
    ans = seq[(i + sign * off) % len(seq)]
    near = {seq[(i + sign * off + d) % len(seq)] for d in (-1, 1, -2, 2)} | {seq[(i - sign * off) % len(seq)]}
    near.discard(ans)
    return Draft(
        ("calendar", kind, i, sign, off),
        kind,
        {"x": seq[i], "rel": rel},
        ans,
        tuple(rng.sample(sorted(near), 3)),
    )


def _alphabetical(rng: random.Random) -> Draft:
    words = rng.sample(lx.ALL_WORDS, 4)
    variant = rng.choice(("first", "last"))
    ans = min(words) if variant == "first" else max(words)
    return Draft(
        ("alphabetical", variant, tuple(sorted(words))), variant, {}, ans, tuple(w for w in words if w != ans)
    )


def _category(rng: random.Random) -> Draft:
    cats = rng.sample(sorted(lx.CATEGORIES), 4)
    target_cat = cats[0]
    ans = rng.choice(lx.CATEGORIES[target_cat][2])
    wrong = tuple(rng.choice(lx.CATEGORIES[c][2]) for c in cats[1:])
    phrase = lx.CATEGORIES[target_cat][0]
    return Draft(("category", target_cat, ans, tuple(sorted(wrong))), "which", {"cat": phrase}, ans, wrong)


def _odd_one_out(rng: random.Random) -> Draft:
    cat, other = rng.sample(sorted(lx.CATEGORIES), 2)
    same = rng.sample(lx.CATEGORIES[cat][2], 3)
    odd = rng.choice(lx.CATEGORIES[other][2])
    return Draft(("odd_one_out", tuple(sorted(same)), odd), "odd", {}, odd, tuple(same))


def _geography(rng: random.Random) -> Draft:
    country = rng.choice(sorted(lx.COUNTRIES))
    capital, continent, language = lx.COUNTRIES[country]
    rel = rng.choice(("capital", "country", "continent", "language"))
    if rel == "capital":
        # Capitals of the same continent are the plausible mistakes.
        pool = [c for k, (c, ct, _) in lx.COUNTRIES.items() if ct == continent and k != country]
        if len(pool) < 3:
            pool = [c for c, _, _ in lx.COUNTRIES.values()]
        return Draft(
            ("geography", rel, country),
            rel,
            {"country": country},
            capital,
            _pick_distractors(rng, capital, pool),
        )
    if rel == "country":
        pool = [k for k, (_, ct, _) in lx.COUNTRIES.items() if ct == continent]
        if len(pool) < 4:
            pool = list(lx.COUNTRIES)
        return Draft(
            ("geography", rel, country),
            rel,
            {"capital": capital},
            country,
            _pick_distractors(rng, country, pool),
        )
    if rel == "continent":
        return Draft(
            ("geography", rel, country),
            rel,
            {"country": country},
            continent,
            _pick_distractors(rng, continent, lx.CONTINENTS),
        )
    return Draft(
        ("geography", rel, country),
        rel,
        {"country": country},
        language,
        _pick_distractors(rng, language, lx.LANGUAGES),
    )


def _antonyms(rng: random.Random) -> Draft:
    word = rng.choice(sorted(lx.OPPOSITE))
    ans = lx.OPPOSITE[word]
    pool = [w for w in lx.OPPOSITE if w not in (word, ans)]
    return Draft(("antonyms", word), "opp", {"word": word}, ans, _pick_distractors(rng, ans, pool))


def _unit_conversion(rng: random.Random) -> Draft:
    small, _big, bigs, factor = rng.choice(lx.UNITS)
    n = rng.randint(2, 15)
    variant = rng.choice(("to_small", "to_big"))
    if variant == "to_small":
        ans = n * factor
        fields = {"n": n, "small": small, "big": bigs}
        # One unit too many or too few, a slip of ten, or the number itself.
        wrong = sorted({ans - factor, ans + factor, ans - 10, ans + 10, n, n + factor} - {ans, 0})
    else:
        ans = n
        fields = {"m": n * factor, "small": small, "big": bigs}
        wrong = sorted({n - 1, n + 1, n + 2, n * 2, max(1, n - 2)} - {n})
    return Draft(
        ("unit_conversion", variant, small, n),
        variant,
        fields,
        str(ans),
        tuple(str(w) for w in rng.sample(wrong, 3)),
    )


def _word_problems(rng: random.Random) -> Draft:
    variant = rng.choice(("gain", "loss"))
    name = rng.choice(lx.NAMES)
    obj = rng.choice(lx.OBJECTS)
    if variant == "gain":
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        ans = a + b
    else:
        a = rng.randint(6, 40)
        b = rng.randint(2, a - 2)
        ans = a - b
    return Draft(
        ("word_problems", variant, a, b),
        variant,
        {"name": name, "obj": obj, "a": a, "b": b},
        str(ans),
        _num_distractors(rng, ans, (-10, -2, -1, 1, 2, 10, b if variant == "loss" else -b)),
    )


# --------------------------------------------------------------------------- templates
# The first group of each family is the seen templates; "shifted" templates paraphrase the
# same question with wording used nowhere else, for the template-shift evaluation.

FAMILIES: tuple[Family, ...] = (
    Family(
        "addition",
        _addition,
        {
            "plus": (
                "What is {a} plus {b}?",
                "What is the sum of {a} and {b}?",
                "If you add {a} and {b}, what number do you get?",
                "How much is {a} and {b} added together?",
                "Add {a} to {b}. What is the total?",
            )
        },
        {
            "plus": (
                "Here is a sum: {a} plus {b}. Which number is it?",
                "Look at {a} and {b}. Added together, they make which number?",
            )
        },
    ),
    Family(
        "subtraction",
        _subtraction,
        {
            "minus": (
                "What is {a} minus {b}?",
                "What do you get if you take {b} away from {a}?",
                "Subtract {b} from {a}. What is the result?",
                "How much is {a} take away {b}?",
                "If you subtract {b} from {a}, what number is left?",
            )
        },
        {
            "minus": (
                "Here is a question: {a} minus {b}. Which number is it?",
                "Look at {a}. Take away {b}. How much is left?",
            )
        },
    ),
    Family(
        "multiplication",
        _multiplication,
        {
            "times": (
                "What is {a} times {b}?",
                "What is {a} multiplied by {b}?",
                "What is the product of {a} and {b}?",
                "How much is {a} groups of {b}?",
                "Multiply {a} by {b}. What is the result?",
            )
        },
        {
            "times": (
                "Here is a product: {a} times {b}. Which number is it?",
                "Look at {a} groups of {b}. How many is that in total?",
            )
        },
        heldout=True,
        space=14 * 14,
    ),
    Family(
        "comparison",
        _comparison,
        {
            "largest": (
                "Which number is the largest: {list}?",
                "Which of {list} is the biggest number?",
                "Of the numbers {list}, which is the greatest?",
                "What is the largest number in the list {list_and}?",
                "Find the biggest of these numbers: {list}.",
            ),
            "smallest": (
                "Which number is the smallest: {list}?",
                "Which of {list} is the lowest number?",
                "Of the numbers {list}, which is the least?",
                "What is the smallest number in the list {list_and}?",
                "Find the lowest of these numbers: {list}.",
            ),
        },
        {
            "largest": (
                "Here are some numbers: {list_and}. Which one is the greatest?",
                "Look at {list_and}. Of these, the biggest is which?",
            ),
            "smallest": (
                "Here are some numbers: {list_and}. Which one is the least?",
                "Look at {list_and}. Of these, the smallest is which?",
            ),
        },
        lists_choices=True,
    ),
    Family(
        "parity",
        _parity,
        {
            "even": (
                "Which of these numbers is even: {list}?",
                "Which number is even: {list}?",
                "One of {list} is an even number. Which one?",
                "Find the even number: {list}.",
                "Of {list}, which number is even?",
            ),
            "odd": (
                "Which of these numbers is odd: {list}?",
                "Which number is odd: {list}?",
                "One of {list} is an odd number. Which one?",
                "Find the odd number: {list}.",
                "Of {list}, which number is odd?",
            ),
        },
        {
            "even": (
                "Here are some numbers: {list_and}. Only one of them is even. Which?",
                "Look at {list_and}. The even one is which?",
            ),
            "odd": (
                "Here are some numbers: {list_and}. Only one of them is odd. Which?",
                "Look at {list_and}. The odd one is which?",
            ),
        },
        lists_choices=True,
    ),
    Family(
        "sequence",
        _sequence,
        {
            v: (
                "What number comes next: {seq}?",
                "What is the next number in the sequence {seq}?",
                "Continue the pattern {seq}. What comes next?",
                "Which number follows {seq}?",
                "Find the next number in the pattern {seq}.",
            )
            for v in ("up", "down")
        },
        {
            v: (
                "Here is a sequence: {seq}. Which number should come after it?",
                "Look at the pattern {seq}. The next one is which number?",
            )
            for v in ("up", "down")
        },
        space=2 * 8 * 41,
    ),
    Family(
        "counting",
        _counting,
        {
            "length": (
                "How many words are in this list: {items}?",
                "Count the words in the list {items}. How many are there?",
                "How many things are named here: {items}?",
                "What is the number of words in the list {items}?",
                "Count the items: {items}. How many?",
            ),
            "occurrence": (
                "How many times does the word {word} appear in this list: {items}?",
                "Count how often {word} occurs in the list {items}.",
                "In the list {items}, how many times is {word} written?",
                "How often is {word} in the list {items}?",
                "Count the word {word} in {items}. How many times is it there?",
            ),
        },
        {
            "length": (
                "Here is a list: {items}. It has how many words?",
                "Look at {items}. Count them. Which number do you get?",
            ),
            "occurrence": (
                "Here is a list: {items}. The word {word} is in it how many times?",
                "Look at {items}. Count only {word}. Which number do you get?",
            ),
        },
    ),
    Family(
        "letter_order",
        _letter_order,
        {
            "rel": (
                "Which letter comes {rel} {letter} in the alphabet?",
                "In the alphabet, what letter is {rel} {letter}?",
                "What letter do you find {rel} {letter} in the alphabet?",
                "Name the letter {rel} {letter} in the alphabet.",
                "Which letter is {rel} the letter {letter}?",
            )
        },
        {
            "rel": (
                "Look at the alphabet. The letter {rel} {letter} is which one?",
                "Here is a letter: {letter}. Which letter comes {rel} it?",
            )
        },
        space=98,
    ),
    Family(
        "calendar",
        _calendar,
        {
            "day": (
                "Which day of the week comes {rel} {x}?",
                "What day is {rel} {x}?",
                "In the week, which day is {rel} {x}?",
                "Name the day {rel} {x}.",
                "Which day comes {rel} {x}?",
            ),
            "month": (
                "Which month comes {rel} {x}?",
                "What month is {rel} {x}?",
                "In the year, which month is {rel} {x}?",
                "Name the month {rel} {x}.",
                "Which month of the year comes {rel} {x}?",
            ),
        },
        {
            "day": (
                "Look at the days of the week. The day {rel} {x} is which one?",
                "Here is a day: {x}. Which day comes {rel} it?",
            ),
            "month": (
                "Look at the months of the year. The month {rel} {x} is which one?",
                "Here is a month: {x}. Which month comes {rel} it?",
            ),
        },
        space=(7 + 12) * 6,
    ),
    Family(
        "alphabetical",
        _alphabetical,
        {
            "first": (
                "Which word comes first in alphabetical order: {list}?",
                "If you sort {list} alphabetically, which word is first?",
                "In a dictionary, which of {list} comes first?",
                "Put {list_and} in alphabetical order. Which word is first?",
                "Which of {list} is first in alphabetical order?",
            ),
            "last": (
                "Which word comes last in alphabetical order: {list}?",
                "If you sort {list} alphabetically, which word is last?",
                "In a dictionary, which of {list} comes last?",
                "Put {list_and} in alphabetical order. Which word is last?",
                "Which of {list} is last in alphabetical order?",
            ),
        },
        {
            "first": (
                "Here are some words: {list_and}. Which one is first in a dictionary?",
                "Look at {list_and}. Sorted alphabetically, the first is which?",
            ),
            "last": (
                "Here are some words: {list_and}. Which one is last in a dictionary?",
                "Look at {list_and}. Sorted alphabetically, the last is which?",
            ),
        },
        lists_choices=True,
    ),
    Family(
        "category",
        _category,
        {
            "which": (
                "Which of these is {cat}: {list}?",
                "Which one is {cat}: {list}?",
                "Of {list}, which is {cat}?",
                "Find {cat} in this list: {list_and}.",
                "One of {list} is {cat}. Which one?",
            )
        },
        {
            "which": (
                "Here are some words: {list_and}. Only one of them is {cat}. Which?",
                "Look at {list_and}. The one that is {cat} is which?",
            )
        },
        lists_choices=True,
    ),
    Family(
        "odd_one_out",
        _odd_one_out,
        {
            "odd": (
                "Which word does not belong with the others: {list}?",
                "Which is the odd one out: {list}?",
                "One of {list} is different from the rest. Which one?",
                "Find the word that does not belong: {list}.",
                "Of {list}, which one is not like the others?",
            )
        },
        {
            "odd": (
                "Here are some words: {list_and}. Three go together. Which one does not?",
                "Look at {list_and}. The one that does not belong is which?",
            )
        },
        lists_choices=True,
        heldout=True,
    ),
    Family(
        "geography",
        _geography,
        {
            "capital": (
                "What is the capital of {country}?",
                "Which city is the capital of {country}?",
                "What city is the capital city of {country}?",
                "Name the capital of {country}.",
                "The capital of {country} is which city?",
            ),
            "country": (
                "{capital} is the capital of which country?",
                "Which country has {capital} as its capital?",
                "Of which country is {capital} the capital?",
                "Name the country with the capital {capital}.",
                "The city {capital} is the capital of which country?",
            ),
            "continent": (
                "On which continent is {country}?",
                "Which continent is {country} in?",
                "{country} is a country on which continent?",
                "Name the continent of {country}.",
                "In which continent is the country {country}?",
            ),
            "language": (
                "What language do people speak in {country}?",
                "Which language is spoken in {country}?",
                "What is the main language of {country}?",
                "Name the language of {country}.",
                "People in {country} speak which language?",
            ),
        },
        {
            "capital": (
                "Here is a country: {country}. What is its capital?",
                "Look at {country}. Its capital city is which?",
            ),
            "country": (
                "Here is a capital city: {capital}. It is the capital of which country?",
                "Look at {capital}. Its country is which?",
            ),
            "continent": (
                "Here is a country: {country}. It is on which continent?",
                "Look at {country}. Its continent is which?",
            ),
            "language": (
                "Here is a country: {country}. Which language do people there speak?",
                "Look at {country}. Its main language is which?",
            ),
        },
        space=4 * len(lx.COUNTRIES),
    ),
    Family(
        "antonyms",
        _antonyms,
        {
            "opp": (
                "What is the opposite of {word}?",
                "Which word means the opposite of {word}?",
                "What word is the opposite of {word}?",
                "Name the opposite of {word}.",
                "The opposite of {word} is which word?",
            )
        },
        {
            "opp": (
                "Here is a word: {word}. What is its opposite?",
                "Look at the word {word}. Its opposite is which?",
            )
        },
        heldout=True,
        space=len(lx.OPPOSITE),
    ),
    Family(
        "unit_conversion",
        _unit_conversion,
        {
            "to_small": (
                "How many {small} are in {n} {big}?",
                "How many {small} are there in {n} {big}?",
                "{n} {big} is how many {small}?",
                "What is {n} {big} in {small}?",
                "Change {n} {big} into {small}. How many is that?",
            ),
            "to_big": (
                "How many {big} are {m} {small}?",
                "{m} {small} is how many {big}?",
                "How many {big} make {m} {small}?",
                "What is {m} {small} in {big}?",
                "Change {m} {small} into {big}. How many is that?",
            ),
        },
        {
            "to_small": (
                "Here is a time or length: {n} {big}. It is how many {small}?",
                "Look at {n} {big}. In {small}, that is which number?",
            ),
            "to_big": (
                "Here is a time or length: {m} {small}. It is how many {big}?",
                "Look at {m} {small}. In {big}, that is which number?",
            ),
        },
        heldout=True,
        space=2 * len(lx.UNITS) * 14,
    ),
    Family(
        "word_problems",
        _word_problems,
        {
            "gain": (
                "{name} has {a} {obj} and gets {b} more. How many {obj} does {name} have now?",
                "{name} had {a} {obj}. Then {name} found {b} more {obj}. How many {obj} does {name} have?",
                "There are {a} {obj} in a box. {name} puts in {b} more. How many {obj} are in the box now?",
                "{name} owns {a} {obj}. A friend gives {name} {b} more. How many {obj} does {name} own now?",
                "{name} collects {a} {obj} and then {b} more. How many {obj} is that?",
            ),
            "loss": (
                "{name} has {a} {obj} and gives {b} away. How many {obj} does {name} have now?",
                "{name} had {a} {obj}. Then {name} lost {b} {obj}. How many {obj} does {name} have?",
                "There are {a} {obj} in a box. {name} takes out {b}. How many {obj} are in the box now?",
                "{name} owns {a} {obj}. {name} gives a friend {b} of them. How many {obj} does "
                "{name} own now?",
                "{name} collects {a} {obj} and then loses {b}. How many {obj} are left?",
            ),
        },
        {
            "gain": (
                "Here is a story: {name} has {a} {obj}, then gets {b} more. The number of {obj} "
                "now is which?",
                "Look at {name}. {a} {obj}, then {b} more {obj}. How many {obj} in total?",
            ),
            "loss": (
                "Here is a story: {name} has {a} {obj}, then loses {b}. The number of {obj} now is which?",
                "Look at {name}. {a} {obj}, then {b} {obj} taken away. How many {obj} are left?",
            ),
        },
    ),
)

FAMILY_BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
HELDOUT_FAMILIES: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.heldout)
TRAIN_FAMILIES: tuple[str, ...] = tuple(f.name for f in FAMILIES if not f.heldout)

# Which families each split draws from (only ``shifted`` uses the shifted templates).
_SPLIT_FAMILIES: dict[str, tuple[str, ...]] = {
    "pretrain": tuple(f.name for f in FAMILIES),
    "train": TRAIN_FAMILIES,
    "in_dist": TRAIN_FAMILIES,
    "shifted": TRAIN_FAMILIES,
    "heldout_tasks": HELDOUT_FAMILIES,
}


def _render(family: Family, draft: Draft, rng: random.Random, shifted: bool, uid: str) -> MCExample:
    choices = [draft.answer, *draft.distractors]
    rng.shuffle(choices)
    fields = dict(draft.fields)
    if family.lists_choices:
        fields["list"] = _or_list(choices)
        fields["list_and"] = ", ".join(choices[:-1]) + " and " + choices[-1]
    groups = family.shifted_templates if shifted else family.templates
    t_index = rng.randrange(len(groups[draft.variant]))
    template = groups[draft.variant][t_index]
    question = template.format(**fields)
    question = question[0].upper() + question[1:]
    return MCExample(
        id=uid,
        question=question,
        choices=tuple(choices),
        answer=choices.index(draft.answer),
        task=family.name,
        meta={
            "template": f"{'shifted' if shifted else 'seen'}:{draft.variant}:{t_index}",
            "key": repr(draft.key),
        },
    )


# No split may take more than this share of a family's content, so that small families
# (letters, calendar, facts) keep most of their content for pre-training.
_SPACE_SHARE: dict[str, float] = {"heldout_tasks": 0.4, "shifted": 0.12, "in_dist": 0.12, "train": 0.25}
# A pre-training family that runs out of fresh content re-renders its own items (new
# template and choice order) up to this many times each, so it is not drowned out.
_PRETRAIN_MAX_RENDERS = 8


def _family_quota(n: int, families: Sequence[str], share: float | None) -> dict[str, int]:
    """Split ``n`` items over ``families`` as evenly as their caps allow (water-filling)."""
    caps = {f: (int(share * FAMILY_BY_NAME[f].space) if share else n) for f in families}
    quota = dict.fromkeys(families, 0)
    left = n
    while left > 0:
        open_f = [f for f in families if quota[f] < caps[f]]
        if not open_f:
            raise ValueError(f"the task families cannot fill {n} items without reusing content")
        base, extra = divmod(left, len(open_f))
        for i, f in enumerate(open_f):
            take = min(base + (1 if i < extra else 0), caps[f] - quota[f])
            quota[f] += take
            left -= take
    return quota


def fresh_drafts(fam: Family, rng: random.Random, n: int, used: set[tuple]) -> list[Draft]:
    """Up to ``n`` drafts of ``fam`` whose content keys are not in ``used`` (added to it as drawn).

    Rejection sampling; it gives up after 3000 consecutive repeats (the family's content is exhausted).
    """
    drafts: list[Draft] = []
    misses = 0
    while len(drafts) < n and misses < 3000:
        draft = fam.sample(rng)
        if draft.key in used:
            misses += 1
            continue
        misses = 0
        used.add(draft.key)
        drafts.append(draft)
    return drafts


def build_task_suite(
    seed: int = 0, sizes: dict[str, int] | None = None, include_pretrain: bool = True
) -> dict[str, list[MCExample]]:
    """All five splits, deterministic in ``seed`` and ``sizes``, with disjoint content keys.

    ``sizes`` overrides entries of ``DEFAULT_SIZES``. ``include_pretrain=False`` skips the
    (large) pre-training corpus, leaving it empty; the other splits are unchanged, since
    the pre-training corpus is drawn last. Evaluation and training splits are
    filled exactly (families with little content get smaller quotas). In ``pretrain`` a
    family that runs out of fresh content repeats its own pre-training content in new
    wordings; content is never shared between splits.
    """
    want = {**DEFAULT_SIZES, **(sizes or {})}
    if not include_pretrain:
        want["pretrain"] = 0
    used: set[tuple] = set()
    out: dict[str, list[MCExample]] = {}
    for split in _GEN_ORDER:
        rng = random.Random(f"roma-testbed:{seed}:{split}")
        shifted = split == "shifted"
        quota = _family_quota(want[split], _SPLIT_FAMILIES[split], _SPACE_SHARE.get(split))
        items: list[MCExample] = []
        for fname, n in quota.items():
            fam = FAMILY_BY_NAME[fname]
            drafts = fresh_drafts(fam, rng, n, used)
            if len(drafts) < n and split != "pretrain":
                raise ValueError(
                    f"family {fname!r} ran out of fresh items for split {split!r} ({len(drafts)}/{n})"
                )
            renders = list(drafts)
            if split == "pretrain" and drafts:
                extra = min(n, _PRETRAIN_MAX_RENDERS * len(drafts)) - len(drafts)
                renders += [rng.choice(drafts) for _ in range(max(0, extra))]
            items.extend(
                _render(fam, d, rng, shifted, f"{split}-{fname}-{i:05d}") for i, d in enumerate(renders)
            )
        rng.shuffle(items)  # fixed (seeded) order, families interleaved
        out[split] = items
    return {s: out[s] for s in SPLITS}


def knowledge_sentences() -> list[str]:
    """Plain statements of the bundled facts, part of the pre-training corpus.

    They carry the knowledge the fact-based families ask about (categories, geography,
    antonyms) without ever stating a question, so evaluation questions stay unseen.
    """
    out: list[str] = []
    for cat, (phrase, plural, words) in lx.CATEGORIES.items():
        for w in words:
            subj = w.capitalize() if cat in lx.NO_ARTICLE else f"{_article(w).capitalize()} {w}"
            out.append(f"{subj} is {phrase}.")
        out.append(f"Some {plural} are {', '.join(words[:-1])} and {words[-1]}.")
    for country, (capital, continent, language) in lx.COUNTRIES.items():
        out.append(f"{capital} is the capital of {country}.")
        out.append(f"{country} is a country in {continent}.")
        out.append(f"People in {country} speak {language}.")
    for a, b in lx.ANTONYMS:
        out.append(f"{a.capitalize()} is the opposite of {b}.")
        out.append(f"{b.capitalize()} is the opposite of {a}.")
    out.append("The letters of the alphabet are " + ", ".join(lx.LETTERS) + ".")
    out.append("The days of the week are " + ", ".join(lx.DAYS) + ".")
    out.append("The months of the year are " + ", ".join(lx.MONTHS) + ".")
    for small, big, _bigs, factor in lx.UNITS:
        out.append(f"There are {factor} {small} in one {big}.")
    return out


def example_to_record(example: MCExample) -> dict[str, Any]:
    """The JSONL record of one item (llm-foundry style keys plus ``id``, ``task`` and, where the query holds
    more than the question, ``question``).

    ``query`` is the prompt the testbed models are scored after (``Question: …\nAnswer:``), so a
    continuation-scored run over the export scores exactly what ``roma testbed eval`` scores.
    """
    from moe_roma.data.formats.jsonl import question_of_query
    from moe_roma.data.prompts import continuation_context

    query = continuation_context(example)
    record = {"id": example.id, "task": example.task, "query": query}
    if question_of_query(query) != example.question:  # e.g. a marked item: the marker is no part of it
        record["question"] = example.question
    return {**record, "choices": list(example.choices), "gold": example.answer}


def write_split_jsonl(examples: Iterable[MCExample], path: str | Path) -> Path:
    """Write ``examples`` as JSONL (``{"id", "task", "query", "choices", "gold"}``) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(example_to_record(ex), ensure_ascii=False) + "\n")
    return path
