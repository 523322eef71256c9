"""Synthetic task suite: determinism, leak-free splits, and per-task validity checks."""
from __future__ import annotations

import ast
import importlib.util
import json
import operator
import os
import re
import sqlite3
from fractions import Fraction

import pytest

from megajepa.data import synthetic
from megajepa.data.synthetic import arithmetic, paraphrase, regex, sql
from megajepa.eval import automata, regex_dsl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("task", sorted(synthetic.TASKS))
def test_deterministic_by_seed(task, tmp_path):
    a = synthetic.generate(task, 200, 7, out_dir=tmp_path / "a")
    b = synthetic.generate(task, 200, 7, out_dir=tmp_path / "b")
    c = synthetic.generate(task, 200, 8, out_dir=tmp_path / "c")
    assert a == b
    assert a != c
    assert all(r["task"] == task and len(r["views"]) >= 2 for r in a)
    assert all(isinstance(v, str) and v for r in a for v in r["views"])


@pytest.mark.parametrize("task", sorted(synthetic.TASKS))
def test_split_shares_no_view(task):
    train, test = synthetic.split(task, 400, 100, 3)
    assert (len(train), len(test)) == (400, 100)
    train_views = {v for r in train for v in r["views"]}
    assert not train_views & {v for r in test for v in r["views"]}


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="regex"):
        synthetic.generate("nope", 1, 0)


# --- regex ----------------------------------------------------------------------------

def test_regex_many_distinct_short_examples():
    recs = regex.generate(20000, 0)
    assert len({r["views"][0] for r in recs}) == 20000
    assert len({r["views"][1] for r in recs}) == 20000
    assert all(5 <= len(r["views"][0].split()) <= 25 for r in recs)
    rx = [r["views"][1] for r in recs]
    # The grammar's coverage: every operator family the brief names shows up.
    for needle in ["&", "~", "|", "{", "}", ")*", ")+", "\\b", "[A-Za-z]", "[a-z]", "[A-Z]",
                   "[AEIOUaeiou]", "[0-9]", "(.*)", "[A-Za-z]+\\b"]:
        assert any(needle in x for x in rx), needle


def _balanced(s: str) -> bool:
    depth = 0
    for ch in re.sub(r"\[[^\]]*\]", "", s):  # brackets of classes hold no parentheses
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_every_regex_is_well_formed():
    for r in regex.generate(3000, 1):
        rx = r["views"][1]
        assert _balanced(rx), rx
        regex_dsl.parse(rx)  # the parser evaluation scores predictions with
        if "&" not in rx and "~" not in rx:  # plain python syntax: must compile as is
            re.compile(rx)


@pytest.mark.parametrize("rx,yes,no", [
    ("(dog).*(truck).*", "dog and truck", "truck and dog"),
    ("([A-Z])(.*)", "Hello", "hello"),
    ("(.*)([0-9])", "room 7", "7 rooms"),
    ("\\b[a-z]{3}\\b", "cat", "cats"),
    ("(([0-9])|(dog)){2,}", "4dog", "4"),
])
def test_plain_dsl_semantics(rx, yes, no):
    # Hand-written expectations: the DSL's plain part means what python `re` means.
    assert automata.matches(rx, yes) and not automata.matches(rx, no)


@pytest.mark.parametrize("bad", ["((dog)", "dog)", "(a){x}", "*a", "a&", "~", "a||b"])
def test_malformed_dsl_is_rejected(bad):
    with pytest.raises(regex_dsl.RegexSyntaxError):
        regex_dsl.parse(bad)


# --- sql ------------------------------------------------------------------------------

def test_every_sql_query_executes_on_its_written_db(tmp_path):
    recs = sql.generate(600, 4, out_dir=tmp_path)
    cons = {}
    for r in recs:
        path = tmp_path / r["db_path"]
        assert path.is_file(), r["db_path"]
        con = cons.setdefault(path, sqlite3.connect(path))
        con.execute(r["views"][1]).fetchall()
        # The English names the table the SQL reads from (plural, or singular "every x").
        table = re.search(r"FROM (\w+)", r["views"][1]).group(1)
        assert table in r["views"][0] or sql.singular(table) in r["views"][0], r["views"]
    assert len(cons) > 1


# --- arithmetic ------------------------------------------------------------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}


def _eval(expr: str, names: dict) -> Fraction:
    """Exact rational evaluation of + - * / over integers and names; nothing else allowed."""
    def ev(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.Name):
            return Fraction(names[node.id])
        raise ValueError(ast.dump(node))
    return ev(ast.parse(expr, mode="eval").body)


def test_arithmetic_answers_are_exact():
    for r in arithmetic.generate(2000, 5):
        problem, solution = r["views"]
        value = _eval(r["formula"], r["numbers"])
        assert value.denominator == 1 and value >= 0, r
        assert r["answer"] == value
        assert solution.splitlines()[-1] == f"#### {r['answer']}"
        # Every stored number is stated in the problem, so the formula is grounded in it.
        stated = {int(x) for x in re.findall(r"\d+", problem)}
        assert set(r["numbers"].values()) <= stated, r
        # Every calculator annotation is arithmetically right.
        for expr, res in re.findall(r"<<([^=>]+)=(\d+)>>", solution):
            assert _eval(expr, {}) == int(res), expr


# --- paraphrase ------------------------------------------------------------------------

@pytest.mark.parametrize("n_views", [2, 3, 4, 5, 6])
def test_paraphrase_groups_have_n_distinct_views(n_views):
    recs = paraphrase.generate(300, 6, n_views=n_views)
    assert all(len(set(r["views"])) == len(r["views"]) == n_views for r in recs)
    assert len({r["meaning"] for r in recs}) == 300


def test_paraphrase_split_shares_no_meaning():
    train, test = paraphrase.split(300, 100, 2, n_views=2)
    assert not {r["meaning"] for r in train} & {r["meaning"] for r in test}


@pytest.mark.parametrize("n_views", [1, 7])
def test_paraphrase_rejects_bad_view_count(n_views):
    with pytest.raises(ValueError, match="n_views"):
        paraphrase.generate(3, 0, n_views=n_views)


# --- CLI -------------------------------------------------------------------------------

def _cli():
    spec = importlib.util.spec_from_file_location(
        "generate_data", os.path.join(ROOT, "tools", "generate_data.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_cli_writes_train_test_and_dbs(tmp_path, capsys):
    out = tmp_path / "sql"
    assert _cli().main(["--task", "sql", "--n", "120", "--test", "30", "--seed", "2",
                        "--out", str(out)]) == 0
    train, test = _read(out / "train.jsonl"), _read(out / "test.jsonl")
    assert (len(train), len(test)) == (120, 30)
    for r in train + test:
        sqlite3.connect(out / r["db_path"]).execute(r["views"][1]).fetchall()
    assert "train.jsonl: 120 records" in capsys.readouterr().out


def test_cli_paraphrase_views_and_bad_args(tmp_path):
    cli = _cli()
    out = tmp_path / "p"
    assert cli.main(["--task", "paraphrase", "--n", "10", "--views", "3", "--out", str(out)]) == 0
    assert [len(r["views"]) for r in _read(out / "train.jsonl")] == [3] * 10
    assert not (out / "test.jsonl").exists()
    for bad in (["--task", "regex", "--n", "5", "--views", "3"],
                ["--task", "paraphrase", "--n", "5", "--views", "9"],
                ["--task", "nope", "--n", "5"], ["--task", "regex", "--n", "0"]):
        with pytest.raises(SystemExit):
            cli.main([*bad, "--out", str(tmp_path / "x")])
