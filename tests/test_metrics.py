"""Model-free metrics: regex language equality (checked against python `re` and a brute-force
span matcher), SQL execution accuracy, numbers, labels, and the tools/evaluate.py CLI."""

import itertools
import json
import random
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from megajepa.eval import automata, regex_dsl
from megajepa.eval.metrics import MetricInputError, extract_number, has_top_level_order_by, score

ROOT = Path(__file__).resolve().parents[1]
SYNTH_TEST = ROOT.parent / "shared" / "datasets" / "llm-jepa" / "synth_test.jsonl"


def strings(alphabet: str, max_len: int):
    for n in range(max_len + 1):
        for t in itertools.product(alphabet, repeat=n):
            yield "".join(t)


# ---- independent reference: span semantics of docs/regex_dsl.md, by brute force -------------
def _is_word(w: str, i: int) -> bool:
    return 0 <= i < len(w) and (w[i].isalnum() or w[i] == "_")


def spans(node, w: str, i: int) -> set[int]:
    """End positions j such that `node` matches w[i:j] (assertions see all of w)."""
    if isinstance(node, regex_dsl.CharSet):
        return {i + 1} if i < len(w) and node.mask >> (ord(w[i]) - 32) & 1 else set()
    if isinstance(node, regex_dsl.Epsilon):
        return {i}
    if isinstance(node, regex_dsl.Boundary):
        return {i} if _is_word(w, i - 1) != _is_word(w, i) else set()
    if isinstance(node, regex_dsl.Concat):
        ends = {i}
        for item in node.items:
            ends = {k for j in ends for k in spans(item, w, j)}
        return ends
    if isinstance(node, regex_dsl.Union):
        return set().union(*(spans(item, w, i) for item in node.items))
    if isinstance(node, regex_dsl.Inter):
        return set.intersection(*(spans(item, w, i) for item in node.items))
    if isinstance(node, regex_dsl.Compl):
        return set(range(i, len(w) + 1)) - spans(node.item, w, i)
    hi = node.hi if node.hi is not None else node.lo + len(w) + 2  # positions saturate by then
    level, out = {i}, set()
    for k in range(hi + 1):
        if k >= node.lo:
            out |= level
        level = {e for j in level for e in spans(node.item, w, j)}
    return out


def brute_matches(text: str, w: str) -> bool:
    return len(w) in spans(regex_dsl.parse(text), w, 0)


# ---- random regexes, written both in the DSL and for python `re` ------------------------------
def random_regex(rng: random.Random, depth: int, extended: bool) -> tuple[str, str]:
    atoms = ["a", "b", "[ab]", ".", "\\b", "()"]
    if depth == 0 or rng.random() < 0.3:
        a = rng.choice(atoms)
        return a, a
    kind = rng.choice(["cat", "or", "rep", "rep"] + (["and", "not"] if extended else []))
    x, px = random_regex(rng, depth - 1, extended)
    if kind in ("cat", "or", "and"):
        y, py = random_regex(rng, depth - 1, extended)
        op = {"cat": "", "or": "|", "and": "&"}[kind]
        return f"({x}){op}({y})", f"({px}){op}({py})"
    if kind == "not":
        return f"~({x})", ""
    suffix = rng.choice(["*", "+", "?", "{2}", "{1,}", "{0,2}", "{1,3}"])
    return f"({x}){suffix}", f"({px}){suffix}"


@pytest.mark.slow
def test_regex_membership_matches_python_re():
    rng = random.Random(0)
    words = list(strings("ab_ ", 4))
    for _ in range(150):
        dsl_text, py_text = random_regex(rng, 3, extended=False)
        pattern = re.compile(py_text)
        for w in words:
            assert automata.matches(dsl_text, w) == bool(pattern.fullmatch(w)), (dsl_text, w)


def test_regex_verdicts_agree_with_python_re():
    rng = random.Random(1)
    words = list(strings("ab ", 4))
    seen = {True: 0, False: 0}
    for _ in range(300):
        (x, px), (y, py) = random_regex(rng, 2, False), random_regex(rng, 2, False)
        if rng.random() < 0.3:  # an equal-language rewrite, to exercise the "equal" side
            y, py = f"(({x})|({x}))(())", f"(({px})|({px}))(())"
        verdict = automata.compare(x, y)
        rx, ry = re.compile(px), re.compile(py)
        if verdict.equal:
            assert all(bool(rx.fullmatch(w)) == bool(ry.fullmatch(w)) for w in words), (x, y)
        else:  # the witness must separate the two languages under python's semantics
            w = verdict.witness
            assert bool(rx.fullmatch(w)) != bool(ry.fullmatch(w)), (x, y, w)
        seen[verdict.equal] += 1
    assert seen[True] > 50 and seen[False] > 50


def test_intersection_complement_boundary_match_brute_force():
    rng = random.Random(2)
    words = list(strings("ab ", 3))
    for _ in range(150):
        text, _ = random_regex(rng, 3, extended=True)
        for w in words:
            assert automata.matches(text, w) == brute_matches(text, w), (text, w)


EQUAL = [
    ("(a|b)*", "(a*b*)*"),
    ("~(.*a.*)", "[^a]*"),
    ("~(.*a.*)", "(~(.*a.*))&(.*)"),
    ("[a-z]&[0-9]", "~(.*)"),  # disjoint intersection is the empty language
    ("(dog)&(truck)", "[A-Z]&[a-z]"),
    ("a{2,}", "aa(a)*"),
    ("a{2,4}", "aa|aaa|aaaa"),
    ("(x){0,}", "x*"),
    ("\\b\\b", "\\b"),
    ("\\bdog\\b", "dog"),  # the whole line is the word: both boundaries always hold
    (".*\\bdog\\b.*", "(dog|.*[^A-Za-z0-9_]dog)([^A-Za-z0-9_].*)?"),
    ("~(~(a|b))", "[ab]"),
    ("([AEIOUaeiou])&([a-z])", "[aeiou]"),
    ("~(.*)|a", "a"),
    ("[0-9].*&.*[0-9]", "[0-9]|[0-9].*[0-9]"),
]
UNEQUAL = [
    (".*\\bdog\\b.*", ".*dog.*"),
    ("a{2,}", "a{2,5}"),
    ("~(.*a.*)", "[b-z]*"),
    ("(a|b)*", "(ab)*"),
    ("[a-z]&[0-9]", "()"),  # empty language vs the empty string
    ("\\b", "()"),
    ("[A-Za-z]", "[A-Z]"),
    ("(dog){3,}", "(dog){3}"),
]


@pytest.mark.parametrize("a,b", EQUAL)
def test_equal_pairs(a, b):
    assert automata.equivalent(a, b) is True and automata.equivalent(b, a) is True


@pytest.mark.parametrize("a,b", UNEQUAL)
def test_unequal_pairs_with_checked_witness(a, b):
    verdict = automata.compare(a, b)
    assert verdict.equal is False
    assert brute_matches(a, verdict.witness) != brute_matches(b, verdict.witness)


def test_state_limit_is_undecided_not_wrong_answer():
    assert automata.compare("(a|b)*a(a|b){12}", "(a|b)*b(a|b){12}", max_states=50).equal is None
    result = score("regex", [{"prediction": "(a|b)*a(a|b){12}", "reference": "(a|b)*b(a|b){12}"}], max_states=50)
    assert result["undecided"] == 1 and result["correct"] == 0


@pytest.mark.parametrize("bad", ["", "(", "a)", "a{3,2}", "\\d", "[a-", "*a", "a|", "~", "a{99999}", "é"])
def test_unparsable_prediction_is_counted_not_raised(bad):
    result = score("regex", [{"prediction": bad, "reference": "a"}, {"prediction": "(a)", "reference": "a"}])
    assert (result["unparsable"], result["correct"], result["accuracy"]) == (1, 1, 0.5)


def test_degenerate_predictions_do_not_crash():
    rows = [{"prediction": "(" * 2000 + "a" + ")" * 2000, "reference": "a"},
            {"prediction": "(a{1000}){1000}", "reference": "a"},
            {"prediction": "a?" * 3000, "reference": "a"}]
    result = score("regex", rows)
    assert result["correct"] == 0 and result["unparsable"] + result["undecided"] >= 2


def test_unparsable_reference_names_the_row():
    with pytest.raises(MetricInputError) as e:
        score("regex", [{"prediction": "a", "reference": "a"}, {"prediction": "a", "reference": "(("}])
    assert (e.value.index, e.value.field) == (1, "reference")


# ---- sql -------------------------------------------------------------------------------
@pytest.fixture
def db(tmp_path):
    conn = sqlite3.connect(tmp_path / "pets.sqlite")
    conn.execute("CREATE TABLE pet (name TEXT, age INT)")
    conn.executemany("INSERT INTO pet VALUES (?, ?)", [("rex", 3), ("tom", 1), ("ann", 2), ("tom", 1)])
    conn.commit()
    conn.close()
    return tmp_path


def sql_rows(*pairs):
    return [{"prediction": p, "reference": g, "db_path": "pets.sqlite"} for p, g in pairs]


def test_sql_row_order_matters_only_with_top_level_order_by(db):
    desc, asc = "SELECT name FROM pet ORDER BY age DESC", "SELECT name FROM pet ORDER BY age"
    result = score("sql", sql_rows((desc, "SELECT name FROM pet"), (desc, asc)), base_dir=db)
    assert [e["correct"] for e in result["per_example"]] == [True, False]
    sub = "SELECT name FROM (SELECT * FROM pet ORDER BY age)"
    assert has_top_level_order_by(asc) and not has_top_level_order_by(sub)
    assert not has_top_level_order_by("SELECT 'order by' -- order by\n")


def test_sql_compares_multisets(db):
    result = score("sql", sql_rows(("SELECT DISTINCT name FROM pet", "SELECT name FROM pet")), base_dir=db)
    assert result["correct"] == 0  # duplicate rows count


def test_sql_erroring_prediction_never_matches_empty_gold(db):
    empty_gold = "SELECT name FROM pet WHERE age > 99"
    result = score("sql", sql_rows(("SELECT nope FROM pet", empty_gold), ("DROP TABLE pet", empty_gold)), base_dir=db)
    assert (result["correct"], result["error"], result["errors"]) == (0, 2, 2)
    assert score("sql", sql_rows(("SELECT count(*) FROM pet", "SELECT 4")), base_dir=db)["correct"] == 1


def test_sql_timeout(db):
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    result = score("sql", sql_rows((forever, "SELECT 1")), base_dir=db, timeout=0.2)
    assert (result["timeout"], result["errors"], result["correct"]) == (1, 1, 0)


def test_sql_missing_database_names_the_row(db):
    rows = sql_rows(("SELECT 1", "SELECT 1")) + [{"prediction": "x", "reference": "x", "db_path": "nope.db"}]
    with pytest.raises(MetricInputError) as e:
        score("sql", rows, base_dir=db)
    assert (e.value.index, e.value.field) == (1, "db_path")


# ---- numeric, label, exact, prefix ---------------------------------------------------------
@pytest.mark.parametrize(
    "text,value",
    [("so she pays $1,234.50 in total.\n#### 1,234.5", 1234.5), ("#### 72", 72), ("it is 3, then 5.", 5),
     ("-2.5 degrees", -2.5), ("1,000,000 people", 1e6), ("no number", None), ("#### 7 (was 8)", 7)],
)
def test_extract_number(text, value):
    assert extract_number(text) == value


def test_numeric_metric():
    rows = [{"prediction": "The answer is 1,234.", "reference": "... #### 1234"},
            {"prediction": "#### 0.30000000001", "reference": "#### 0.3"},
            {"prediction": "#### 5", "reference": "#### 6"},
            {"prediction": "I don't know", "reference": "#### 6"}]
    result = score("numeric", rows)
    assert [e["correct"] for e in result["per_example"]] == [True, True, False, False]
    assert result["unparsable"] == 1


def test_label_metric():
    rows = [{"prediction": "Good. A fine film", "reference": "Good"},
            {"prediction": "bad", "reference": "Good"},
            {"prediction": "Meh", "reference": "Bad"}]
    result = score("label", rows)
    assert (result["correct"], result["unparsable"]) == (1, 1)
    assert score("label", rows, labels="good,bad,meh")["unparsable"] == 0
    with pytest.raises(MetricInputError):
        score("label", rows, labels=["positive", "negative"])


def test_exact_and_prefix():
    rows = [{"prediction": " a.*b \n", "reference": "a.*b"}, {"prediction": "a.*b c", "reference": "a.*b"}]
    assert [e["correct"] for e in score("exact", rows)["per_example"]] == [True, False]
    assert score("prefix", rows)["correct"] == 2


def test_missing_field_names_the_row():
    with pytest.raises(MetricInputError) as e:
        score("exact", [{"prediction": "a", "reference": "a"}, {"prediction": "a"}])
    assert (e.value.index, e.value.field) == (1, "reference")


# ---- CLI ---------------------------------------------------------------------------------
def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "evaluate.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_cli_scores_sql_end_to_end(db):
    data = db / "preds.jsonl"
    rows = sql_rows(("SELECT name FROM pet", "SELECT name FROM pet"), ("SELECT bad", "SELECT 1"))
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    proc = run_cli("score", "--metric", "sql", "--input", str(data), "--json", str(db / "out.json"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads((db / "out.json").read_text())
    assert (out["n"], out["correct"], out["accuracy"], out["errors"]) == (2, 1, 0.5, 1)
    assert "accuracy 0.5000" in proc.stdout


def test_cli_bad_input_exit_2(tmp_path):
    out = str(tmp_path / "o.json")
    missing = run_cli("score", "--metric", "exact", "--input", str(tmp_path / "none.jsonl"), "--json", out)
    assert missing.returncode == 2 and "none.jsonl" in missing.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prediction": "a", "reference": "a"}\n{"prediction": \n')
    proc = run_cli("score", "--metric", "exact", "--input", str(bad), "--json", out)
    assert proc.returncode == 2 and "bad.jsonl:2" in proc.stderr and "invalid JSON" in proc.stderr
    bad.write_text('{"prediction": "a", "reference": "a"}\n\n{"prediction": "a"}\n')
    proc = run_cli("score", "--metric", "exact", "--input", str(bad), "--json", out)
    assert proc.returncode == 2 and "bad.jsonl:3" in proc.stderr and "'reference'" in proc.stderr
    bad.write_text('{"prediction": "a", "reference": "(("}\n')
    proc = run_cli("score", "--metric", "regex", "--input", str(bad), "--json", out)
    assert proc.returncode == 2 and "bad.jsonl:1" in proc.stderr and "'reference'" in proc.stderr


@pytest.mark.slow
def test_cli_generate_dispatches_to_the_generate_module():
    proc = run_cli("generate", "--help")
    assert proc.returncode == 0 and "--input" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.skipif(not SYNTH_TEST.exists(), reason="../shared/datasets/llm-jepa absent")
def test_synth_gold_regexes_parse_and_self_compare():
    golds = [json.loads(line)["messages"][-1]["content"] for line in SYNTH_TEST.open()][:500]
    result = score("regex", [{"prediction": g, "reference": g} for g in golds])
    assert result["correct"] == len(golds)
