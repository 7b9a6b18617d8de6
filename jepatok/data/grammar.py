"""A small English sentence grammar (the project's own words): modern everyday sentences for the corpus.

Complements the archaic dictionary quotations of `dict-gcide` with plain contemporary speech:
statements, questions, requests and conditionals over a fixed vocabulary of people, things, places
and times. The number of distinct sentences is in the millions; `generate_sentences(n, seed)` draws
`n` distinct ones deterministically.
"""

from __future__ import annotations

import random

NAMES = """Anna Ben Clara David Emma Frank Grace Henry Irene Jack Kate Leo Maria Nathan Olivia Peter Rosa
Samuel Tina Victor Walter Alice Daniel Helen Martin Laura Oscar Susan Thomas Ruth George Lucy Edward Nora
Simon Paula Arthur Julia Robert Ellen""".split()
PEOPLE = """teacher farmer doctor driver baker pilot nurse student neighbor gardener painter sailor
musician waiter mechanic librarian fisherman carpenter captain writer engineer shopkeeper""".split()
ADJECTIVES = """old young quiet busy tired happy careful strange famous gentle noisy patient curious honest
cheerful clever""".split()  # for people
THING_ADJECTIVES = """old small large heavy bright dark warm cold wooden broken empty clean green yellow
strange simple tiny lovely silver golden red blue""".split()
PLACE_ADJECTIVES = "old small large quiet busy dark warm cold empty clean famous narrow ancient noisy".split()
THINGS = """book lamp letter basket chair window bottle coat ticket map key box kettle bicycle boat
umbrella fence radio painting table candle blanket hammer ladder violin camera wallet jacket
bucket rope pencil notebook bridge clock mirror envelope shovel photograph suitcase newspaper""".split()
PLURAL = {"box": "boxes", "shelf": "shelves", "knife": "knives"}
PLACES = """kitchen market station library harbor garden village forest hospital office museum bakery
church valley river school hotel theater farm factory cottage island meadow""".split()
# (past, base, takes an object)
VERBS = [
    ("found", "find"), ("carried", "carry"), ("painted", "paint"), ("opened", "open"), ("lost", "lose"),
    ("borrowed", "borrow"), ("repaired", "repair"), ("washed", "wash"), ("sold", "sell"), ("bought", "buy"),
    ("moved", "move"), ("cleaned", "clean"), ("dropped", "drop"), ("packed", "pack"), ("brought", "bring"),
    ("hid", "hide"), ("noticed", "notice"), ("dried", "dry"), ("wrapped", "wrap"), ("measured", "measure"),
    ("forgot", "forget"), ("delivered", "deliver"), ("described", "describe"), ("checked", "check"),
    ("returned", "return"), ("chose", "choose"), ("admired", "admire"), ("weighed", "weigh"),
]  # fmt: skip
INTRANSITIVE = [
    ("walked", "walk"), ("waited", "wait"), ("laughed", "laugh"), ("slept", "sleep"), ("sang", "sing"),
    ("worked", "work"), ("rested", "rest"), ("danced", "dance"), ("listened", "listen"), ("arrived", "arrive"),
    ("stayed", "stay"), ("smiled", "smile"), ("wandered", "wander"), ("studied", "study"), ("cooked", "cook"),
]  # fmt: skip
ADVERBS = """quietly slowly quickly happily carefully gladly patiently calmly suddenly proudly politely
nervously cheerfully""".split()
PREPOSITIONS = "in near behind beside outside inside across from".split()
TIMES = """this morning|last night|on Monday|on Friday|after dinner|before breakfast|in the spring|during
the storm|at noon|every evening|last summer|this afternoon|on the weekend|before sunrise|after the
rain|in the winter|yesterday|early today|late at night|on Sunday""".replace("\n", " ").split("|")
FUTURE_TIMES = """tomorrow|tonight|next week|on Monday|this evening|after lunch|in the morning|on the
weekend|next summer|later today""".replace("\n", " ").split("|")
WEATHER = "rains|snows|gets dark|turns cold|stays sunny|gets windy".split("|")
NUMBERS = "two three four five six seven eight nine ten twelve".split()
FEELINGS = "surprised|pleased|worried|amazed|delighted|puzzled".split("|")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(noun: str) -> str:
    return PLURAL.get(noun, noun + ("es" if noun.endswith(("ch", "sh", "s", "x")) else "s"))


class _Grammar:
    def __init__(self, rng: random.Random):
        self.r = rng

    def pick(self, items):
        return self.r.choice(items)

    def person(self) -> str:
        roll = self.r.random()
        if roll < 0.45:
            return self.pick(NAMES)
        if roll < 0.75:
            return "the " + (self.pick(ADJECTIVES) + " " if self.r.random() < 0.4 else "") + self.pick(PEOPLE)
        if roll < 0.9:
            return self.pick(["my", "our", "your", "their"]) + " " + self.pick(PEOPLE)
        return self.pick(["she", "he", "we", "they", "I"])

    def thing(self, definite: bool | None = None) -> str:
        noun = self.pick(THINGS)
        adj = self.pick(THING_ADJECTIVES) if self.r.random() < 0.6 else ""
        phrase = f"{adj} {noun}".strip()
        roll = self.r.random() if definite is None else (0.0 if definite else 0.5)
        if roll < 0.45:
            return "the " + phrase
        if roll < 0.8:
            return f"{_article(phrase)} {phrase}"
        return f"{self.pick(NUMBERS)} {(adj + ' ') if adj else ''}{_plural(noun)}"

    def place(self) -> str:
        adj = self.pick(PLACE_ADJECTIVES) + " " if self.r.random() < 0.3 else ""
        return f"{self.pick(PREPOSITIONS)} the {adj}{self.pick(PLACES)}"

    def time(self) -> str:
        return self.pick(TIMES)

    def maybe(self, part: str, p: float = 0.5) -> str:
        return " " + part if self.r.random() < p else ""

    def sentence(self) -> str:
        kind = self.r.randrange(10)
        p = self.person()
        past, base = self.pick(VERBS)
        ipast, ibase = self.pick(INTRANSITIVE)
        if kind == 0:
            s = f"{p} {past} {self.thing()} {self.place()}{self.maybe(self.time())}."
        elif kind == 1:
            s = f"{self.time()}, {p} {past} {self.thing()}{self.maybe(self.place())}."
        elif kind == 2:
            s = f"Did {p} {base} {self.thing()} {self.time()}?"
        elif kind == 3:
            s = f"{p} said that {self.person()} would {base} {self.thing()}{self.maybe(self.time(), 0.6)}."
        elif kind == 4:
            s = f"Please {base} {self.thing(definite=True)}{self.maybe(self.place(), 0.7)}."
        elif kind == 5:
            s = f"If it {self.pick(WEATHER)} {self.pick(FUTURE_TIMES)}, {p} will {ibase} {self.place()}."
        elif kind == 6:
            s = f"{p} {ipast} {self.pick(ADVERBS)} {self.place()}{self.maybe(self.time(), 0.4)}."
        elif kind == 7:
            s = f"Why did {p} {base} {self.thing()} {self.place()}?"
        elif kind == 8:
            noun = self.pick(THINGS)
            s = f"There were {self.pick(NUMBERS)} {self.pick(THING_ADJECTIVES)} {_plural(noun)} {self.place()}."
        else:
            be = "were" if p in ("we", "they", "you") else "was"
            s = (
                f"{p} {be} {self.pick(FEELINGS)} to see how {self.pick(THING_ADJECTIVES)} "
                f"the {self.pick(THINGS)} looked {self.place()}."
            )
        return s[0].upper() + s[1:]


def generate_sentences(n: int, seed: int = 0, max_attempts_factor: int = 20) -> list[str]:
    """`n` distinct grammar sentences, deterministic for `seed`.

    Args:
        n: number of sentences (>= 0).
        seed: random seed.
        max_attempts_factor: give up after `n * max_attempts_factor` draws (raises ValueError).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"grammar-{seed}")
    grammar = _Grammar(rng)
    seen: set[str] = set()
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > max(100, n * max_attempts_factor):
            raise ValueError(f"could only draw {len(out)} distinct sentences of the {n} asked")
        s = grammar.sentence()
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out
