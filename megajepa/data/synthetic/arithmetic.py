"""Word problems <-> worked solutions ending in `#### N` (GSM8K style), exact integers.

Each template draws numbers so every intermediate result is a non-negative integer
(divisions are exact), writes GSM8K calculator annotations `<<a*b=c>>`, and stores the
numbers and the formula so the answer can be recomputed independently.
Record: {"views": [problem, solution], "task": "arithmetic", "answer": int,
         "numbers": {"a": int, ...}, "formula": "a*b-c"}.
"""
from __future__ import annotations

import random

from megajepa.data.synthetic import _common

PEOPLE = [("Ava", "she"), ("Ben", "he"), ("Chloe", "she"), ("Dan", "he"), ("Ema", "she"),
          ("Finn", "he"), ("Gia", "she"), ("Hugo", "he"), ("Iris", "she"), ("Jack", "he"),
          ("Lena", "she"), ("Max", "he"), ("Nora", "she"), ("Omar", "he"), ("Rosa", "she")]
ITEMS = ["pencils", "apples", "notebooks", "stickers", "candles", "mugs", "books", "oranges"]
GOODS = ["toys", "bottles", "bricks", "buttons", "cans", "boxes", "chairs", "bolts"]


def _step(text: str, expr: str, value: int) -> str:
    # GSM8K writes the sum inline, then the calculator annotation, then the result.
    return f"{text} {expr} = <<{expr}={value}>>{value}."


def change(rng, name, pron):
    a, b = rng.randint(2, 9), rng.randint(2, 15)
    c = (a * b // 10 + rng.randint(1, 5)) * 10  # a round bill larger than the cost
    item = rng.choice(ITEMS)
    q = (f"{name} buys {a} {item} at ${b} each and pays with a ${c} bill. "
         f"How much change does {pron} get?")
    cost = a * b
    steps = [_step(f"The {item} cost", f"{a}*{b}", cost),
             _step("The change is", f"{c}-{cost}", c - cost)]
    return q, steps, {"a": a, "b": b, "c": c}, "c-a*b"


def sharing(rng, name, pron):
    c, each = rng.randint(2, 9), rng.randint(2, 12)
    total = c * each
    b = rng.randint(1, total - 1)
    a = total - b
    item = rng.choice(ITEMS)
    q = (f"{name} has {a} {item}. {pron.capitalize()} gets {b} more and shares them equally "
         f"among {c} friends. How many {item} does each friend get?")
    steps = [_step(f"{name} has", f"{a}+{b}", total),
             _step("Each friend gets", f"{total}/{c}", each)]
    return q, steps, {"a": a, "b": b, "c": c}, "(a+b)/c"


def factory(rng, name, pron):
    a, b, c = rng.randint(5, 60), rng.randint(2, 12), rng.randint(2, 7)
    good = rng.choice(GOODS)
    q = (f"A machine in {name}'s workshop makes {a} {good} per hour. It runs {b} hours a day "
         f"for {c} days. How many {good} does it make in total?")
    per_day = a * b
    steps = [_step("Each day it makes", f"{a}*{b}", per_day),
             _step("In total it makes", f"{per_day}*{c}", per_day * c)]
    return q, steps, {"a": a, "b": b, "c": c}, "a*b*c"


def savings(rng, name, pron):
    a, b = rng.randint(5, 50), rng.randint(3, 20)
    c = rng.randint(1, a * b - 1)
    q = (f"{name} saves ${a} every week for {b} weeks. Then {pron} spends ${c} on a gift. "
         f"How many dollars does {pron} have left?")
    saved = a * b
    steps = [_step(f"{name} saves", f"{a}*{b}", saved),
             _step("After the gift,", f"{saved}-{c}", saved - c)]
    return q, steps, {"a": a, "b": b, "c": c}, "a*b-c"


def ages(rng, name, pron):
    a, b, c = rng.randint(5, 40), rng.randint(1, 30), rng.randint(1, 20)
    other = rng.choice([p for p, _ in PEOPLE if p != name])
    q = (f"{name} is {a} years old. {other} is {b} years older than {name}. "
         f"What will be the sum of their ages in {c} years?")
    o = a + b
    now = a + o
    steps = [_step(f"{other} is", f"{a}+{b}", o),
             _step("Their ages now add up to", f"{a}+{o}", now),
             _step(f"In {c} years the sum is", f"{now}+2*{c}", now + 2 * c)]
    return q, steps, {"a": a, "b": b, "c": c}, "2*a+b+2*c"


def bakery(rng, name, pron):
    a, b, d = rng.randint(2, 9), rng.randint(6, 24), rng.randint(2, 8)
    boxes = rng.randint(1, a * b // d)
    c = a * b - boxes * d  # burnt cookies: what makes the rest fill whole boxes
    q = (f"{name} bakes {a} trays of {b} cookies. {c} cookies get burnt, and {pron} packs "
         f"the rest into boxes of {d}. How many boxes does {pron} fill?")
    baked = a * b
    steps = [_step(f"{name} bakes", f"{a}*{b}", baked),
             _step("Not burnt are", f"{baked}-{c}", baked - c),
             _step("That fills", f"{baked - c}/{d}", boxes)]
    return q, steps, {"a": a, "b": b, "c": c, "d": d}, "(a*b-c)/d"


TEMPLATES = [change, sharing, factory, savings, ages, bakery]


def sample(rng: random.Random) -> dict:
    name, pron = rng.choice(PEOPLE)
    q, steps, numbers, formula = rng.choice(TEMPLATES)(rng, name, pron)
    answer = int(steps[-1].rsplit(">>", 1)[1].rstrip("."))  # the last step is the result
    solution = "\n".join(steps) + f"\n#### {answer}"
    return {"views": [q, solution], "task": "arithmetic", "answer": answer,
            "numbers": numbers, "formula": formula}


def generate(n: int, seed: int) -> list[dict]:
    """`n` distinct problems, deterministic in `seed`."""
    return _common.unique_records(sample, n, seed)


def split(n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Train and test sharing no problem text and no solution."""
    return _common.split(sample, n_train, n_test, seed)
