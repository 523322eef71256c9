"""Paraphrase groups: n sentences with one meaning, for N-view JEPA training.

A meaning is a frame (who, did what, to which thing, where, when); each view renders it
through a different template (active, passive, fronted time/place, cleft) and different
synonyms, so the views share content but not surface form.
Record: {"views": [s1, ..., sn], "task": "paraphrase", "meaning": "subject|verb|noun|adj|place|time"}
with 2 <= n <= 6 distinct views; `meaning` (first synonym of each slot) identifies the frame,
so two groups never share a meaning and train/test never share one either.
"""
from __future__ import annotations

import random

from megajepa.data.synthetic import _common

# Each slot value is a tuple of interchangeable surface forms.
SUBJECTS = [("my mother", "my mom"), ("my father", "my dad"), ("our neighbor", "the neighbor next door"),
            ("the teacher",), ("my brother",), ("my sister",), ("the old man", "the elderly man"),
            ("a student", "one of the students"), ("the doctor",), ("my friend", "a friend of mine"),
            ("Anna",), ("Tom",), ("the chef", "the cook"), ("the mayor",), ("my uncle",)]
# (past tense forms, past participle forms)
VERBS = [(("bought", "purchased"), ("bought", "purchased")),
         (("fixed", "repaired", "mended"), ("fixed", "repaired", "mended")),
         (("cleaned", "washed"), ("cleaned", "washed")),
         (("found", "discovered"), ("found", "discovered")),
         (("sold",), ("sold",)), (("painted",), ("painted",)), (("borrowed",), ("borrowed",)),
         (("lost", "misplaced"), ("lost", "misplaced")), (("carried", "moved"), ("carried", "moved"))]
NOUNS = [("car", "automobile"), ("bike", "bicycle"), ("sofa", "couch"), ("gift", "present"),
         ("photo", "picture"), ("boat",), ("lamp",), ("chair",), ("table",), ("suitcase", "bag"),
         ("clock",), ("guitar",), ("kettle",), ("mirror",), ("ladder",)]
ADJS = [("big", "large"), ("small", "little"), ("old",), ("new", "brand-new"), ("red",),
        ("blue",), ("cheap", "inexpensive"), ("heavy",), ("broken",), ("wooden",)]
PLACES = [("at the market", "in the market"), ("in the garage",), ("by the river", "near the river"),
          ("downtown", "in the city center"), ("at the station", "at the train station"),
          ("in the park",), ("at the fair",), ("behind the school",)]
TIMES = [("yesterday",), ("last week", "the previous week"), ("this morning", "earlier today"),
         ("last night", "yesterday evening"), ("on Sunday",), ("a year ago", "last year"),
         ("two days ago", "the day before yesterday")]

# Word orders; {V} past tense, {Vpp} participle, {O} object noun phrase.
TEMPLATES = [
    "{S} {V} {O} {P} {T}.",
    "{T}, {S} {V} {O} {P}.",
    "{P}, {S} {V} {O} {T}.",
    "{S} {V} {O} {T} {P}.",
    "{O} was {Vpp} by {S} {P} {T}.",
    "{T}, {O} was {Vpp} by {S} {P}.",
    "It was {S} who {V} {O} {P} {T}.",
    "{T}, it was {S} who {V} {O} {P}.",
]


def _object(rng, adj: tuple, noun: tuple) -> str:
    # Two shapes for the same noun phrase: prenominal adjective or a relative clause.
    a, n = rng.choice(adj), rng.choice(noun)
    if rng.random() < 0.7:
        return f"the {a} {n}"
    return f"the {n} that was {a}"


def render(rng: random.Random, frame: dict) -> str:
    """One surface form of `frame`: a random template with random synonyms."""
    s = TEMPLATES[rng.randrange(len(TEMPLATES))].format(
        S=rng.choice(frame["S"]), V=rng.choice(frame["V"][0]), Vpp=rng.choice(frame["V"][1]),
        O=_object(rng, frame["A"], frame["N"]), P=rng.choice(frame["P"]),
        T=rng.choice(frame["T"]))
    return s[0].upper() + s[1:]


def sample_group(rng: random.Random, n_views: int) -> dict:
    """A frame and `n_views` distinct renderings of it."""
    frame = {"S": rng.choice(SUBJECTS), "V": rng.choice(VERBS), "N": rng.choice(NOUNS),
             "A": rng.choice(ADJS), "P": rng.choice(PLACES), "T": rng.choice(TIMES)}
    views: list[str] = []
    while len(views) < n_views:  # 8 templates alone give > 6 distinct forms, so this ends
        v = render(rng, frame)
        if v not in views:
            views.append(v)
    meaning = "|".join(frame[k][0] if k != "V" else frame[k][0][0] for k in "SVNAPT")
    return {"views": views, "task": "paraphrase", "meaning": meaning}


def _keys(record: dict) -> list[str]:
    # The meaning is a key too: the same frame rendered differently would still leak.
    return [*record["views"], record["meaning"]]


def _check(n_views: int) -> None:
    if not 2 <= n_views <= 6:
        raise ValueError(f"n_views must be in 2..6, got {n_views}")


def generate(n: int, seed: int, n_views: int = 4) -> list[dict]:
    """`n` groups of `n_views` paraphrases; no sentence appears in two groups."""
    _check(n_views)
    return _common.unique_records(lambda r: sample_group(r, n_views), n, seed, _keys)


def split(n_train: int, n_test: int, seed: int, n_views: int = 4):
    """Train and test groups sharing no sentence."""
    _check(n_views)
    return _common.split(lambda r: sample_group(r, n_views), n_train, n_test, seed, _keys)
