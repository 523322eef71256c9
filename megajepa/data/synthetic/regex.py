"""English <-> regular expression pairs from a small grammar, in the style of NL-RX-SYNTH.

Both views are built by the same recursive rules, so the regex is exactly what the English
says. The regex DSL is NL-RX's: python-like syntax plus `&` (intersection) and `~`
(complement); `to_python` maps it onto `re` syntax so the output can be checked.
Record: {"views": [english, regex], "task": "regex"}.
"""
from __future__ import annotations

import random

from megajepa.data.synthetic import _common

# (English noun phrase, regex) for single-character classes; synonyms share a regex.
CLASSES = [
    ("a letter", "[A-Za-z]"), ("a lower-case letter", "[a-z]"),
    ("a lowercase letter", "[a-z]"), ("a capital letter", "[A-Z]"),
    ("an upper-case letter", "[A-Z]"), ("a vowel", "[AEIOUaeiou]"),
    ("a number", "[0-9]"), ("a digit", "[0-9]"), ("a character", "."),
]
# Plural forms for "words of N letters"-style phrases (the `\b[A-Za-z]+\b` family).
PLURALS = [("letters", "[A-Za-z]"), ("lower-case letters", "[a-z]"),
           ("capital letters", "[A-Z]"), ("vowels", "[AEIOUaeiou]"), ("digits", "[0-9]")]
WORDS = ["dog", "truck", "ring", "lake", "bird", "cat", "house", "tree", "road", "fish",
         "apple", "river", "moon", "star", "car", "book", "lamp", "door", "rock", "wind"]
# How "lines ..." introduces the phrase, and how the whole-line regex wraps it.
LINE_FORMS = [
    ("lines with {}", "{}"), ("lines having {}", "{}"), ("lines that have {}", "{}"),
    ("lines containing {}", ".*{}.*"), ("lines that contain {}", ".*{}.*"),
    ("lines starting with {}", "({})(.*)"), ("lines that begin with {}", "({})(.*)"),
    ("lines ending with {}", "(.*)({})"), ("lines that end with {}", "(.*)({})"),
    ("lines not containing {}", "~({})"), ("lines not having {}", "~({})"),
    ("lines with words with {}", "\\b({})\\b"), ("lines with words containing {}", "\\b({})\\b"),
]
MAX_WORDS, MIN_WORDS = 25, 5
# Stutters the free composition can produce ("lines with words with words of ..."); rejected.
STUTTERS = ("words with words", "words containing words", "with starting with",
            "with ending with", "begin with starting", "end with ending",
            "containing containing", "contain containing")


def atom(rng: random.Random) -> tuple[str, str]:
    """A character class or a literal word; classes are twice as common, as in NL-RX."""
    if rng.random() < 0.65:
        return rng.choice(CLASSES)
    w = rng.choice(WORDS)
    return f"the string '{w}'", w


def _list_en(parts: list[str], conj: str) -> str:
    # "A and B" / "A, B, and C": the Oxford-comma lists NL-RX uses.
    if len(parts) == 2:
        return f"{parts[0]} {conj} {parts[1]}"
    return ", ".join(parts[:-1]) + f", {conj} {parts[-1]}"


def repeat(rng: random.Random, en: str, rx: str) -> tuple[str, str]:
    """Attach a quantifier: `*`, `+`, `{n,}` or `{n}`."""
    k = rng.randrange(4)
    n = rng.randint(2, 7)
    if k == 0:
        return f"{en}, zero or more times", f"({rx})*"
    if k == 1:
        return f"{en} at least once", f"({rx})+"
    if k == 2:
        return f"{en}, {n} or more times", f"({rx}){{{n},}}"
    return f"{en}, exactly {n} times", f"({rx}){{{n}}}"


def word_shape(rng: random.Random) -> tuple[str, str]:
    """Words made of one class, bounded by `\\b`: `\\b[A-Za-z]+\\b`, `\\b[0-9]{3,}\\b`, ..."""
    name, cls = rng.choice(PLURALS)
    k = rng.randrange(3)
    n = rng.randint(2, 7)
    if k == 0:
        return f"words made of {name}", f"\\b{cls}+\\b"
    if k == 1:
        return f"words of at least {n} {name}", f"\\b{cls}{{{n},}}\\b"
    return f"words of exactly {n} {name}", f"\\b{cls}{{{n}}}\\b"


def phrase(rng: random.Random, depth: int) -> tuple[str, str]:
    """A noun phrase and its regex; `depth` bounds nesting so the English stays short."""
    if depth == 0:
        return atom(rng)
    k = rng.randrange(10)
    sub = lambda: phrase(rng, depth - 1)  # noqa: E731 - local shorthand for recursion
    if k == 0:
        return atom(rng)
    if k == 1:  # adjacent-ish sequence of two atoms
        (a, ar), (b, br) = atom(rng), atom(rng)
        return f"{a} followed by {b}", f"({ar}.*{br}.*)"
    if k == 2:
        (a, ar), (b, br) = sub(), sub()
        return f"{a} before {b}", f"({ar}).*({br}).*"
    if k in (3, 4):  # intersection / union of 2-3 atoms
        parts = [atom(rng) for _ in range(rng.randint(2, 3))]
        ens, rxs = [p[0] for p in parts], [f"({p[1]})" for p in parts]
        if k == 3:
            return _list_en(ens, "and"), "(" + "&".join(rxs) + ")"
        lead = "either " if len(parts) > 2 else ""
        return lead + _list_en(ens, "or"), "(" + "|".join(rxs) + ")"
    if k == 5:
        a, ar = sub()
        return f"not {a}", f"~({ar})"
    if k == 6:
        return repeat(rng, *sub())
    if k == 7:
        a, ar = sub()
        return rng.choice([(f"starting with {a}", f"(({ar})(.*))"),
                           (f"ending with {a}", f"((.*)({ar}))"),
                           (f"containing {a}", f"(.*{ar}.*)")])
    if k == 8:
        return word_shape(rng)
    a, ar = atom(rng)
    return f"words that contain only {a}", f"(\\b{ar}\\b)"


def sample(rng: random.Random) -> dict:
    """One record; resamples until the English is 5-25 words long."""
    while True:
        if rng.random() < 0.1:  # both ends constrained: intersection of start and end
            (a, ar), (b, br) = phrase(rng, 1), phrase(rng, 1)
            en, rx = f"lines starting with {a} and ending with {b}", f"(({ar})(.*))&((.*)({br}))"
        else:
            en_form, rx_form = rng.choice(LINE_FORMS)
            p, pr = phrase(rng, rng.choice([0, 1, 1, 2]))
            en, rx = en_form.format(p), rx_form.format(pr)
        if MIN_WORDS <= len(en.split()) <= MAX_WORDS and not any(t in en for t in STUTTERS):
            return {"views": [en, rx], "task": "regex"}


def generate(n: int, seed: int) -> list[dict]:
    """`n` records with distinct English and distinct regexes, deterministic in `seed`."""
    return _common.unique_records(sample, n, seed)


def split(n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Train and test sharing no English text and no regex."""
    return _common.split(sample, n_train, n_test, seed)
