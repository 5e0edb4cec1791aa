"""The ``downstream`` testbed's task suite and pre-training corpus (the RoMA paper's setting).

The ``in-domain`` testbed (``moe_roma.testbed.tasks``) pre-trains its model on the very prompt
format and task families that router post-training uses. Here, as in the paper, the model is
pre-trained on *general text* that teaches the skills and facts, and only then meets the
downstream multiple-choice format ``Question: {question}\\nAnswer: {choice}``
(``moe_roma.data.prompts.DEFAULT_CONTINUATION_TEMPLATE``):

``pretrain``       text documents, not questions (``pretrain_corpus``): plain statements
                   ("17 plus 25 is 42."), worked examples in other formats ("... The answer is
                   42.", a dialogue, "Exercise: ... Solution: ..."), lists of statements, the
                   bundled facts, and general filler text. The downstream format is rare:
                   1.6% of the documents (``qa_rate`` 0.06 of the worked examples).
``train``          the RoMA training set: downstream-format items of the 12 training families
``validation``     the same families and wordings, disjoint content: for choosing hyper-parameters
``in_dist``        evaluation: new items of the training families, wordings of ``train``
``shifted``        evaluation: new items of the training families, wordings used nowhere else
``heldout_tasks``  evaluation: the 4 families absent from post-training (``train``/``validation``)
``train_large``    a larger post-training set (``build_train_large``, 49 000 items), drawn last from
                   content no other split and no corpus document uses; not part of the suite

The families, content samplers, wordings and lexicon are ``moe_roma.testbed.tasks``'s. Every item
has a content key (the numbers, words or fact it asks about); no key is in two splits, and the
pre-training corpus renders only keys of no other split. Everything is deterministic in ``seed``,
each split drawing from its own ``random.Random("roma-downstream:{seed}:{split}")``, evaluation
splits first and the corpus last.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from moe_roma.data.example import MCExample
from moe_roma.io.errors import RomaError
from moe_roma.testbed import lexicon as lx
from moe_roma.testbed import tasks
from moe_roma.testbed.tasks import FAMILY_BY_NAME, HELDOUT_FAMILIES, TRAIN_FAMILIES, Draft, Family

SPLITS: tuple[str, ...] = ("train", "validation", "in_dist", "shifted", "heldout_tasks")
EVAL_SPLITS: tuple[str, ...] = ("in_dist", "shifted", "heldout_tasks")
# Generation order: evaluation splits claim their content keys first, the corpus takes what is left.
_GEN_ORDER: tuple[str, ...] = ("heldout_tasks", "shifted", "in_dist", "validation", "train")

DEFAULT_SIZES: dict[str, int] = {
    "train": 960,
    "validation": 240,
    "in_dist": 360,
    "shifted": 360,
    "heldout_tasks": 320,
}
_SPLIT_FAMILIES: dict[str, tuple[str, ...]] = {
    "train": TRAIN_FAMILIES,
    "validation": TRAIN_FAMILIES,
    "in_dist": TRAIN_FAMILIES,
    "shifted": TRAIN_FAMILIES,
    "heldout_tasks": HELDOUT_FAMILIES,
}
# No split takes more than this share of a family's content, so that the small families
# (letter_order, calendar, geography) keep about half of their keys for the corpus.
_SPACE_SHARE: dict[str, float] = {
    "heldout_tasks": 0.4,
    "shifted": 0.1,
    "in_dist": 0.1,
    "validation": 0.05,
    "train": 0.2,
}

# The downstream prompt format, as the corpus would contain it (``qa_rate``) and as it is detected.
QA_FORMAT = "Question: {question}\nAnswer: {answer}"
_QA_RE = re.compile(r"question\s*:.*answer\s*:", re.IGNORECASE | re.DOTALL)


def has_qa_format(text: str) -> bool:
    """Whether ``text`` holds the downstream prompt format (``Question: ... Answer: ...``)."""
    return bool(_QA_RE.search(text))


# --------------------------------------------------------------------------- the MC splits


def build_downstream_suite(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, list[MCExample]]:
    """The downstream-format splits (``SPLITS``), deterministic in ``seed``, disjoint content keys."""
    return _suite_and_keys(seed, sizes)[0]


def _suite_and_keys(seed: int, sizes: dict[str, int] | None) -> tuple[dict[str, list[MCExample]], set[tuple]]:
    want = {**DEFAULT_SIZES, **(sizes or {})}
    used: set[tuple] = set()
    out: dict[str, list[MCExample]] = {}
    for split in _GEN_ORDER:
        rng = random.Random(f"roma-downstream:{seed}:{split}")
        quota = tasks._family_quota(want[split], _SPLIT_FAMILIES[split], _SPACE_SHARE[split])
        items: list[MCExample] = []
        for fname, n in quota.items():
            fam = FAMILY_BY_NAME[fname]
            drafts = tasks.fresh_drafts(fam, rng, n, used)
            if len(drafts) < n:
                raise ValueError(
                    f"family {fname!r} ran out of fresh items for split {split!r} ({len(drafts)}/{n})"
                )
            shifted = split == "shifted"
            items.extend(
                tasks._render(fam, d, rng, shifted, f"ds-{split}-{fname}-{i:05d}")
                for i, d in enumerate(drafts)
            )
        rng.shuffle(items)
        out[split] = items
    return {s: out[s] for s in SPLITS}, used


# --------------------------------------------------------------------------- statements
# Plain statements of one draft's content: the skill, stated, never asked. "{ans}" is the right
# answer, "{all}" every option (in a random order), "{others}" the three wrong options.

_STATEMENTS: dict[str, dict[str, tuple[str, ...]]] = {
    "addition": {
        "plus": (
            "{a} plus {b} is {ans}.",
            "{a} plus {b} equals {ans}.",
            "The sum of {a} and {b} is {ans}.",
            "Adding {a} and {b} gives {ans}.",
            "{a} and {b} added together make {ans}.",
            "{a} + {b} = {ans}",
        )
    },
    "subtraction": {
        "minus": (
            "{a} minus {b} is {ans}.",
            "{a} minus {b} equals {ans}.",
            "Taking {b} away from {a} leaves {ans}.",
            "The difference between {a} and {b} is {ans}.",
            "If you subtract {b} from {a}, you get {ans}.",
            "{a} - {b} = {ans}",
        )
    },
    "multiplication": {
        "times": (
            "{a} times {b} is {ans}.",
            "{a} multiplied by {b} equals {ans}.",
            "The product of {a} and {b} is {ans}.",
            "{a} groups of {b} make {ans}.",
            "Multiplying {a} by {b} gives {ans}.",
            "{a} * {b} = {ans}",
        )
    },
    "comparison": {
        "largest": (
            "The largest of {all} is {ans}.",
            "Of the numbers {all}, {ans} is the biggest.",
            "{ans} is greater than {others}.",
            "Among {all}, the greatest number is {ans}.",
        ),
        "smallest": (
            "The smallest of {all} is {ans}.",
            "Of the numbers {all}, {ans} is the lowest.",
            "{ans} is less than {others}.",
            "Among {all}, the least number is {ans}.",
        ),
    },
    "parity": {
        "even": (
            "{ans} is an even number.",
            "{ans} is even, and {others} are odd.",
            "Of {all}, only {ans} is even.",
            "Among the numbers {all}, the even one is {ans}.",
        ),
        "odd": (
            "{ans} is an odd number.",
            "{ans} is odd, and {others} are even.",
            "Of {all}, only {ans} is odd.",
            "Among the numbers {all}, the odd one is {ans}.",
        ),
    },
    "sequence": {
        "up": (
            "The sequence {seq} continues with {ans}.",
            "{seq}, {ans}: the numbers go up by {step} each time.",
            "After {seq} comes {ans}.",
            "In the pattern {seq}, the next number is {ans}.",
        ),
        "down": (
            "The sequence {seq} continues with {ans}.",
            "{seq}, {ans}: the numbers go down by {step} each time.",
            "After {seq} comes {ans}.",
            "In the pattern {seq}, the next number is {ans}.",
        ),
    },
    "counting": {
        "length": (
            "The list {items} has {ans} words.",
            "There are {ans} words in the list {items}.",
            "{items}: that is {ans} words.",
            "Counting {items} gives {ans} words.",
        ),
        "occurrence": (
            "The word {word} appears {ans} times in the list {items}.",
            "In the list {items}, the word {word} is written {ans} times.",
            "Counting {word} in {items} gives {ans}.",
            "{word} is in the list {items} {ans} times.",
        ),
    },
    "letter_order": {
        "rel": (
            "{ans} comes {rel} {letter} in the alphabet.",
            "The letter {rel} {letter} is {ans}.",
            "In the alphabet, {ans} is {rel} {letter}.",
            "{rel} the letter {letter} you find {ans}.",
        )
    },
    "calendar": {
        "day": ("{ans} comes {rel} {x}.", "The day {rel} {x} is {ans}.", "In the week, {ans} is {rel} {x}."),
        "month": (
            "{ans} comes {rel} {x}.",
            "The month {rel} {x} is {ans}.",
            "In the year, {ans} is {rel} {x}.",
        ),
    },
    "alphabetical": {
        "first": (
            "In alphabetical order, {ans} comes before {others}.",
            "Of {all}, {ans} is first in a dictionary.",
            "Sorted alphabetically, {sorted}.",
            "The first of {all} in alphabetical order is {ans}.",
        ),
        "last": (
            "In alphabetical order, {ans} comes after {others}.",
            "Of {all}, {ans} is last in a dictionary.",
            "Sorted alphabetically, {sorted}.",
            "The last of {all} in alphabetical order is {ans}.",
        ),
    },
    "category": {
        "which": (
            "{Ans} is {cat}.",
            "Of {all}, only {ans} is {cat}.",
            "{ans} is {cat}, but {others} are not.",
            "Among {all}, {ans} is {cat}.",
        )
    },
    "odd_one_out": {
        "odd": (
            "{others} are {plural}, but {ans} is not.",
            "Of {all}, {ans} does not belong with the others.",
            "{ans} is the odd one out among {all}.",
            "{others} go together; {ans} is different.",
        )
    },
    "geography": {
        "capital": ("The capital of {country} is {ans}.", "{ans} is the capital city of {country}."),
        "country": ("{capital} is the capital of {ans}.", "The country with the capital {capital} is {ans}."),
        "continent": ("{country} is a country in {ans}.", "The continent of {country} is {ans}."),
        "language": ("People in {country} speak {ans}.", "The main language of {country} is {ans}."),
    },
    "antonyms": {
        "opp": (
            "The opposite of {word} is {ans}.",
            "{Word} and {ans} are opposites.",
            "{Ans} means the opposite of {word}.",
        )
    },
    "unit_conversion": {
        "to_small": (
            "{n} {big} is {ans} {small}.",
            "There are {ans} {small} in {n} {big}.",
            "{n} {big} make {ans} {small}.",
        ),
        "to_big": (
            "{m} {small} is {ans} {big}.",
            "{m} {small} make {ans} {big}.",
            "There are {ans} {big} in {m} {small}.",
        ),
    },
    "word_problems": {
        "gain": (
            "{name} has {a} {obj} and gets {b} more, so {name} has {ans} {obj} now.",
            "{name} had {a} {obj} and found {b} more. Now {name} has {ans} {obj}.",
            "There were {a} {obj} in a box and {name} put in {b} more, which made {ans} {obj}.",
        ),
        "loss": (
            "{name} has {a} {obj} and gives {b} away, so {name} has {ans} {obj} now.",
            "{name} had {a} {obj} and lost {b}. Now {name} has {ans} {obj}.",
            "There were {a} {obj} in a box and {name} took out {b}, which left {ans} {obj}.",
        ),
    },
}


def _and_list(items: Sequence[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1]


def statement(fam: Family, draft: Draft, rng: random.Random) -> str:
    """One plain statement of the draft's content (a random wording)."""
    options = [draft.answer, *draft.distractors]
    rng.shuffle(options)
    fields = {k: str(v) for k, v in draft.fields.items()}
    fields.update(
        ans=draft.answer,
        Ans=draft.answer[:1].upper() + draft.answer[1:],
        all=_and_list(options),
        others=_and_list(list(draft.distractors)),
    )
    if fam.name == "sequence":
        fields["step"] = str(draft.key[3])
    elif fam.name == "alphabetical":
        words = sorted(options, reverse=draft.variant == "last")
        order = "before" if draft.variant == "first" else "after"
        fields["sorted"] = f"{words[0]} comes {order} " + _and_list(words[1:])
    elif fam.name == "odd_one_out":
        fields["plural"] = lx.CATEGORIES[lx.WORD_CATEGORY[draft.distractors[0]]][1]
    elif fam.name == "antonyms":
        fields["Word"] = draft.fields["word"].capitalize()
    text = rng.choice(_STATEMENTS[fam.name][draft.variant]).format(**fields)
    return text[0].upper() + text[1:]


# --------------------------------------------------------------------------- worked examples
# A question in one of the family's seen wordings, answered in a format other than the
# downstream one, as questions and answers appear in ordinary text.

_WORKED: tuple[str, ...] = (
    "{question} The answer is {answer}.",
    "{question} It is {answer}.",
    "{name} asked: {question} {name2} said: {answer}.",
    "Exercise: {question} Solution: {answer}.",
)


def worked_example(fam: Family, draft: Draft, rng: random.Random, qa_rate: float) -> str:
    """The draft asked in a seen wording and answered; in the downstream format with ``qa_rate``."""
    ex = tasks._render(fam, draft, rng, False, "corpus")
    answer = ex.choices[ex.answer]
    if rng.random() < qa_rate:
        return QA_FORMAT.format(question=ex.question, answer=answer)
    name, name2 = rng.sample(lx.NAMES, 2)
    return rng.choice(_WORKED).format(question=ex.question, answer=answer, name=name, name2=name2)


# --------------------------------------------------------------------------- general text

_FILLER: tuple[str, ...] = (
    "{name} lives in a {color} house near the {building}.",
    "On {day}, {name} played {sport} with {name2}.",
    "{name} keeps {num} {obj} in a box under the {furniture}.",
    "The {animal} sat next to the {furniture} all morning.",
    "In {month}, {name} went to {capital} by {vehicle}.",
    "{name} asked {name2} a question about the {animal}.",
    "{name2} thought for a while and gave an answer.",
    "{name} likes {drink} more than {drink2}.",
    "{name} plays the {instrument} every {day}.",
    "Look at the {color} {vehicle} near the {building}.",
    "Here is {a_fruit} for {name}.",
    "The {tool} is on the {furniture} in the {building}.",
    "{name} put on a {clothing} because it was cold.",
    "Every {month}, {name} visits a friend in {country}.",
    "The children counted {num} {obj} on the table.",
    "{name} bought a {fruit} and a {vegetable} at the market.",
    "A {animal} and a {animal2} live on the farm.",
    "{name} wrote a story about a {animal} and a {vehicle}.",
    "There is a {color} {clothing} in the {furniture}.",
    "{name} and {name2} met at the {building} on {day}.",
    "The teacher read the list of words out loud.",
    "{name} learned a new word today.",
    "It was a long {day}, and {name} was tired.",
    "{name} found {num} {obj} behind the {building}.",
    "The {vehicle} was late, so {name} walked to the {building}.",
    "{name} drew a picture of a {color} {animal}.",
    "My friend from {country} speaks {language}.",
    "{name} carried the {tool} to the {building}.",
    "After {sport}, {name} drank some {drink}.",
    "Which {animal} is the fastest? Nobody knows.",
)


def _words(cat: str) -> tuple[str, ...]:
    return lx.CATEGORIES[cat][2]


def filler_sentence(rng: random.Random) -> str:
    """One sentence of general text over the bundled lexicon (no task content, no question format)."""
    country = rng.choice(sorted(lx.COUNTRIES))
    capital, _continent, language = lx.COUNTRIES[country]
    name, name2 = rng.sample(lx.NAMES, 2)
    animal, animal2 = rng.sample(_words("animal"), 2)
    drink, drink2 = rng.sample(_words("drink"), 2)
    fields = {
        "name": name,
        "name2": name2,
        "color": rng.choice(_words("color")),
        "building": rng.choice(_words("building")),
        "day": rng.choice(lx.DAYS),
        "month": rng.choice(lx.MONTHS),
        "sport": rng.choice(_words("sport")),
        "num": rng.randint(2, 30),
        "obj": rng.choice(lx.OBJECTS),
        "furniture": rng.choice(_words("furniture")),
        "animal": animal,
        "animal2": animal2,
        "vehicle": rng.choice(_words("vehicle")),
        "capital": capital,
        "country": country,
        "language": language,
        "drink": drink,
        "drink2": drink2,
        "instrument": rng.choice(_words("instrument")),
        "fruit": rng.choice(_words("fruit")),
        "tool": rng.choice(_words("tool")),
        "clothing": rng.choice(_words("clothing")),
        "vegetable": rng.choice(_words("vegetable")),
    }
    fields["a_fruit"] = f"{tasks._article(fields['fruit'])} {fields['fruit']}"
    return rng.choice(_FILLER).format(**fields)


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class CorpusConfig:
    """The mix of the pre-training corpus (every field is recorded in ``build_info.json``)."""

    family_docs: int = 1500  # documents per family (fewer for small families: at most 8 per key)
    worked_share: float = 0.35  # documents that are a worked example (a question in a seen wording, answered)
    list_share: float = 0.25  # documents that list 3 statements of the family; the rest hold one statement
    # Worked examples written in the downstream format instead: 1.6% of all documents, the way
    # web text holds a few pages in a benchmark's format (0 leaves the base model near chance).
    qa_rate: float = 0.06
    filler_share: float = 0.3  # chance that a family document gets a sentence of general text beside it
    filler_docs: int = 6000  # documents of 2-4 sentences of general text
    knowledge_repeats: int = 6  # copies of the bundled fact statements, 2-3 to a document


_MAX_RENDERS = 8


def pretrain_corpus(
    seed: int = 0, cfg: CorpusConfig | None = None, sizes: dict[str, int] | None = None
) -> list[str]:
    """The pre-training documents: general text over content keys that no MC split uses.

    Deterministic in ``seed``, ``cfg`` and ``sizes`` (the MC splits' sizes decide which keys are
    left for the corpus). Documents are plain strings; the builder appends ``<eos>`` to each.
    """
    return _corpus(seed, cfg or CorpusConfig(), sizes)[0]


def pretrain_corpus_keys(
    seed: int = 0, cfg: CorpusConfig | None = None, sizes: dict[str, int] | None = None
) -> set[str]:
    """The content keys (as ``MCExample.meta["key"]`` writes them) the corpus's family documents render."""
    return _corpus(seed, cfg or CorpusConfig(), sizes)[1]


def pretrain_corpus_tasks(
    seed: int = 0, cfg: CorpusConfig | None = None, sizes: dict[str, int] | None = None
) -> list[str]:
    """What each document of ``pretrain_corpus`` (same arguments, same order) is about: its task
    family, ``"facts"`` or ``"general"`` (the task labels of alignment during pre-training)."""
    return _corpus(seed, cfg or CorpusConfig(), sizes)[2]


def _corpus(
    seed: int, cfg: CorpusConfig, sizes: dict[str, int] | None
) -> tuple[list[str], set[str], list[str], set[tuple]]:
    _, used = _suite_and_keys(seed, sizes)
    used = set(used)
    rng = random.Random(f"roma-downstream:{seed}:pretrain")
    docs: list[str] = []
    labels: list[str] = []
    keys: set[str] = set()
    for fam in tasks.FAMILIES:
        pool = tasks.fresh_drafts(fam, rng, cfg.family_docs, used)
        keys.update(repr(d.key) for d in pool)
        n_docs = min(cfg.family_docs, _MAX_RENDERS * len(pool))
        for i in range(n_docs):
            draft = pool[i % len(pool)]  # every key once before any key twice
            r = rng.random()
            if r < cfg.worked_share:
                text = worked_example(fam, draft, rng, cfg.qa_rate)
            elif r < cfg.worked_share + cfg.list_share:
                extra = rng.sample(pool, min(2, len(pool)))
                text = " ".join(statement(fam, d, rng) for d in (draft, *extra))
            else:
                text = statement(fam, draft, rng)
            if rng.random() < cfg.filler_share:
                text = (
                    f"{filler_sentence(rng)} {text}"
                    if rng.random() < 0.5
                    else f"{text} {filler_sentence(rng)}"
                )
            docs.append(text)
            labels.append(fam.name)
    facts = tasks.knowledge_sentences()
    for _ in range(cfg.knowledge_repeats):
        order = list(facts)
        rng.shuffle(order)
        k = 0
        while k < len(order):
            n = rng.randint(2, 3)
            docs.append(" ".join(order[k : k + n]))
            labels.append("facts")
            k += n
    for _ in range(cfg.filler_docs):
        docs.append(" ".join(filler_sentence(rng) for _ in range(rng.randint(2, 4))))
        labels.append("general")
    # Shuffling positions draws what shuffling the documents did (it depends on the length only).
    perm = list(range(len(docs)))
    rng.shuffle(perm)
    # ``used`` now holds every key of the MC splits and of the corpus: what ``train_large`` must avoid.
    return [docs[i] for i in perm], keys, [labels[i] for i in perm], used


# --------------------------------------------------------------------------- train_large
# The paper post-trains on 49k items; ``train`` has 960. ``train_large`` is drawn after everything
# else (the MC splits, then the corpus), from content keys that no split and no corpus document
# uses, so that the frozen model, its corpus and every other split stay exactly as they were.

TRAIN_LARGE = "train_large"
TRAIN_LARGE_SIZE = 49_000  # the paper's post-training set: about 49k items


def build_train_large(
    seed: int = 0,
    size: int | None = None,
    sizes: dict[str, int] | None = None,
    cfg: CorpusConfig | None = None,
) -> list[MCExample]:
    """The large post-training split: downstream-format items of the training families, seen wordings.

    Its content keys are in no other split and in no pre-training document (``seed``, ``sizes`` and
    ``cfg`` must be the ones the model was built with; the defaults are the committed model's). The
    full split is ``TRAIN_LARGE_SIZE`` items spread as evenly over the 12 training families as their
    fresh content allows, in a seeded shuffled order; ``size`` keeps its first ``size`` items, so
    smaller sets are nested in larger ones and share the full split's family mix.
    """
    full = _train_large_full(seed, tuple(sorted((sizes or {}).items())), cfg or CorpusConfig())
    if size is None:
        return list(full)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= len(full):
        raise RomaError(f"the {TRAIN_LARGE} size must be an integer from 1 to {len(full)}, got {size!r}")
    return list(full[:size])


@functools.lru_cache(maxsize=2)
def _train_large_full(seed: int, sizes: tuple, cfg: CorpusConfig) -> tuple[MCExample, ...]:
    # Cached: building it regenerates the corpus and renders 49k items (about 5 s). Callers get a new
    # list; the items themselves are shared, so treat them as read-only.
    used = _corpus(seed, cfg, dict(sizes))[3]
    drafts = _fill_families(seed, TRAIN_FAMILIES, TRAIN_LARGE_SIZE, used)
    rng = random.Random(f"roma-downstream:{seed}:{TRAIN_LARGE}")
    items = [
        tasks._render(FAMILY_BY_NAME[f], d, rng, False, f"ds-{TRAIN_LARGE}-{f}-{i:05d}")
        for f in TRAIN_FAMILIES
        for i, d in enumerate(drafts[f])
    ]
    rng.shuffle(items)
    return tuple(items)


def _fill_families(seed: int, families: Sequence[str], n: int, used: set[tuple]) -> dict[str, list[Draft]]:
    """Up to ``n`` fresh drafts spread as evenly over ``families`` as their unused content allows.

    Each family draws from its own generator, so its drafts do not depend on the other families'
    counts. A family's capacity is found by running out of it (``tasks.fresh_drafts`` gives up after
    3000 repeats in a row); the others then share its unfilled quota.
    """
    rngs = {f: random.Random(f"roma-downstream:{seed}:{TRAIN_LARGE}:{f}") for f in families}
    pools: dict[str, list[Draft]] = {f: [] for f in families}
    caps: dict[str, int] = {}
    while True:
        quota = _even_quota(n, families, caps)
        ran_out = False
        for f in families:
            need = quota[f] - len(pools[f])
            if need > 0:
                got = tasks.fresh_drafts(FAMILY_BY_NAME[f], rngs[f], need, used)
                pools[f] += got
                if len(got) < need:
                    caps[f], ran_out = len(pools[f]), True
        if not ran_out:
            return pools


def _even_quota(n: int, families: Sequence[str], caps: dict[str, int]) -> dict[str, int]:
    """``n`` split over ``families`` as evenly as ``caps`` (the families known to hold less) allow."""
    quota = dict.fromkeys(families, 0)
    left = n
    while left > 0:
        open_f = [f for f in families if quota[f] < caps.get(f, n + 1)]
        if not open_f:
            break  # every family is exhausted: the split is smaller than asked
        base, extra = divmod(left, len(open_f))
        for i, f in enumerate(open_f):
            take = min(base + (1 if i < extra else 0), caps.get(f, n + 1) - quota[f])
            quota[f] += take
            left -= take
    return quota


def qa_format_rate(docs: Sequence[str]) -> float:
    """Share of documents that hold the downstream prompt format."""
    return sum(has_qa_format(d) for d in docs) / max(len(docs), 1)


def content_keys(examples: Sequence[MCExample]) -> set[str]:
    return {ex.meta["key"] for ex in examples}


__all__ = [
    "DEFAULT_SIZES",
    "EVAL_SPLITS",
    "QA_FORMAT",
    "SPLITS",
    "TRAIN_LARGE",
    "TRAIN_LARGE_SIZE",
    "CorpusConfig",
    "build_downstream_suite",
    "build_train_large",
    "content_keys",
    "filler_sentence",
    "has_qa_format",
    "pretrain_corpus",
    "pretrain_corpus_keys",
    "pretrain_corpus_tasks",
    "qa_format_rate",
    "statement",
    "worked_example",
]
