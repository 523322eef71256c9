"""Model-free scoring of (prediction, reference) rows: exact, prefix, regex, sql, numeric, label.

`score(metric, rows, **opts)` validates every row first (MetricInputError names the row and
field), then judges each row to (correct, status). Status is "ok" or the reason the prediction
could not be judged normally; such rows are wrong and counted by status:
  unparsable (regex / number / label not found), undecided (regex automaton limit),
  error and timeout (SQL prediction failed; `errors` counts both), gold_error (gold SQL failed).
"""

from __future__ import annotations

import math
import re
import sqlite3
import string
import time
from collections import Counter
from pathlib import Path

from megajepa.eval import automata, regex_dsl

METRICS = ("exact", "prefix", "regex", "sql", "numeric", "label")
_STATUSES = ("unparsable", "undecided", "error", "timeout", "gold_error")


class MetricInputError(ValueError):
    """A row that cannot be scored at all; `index` is its position in `rows`, `field` the key."""

    def __init__(self, index: int, field: str, msg: str):
        super().__init__(f"row {index}: field {field!r}: {msg}")
        self.index, self.field, self.msg = index, field, msg


def score(metric: str, rows: list[dict], **opts) -> dict:
    """Accuracy and counts over `rows` (dicts with `prediction`, `reference`, sql: `db_path`).

    opts: regex `max_states`; sql `base_dir` (for relative db_path), `timeout` seconds;
    numeric `tol`; label `labels` (iterable or comma-separated; default: inferred from refs).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    for i, row in enumerate(rows):
        for field in ("prediction", "reference") + (("db_path",) if metric == "sql" else ()):
            if not isinstance(row, dict) or field not in row:
                raise MetricInputError(i, field, "missing")
            if not isinstance(row[field], str):
                raise MetricInputError(i, field, f"must be a string, got {type(row[field]).__name__}")
    judge = _JUDGES[metric](rows, **opts)
    per_example = []
    for row in rows:
        correct, status = judge(row)
        per_example.append({"correct": correct, "status": status})
    if hasattr(judge, "close"):
        judge.close()
    counts = Counter(e["status"] for e in per_example)
    n, correct = len(rows), sum(e["correct"] for e in per_example)
    return {
        "metric": metric,
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        **{s: counts[s] for s in _STATUSES},
        "errors": counts["error"] + counts["timeout"],
        "per_example": per_example,
    }


# ---- string metrics ---------------------------------------------------------------------
def _exact(rows, **_):
    return lambda r: (r["prediction"].strip() == r["reference"].strip(), "ok")


def _prefix(rows, **_):
    return lambda r: (r["prediction"].strip().startswith(r["reference"].strip()), "ok")


# ---- regex: language equality ---------------------------------------------------------------
def _regex(rows, max_states: int = 20000, **_):
    golds = {}
    for i, r in enumerate(rows):
        try:
            golds[r["reference"]] = regex_dsl.parse(r["reference"])
        except regex_dsl.RegexSyntaxError as e:
            raise MetricInputError(i, "reference", f"not a DSL regex: {e}") from None

    def judge(r):
        try:
            pred = regex_dsl.parse(r["prediction"])
        except regex_dsl.RegexSyntaxError:
            return False, "unparsable"
        equal = automata.compare(pred, golds[r["reference"]], max_states=max_states).equal
        return (False, "undecided") if equal is None else (equal, "ok")

    return judge


# ---- numeric: GSM8K-style final answers ----------------------------------------------------
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|[-+]?\.\d+")


def extract_number(text: str) -> float | None:
    """The first number after the last `####`, else the last number; thousands commas allowed."""
    if "####" in text:
        found = _NUMBER.search(text.rsplit("####", 1)[1])
    else:
        found = None
        for found in _NUMBER.finditer(text):
            pass
    return float(found.group().replace(",", "")) if found else None


def _numeric(rows, tol: float = 1e-6, **_):
    golds = {}
    for i, r in enumerate(rows):
        golds[r["reference"]] = extract_number(r["reference"])
        if golds[r["reference"]] is None:
            raise MetricInputError(i, "reference", "contains no number")

    def judge(r):
        pred = extract_number(r["prediction"])
        if pred is None:
            return False, "unparsable"
        return math.isclose(pred, golds[r["reference"]], rel_tol=tol, abs_tol=tol), "ok"

    return judge


# ---- label: classification by first word -----------------------------------------------------
def first_word(text: str) -> str:
    """Lower-cased first whitespace-separated word, surrounding punctuation stripped."""
    words = text.split()
    return words[0].strip(string.punctuation).lower() if words else ""


def _label(rows, labels=None, **_):
    if isinstance(labels, str):
        labels = labels.split(",")
    given = labels is not None
    label_set = {w.strip().lower() for w in labels} if given else {first_word(r["reference"]) for r in rows}
    label_set.discard("")
    for i, r in enumerate(rows):
        gold = first_word(r["reference"])
        if not gold or gold not in label_set:
            raise MetricInputError(i, "reference", f"label {gold!r} not in {sorted(label_set)}")

    def judge(r):
        pred = first_word(r["prediction"])
        if pred not in label_set:
            return False, "unparsable"
        return pred == first_word(r["reference"]), "ok"

    return judge


# ---- sql: execution accuracy --------------------------------------------------------------
def has_top_level_order_by(sql: str) -> bool:
    """ORDER BY outside parentheses, string literals, quoted names and comments."""
    skeleton, depth, i = [], 0, 0
    closers = {"'": "'", '"': '"', "`": "`", "[": "]"}
    while i < len(sql):
        c = sql[i]
        if c in closers:  # skip a literal / quoted identifier
            end = sql.find(closers[c], i + 1)
            i = len(sql) if end < 0 else end + 1
            skeleton.append(" ")
            continue
        if sql.startswith("--", i) or sql.startswith("/*", i):
            end = sql.find("\n" if c == "-" else "*/", i + 2)
            i = len(sql) if end < 0 else end + 2
            skeleton.append(" ")
            continue
        depth += c == "("
        skeleton.append(c if depth == 0 else " ")
        depth -= c == ")" and depth > 0
        i += 1
    return re.search(r"\border\s+by\b", "".join(skeleton), re.IGNORECASE) is not None


class _Timeout(Exception):
    pass


def _deny_attach(action, *_):
    return sqlite3.SQLITE_DENY if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) else sqlite3.SQLITE_OK


def _normalise(value):
    # floats from different but equivalent queries (AVG vs SUM/COUNT) differ in the last bits
    return float(f"{value:.10g}") if isinstance(value, float) else value


def run_query(conn: sqlite3.Connection, sql: str, timeout: float) -> list[tuple]:
    """All result rows; _Timeout past `timeout` seconds, sqlite3.Error if the query fails."""
    deadline = time.monotonic() + timeout
    expired = []

    def progress():
        if time.monotonic() > deadline:
            expired.append(True)
            return 1
        return 0

    conn.set_progress_handler(progress, 1000)
    try:
        return [tuple(_normalise(v) for v in row) for row in conn.execute(sql).fetchall()]
    except sqlite3.Error:
        if expired:
            raise _Timeout() from None
        raise
    finally:
        conn.set_progress_handler(None, 0)


def _sql(rows, base_dir: str | Path = ".", timeout: float = 5.0, **_):
    for i, r in enumerate(rows):
        if not (Path(base_dir) / r["db_path"]).is_file():
            raise MetricInputError(i, "db_path", f"no database file at {Path(base_dir) / r['db_path']}")
    conns: dict[Path, sqlite3.Connection] = {}

    def connect(path: Path) -> sqlite3.Connection:
        if path not in conns:  # read-only: a prediction must not change the database
            conns[path] = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
            conns[path].set_authorizer(_deny_attach)
        return conns[path]

    def judge(r):
        conn = connect((Path(base_dir) / r["db_path"]).resolve())
        try:
            gold = run_query(conn, r["reference"], timeout)
        except (sqlite3.Error, sqlite3.Warning, _Timeout, ValueError):
            return False, "gold_error"
        try:
            pred = run_query(conn, r["prediction"], timeout)
        except _Timeout:
            return False, "timeout"
        except (sqlite3.Error, sqlite3.Warning, ValueError):  # ValueError: a NUL in the text
            return False, "error"
        if has_top_level_order_by(r["reference"]):
            return pred == gold, "ok"
        return Counter(pred) == Counter(gold), "ok"

    judge.close = lambda: [c.close() for c in conns.values()]
    return judge


_JUDGES = {
    "exact": _exact,
    "prefix": _prefix,
    "regex": _regex,
    "sql": _sql,
    "numeric": _numeric,
    "label": _label,
}
