"""English <-> SQL over generated sqlite databases (Spider-like, from scratch).

Each database holds a parent/child table pair with a random subset of columns and random
rows; queries use values that occur in the rows, and every query is executed against its
database during generation (a failure is a generator bug and raises).
Record: {"views": [english, sql], "task": "sql", "db_path": "dbs/db_000.sqlite"}.
"""
from __future__ import annotations

import os
import random
import sqlite3

from megajepa.data.synthetic import _common

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
         "mallory", "oscar", "peggy", "rupert", "sybil", "trent", "victor", "wendy"]
CITIES = ["paris", "berlin", "tokyo", "lima", "cairo", "oslo", "austin", "delhi", "quito"]
# Column specs: name -> list of text values, or (lo, hi) integer range.
PARENTS = {
    "departments": {"name": ["sales", "research", "legal", "support", "finance", "design"],
                    "building": ["north", "south", "east", "west", "central"],
                    "budget": (10, 900)},
    "authors": {"name": NAMES, "country": ["france", "peru", "japan", "egypt", "norway"],
                "born": (1900, 2000)},
    "customers": {"name": NAMES, "city": CITIES, "age": (18, 90)},
    "countries": {"name": ["aland", "borduria", "cascadia", "elbonia", "freedonia", "genovia"],
                  "continent": ["europe", "asia", "africa", "america", "oceania"],
                  "population": (1, 500)},
    "teams": {"name": ["lions", "eagles", "sharks", "wolves", "bears", "hawks"],
              "city": CITIES, "founded": (1850, 2020)},
}
CHILDREN = {
    "departments": ("employees", {"name": NAMES, "title": ["clerk", "manager", "engineer",
                    "analyst"], "salary": (30, 200), "age": (20, 65)}),
    "authors": ("books", {"title": ["dune", "emma", "ulysses", "beloved", "walden", "ivanhoe"],
                "genre": ["drama", "poetry", "mystery", "history"], "pages": (50, 900),
                "year": (1950, 2024)}),
    "customers": ("orders", {"product": ["lamp", "desk", "chair", "phone", "kettle"],
                  "status": ["open", "shipped", "returned"], "amount": (1, 999),
                  "quantity": (1, 20)}),
    "countries": ("cities", {"name": CITIES, "climate": ["dry", "humid", "cold", "mild"],
                  "population": (1, 900), "area": (10, 5000)}),
    "teams": ("players", {"name": NAMES, "position": ["keeper", "defender", "striker"],
              "goals": (0, 60), "age": (17, 40)}),
}
AGGS = [("average", "AVG"), ("maximum", "MAX"), ("minimum", "MIN"), ("total", "SUM")]
OPS = [("greater than", ">"), ("less than", "<"), ("at least", ">="), ("at most", "<="),
       ("equal to", "=")]


def singular(table: str) -> str:
    return table[:-3] + "y" if table.endswith("ies") else table[:-1]


def _make_table(rng: random.Random, spec: dict) -> dict:
    """Keep a random column subset, always one text and one integer column."""
    text = [c for c, v in spec.items() if isinstance(v, list)]
    num = [c for c, v in spec.items() if isinstance(v, tuple)]
    keep = {rng.choice(text), rng.choice(num)}
    keep |= {c for c in spec if rng.random() < 0.6}
    return {c: spec[c] for c in spec if c in keep}


def make_db(rng: random.Random) -> dict:
    """A schema (parent, child with `<parent>_id`) plus rows, as plain python data."""
    parent = rng.choice(sorted(PARENTS))
    child, child_spec = CHILDREN[parent]
    db = {"parent": parent, "child": child, "fk": singular(parent) + "_id", "tables": {}}
    for table, spec in ((parent, PARENTS[parent]), (child, child_spec)):
        cols = _make_table(rng, spec)
        n_rows = rng.randint(4, 12)
        rows = []
        for i in range(n_rows):
            row = {"id": i + 1}
            for c, v in cols.items():
                row[c] = rng.choice(v) if isinstance(v, list) else rng.randint(*v)
            rows.append(row)
        db["tables"][table] = {"cols": cols, "rows": rows}
    n_parent = len(db["tables"][parent]["rows"])
    for row in db["tables"][child]["rows"]:
        row[db["fk"]] = rng.randint(1, n_parent)
    return db


def connect(db: dict, path: str = ":memory:") -> sqlite3.Connection:
    """Materialize `db` in sqlite (in memory for checking, or on disk for the dataset)."""
    con = sqlite3.connect(path)
    for table, t in db["tables"].items():
        cols = ["id INTEGER PRIMARY KEY"]
        cols += [f"{c} {'TEXT' if isinstance(v, list) else 'INTEGER'}" for c, v in t["cols"].items()]
        if table == db["child"]:
            cols.append(f"{db['fk']} INTEGER REFERENCES {db['parent']}(id)")
        con.execute(f"CREATE TABLE {table} ({', '.join(cols)})")
        names = list(t["rows"][0])
        con.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                        f"({', '.join('?' * len(names))})", [list(r.values()) for r in t["rows"]])
    con.commit()
    return con


def _cols(t: dict, kind) -> list[str]:
    return [c for c, v in t["cols"].items() if isinstance(v, kind)]


def query(rng: random.Random, db: dict) -> tuple[str, str]:
    """One (english, sql) pair over one table of `db`, or a join of both."""
    if rng.random() < 0.2:
        return join_query(rng, db)
    table = rng.choice([db["parent"], db["child"]])
    t = db["tables"][table]
    text, num = _cols(t, list), _cols(t, tuple)
    c, tc, nc = rng.choice(text + num), rng.choice(text), rng.choice(num)
    row = rng.choice(t["rows"])
    tv, nv = row[tc], row[nc]  # values that occur, so most filters select something
    sg = singular(table)
    k = rng.randrange(13)
    if k == 0:
        return f"list the {c} of all {table}", f"SELECT {c} FROM {table}"
    if k == 1:
        return f"how many {table} are there", f"SELECT COUNT(*) FROM {table}"
    if k == 2:
        oe, op = rng.choice(OPS)
        return (f"how many {table} have a {nc} {oe} {nv}",
                f"SELECT COUNT(*) FROM {table} WHERE {nc} {op} {nv}")
    if k == 3:
        ae, ag = rng.choice(AGGS)
        return f"what is the {ae} {nc} of all {table}", f"SELECT {ag}({nc}) FROM {table}"
    if k == 4:
        ae, ag = rng.choice(AGGS)
        return (f"what is the {ae} {nc} of {table} whose {tc} is {tv}",
                f"SELECT {ag}({nc}) FROM {table} WHERE {tc} = '{tv}'")
    if k == 5:
        return (f"list the {c} of every {sg} whose {tc} is {tv}",
                f"SELECT {c} FROM {table} WHERE {tc} = '{tv}'")
    if k == 6:
        de, d = rng.choice([("descending", "DESC"), ("ascending", "ASC")])
        return (f"list the {c} of {table} sorted by {nc} in {de} order",
                f"SELECT {c} FROM {table} ORDER BY {nc} {d}")
    if k == 7:
        n, (he, d) = rng.randint(1, 5), rng.choice([("highest", "DESC"), ("lowest", "ASC")])
        return (f"show the {c} of the {n} {table} with the {he} {nc}",
                f"SELECT {c} FROM {table} ORDER BY {nc} {d} LIMIT {n}")
    if k == 8:
        return (f"count the {table} for each {tc}",
                f"SELECT {tc}, COUNT(*) FROM {table} GROUP BY {tc}")
    if k == 9:
        return f"list the different {tc} values of {table}", f"SELECT DISTINCT {tc} FROM {table}"
    if k == 10:
        lo, hi = sorted((nv, rng.choice(t["rows"])[nc]))
        return (f"list the {c} of {table} whose {nc} is between {lo} and {hi}",
                f"SELECT {c} FROM {table} WHERE {nc} BETWEEN {lo} AND {hi}")
    others = sorted({r[tc] for r in t["rows"]} - {tv})
    if k == 11 and others:  # "x or x" reads badly, so the second value must differ
        tv2 = rng.choice(others)
        return (f"list the {c} of {table} whose {tc} is {tv} or {tv2}",
                f"SELECT {c} FROM {table} WHERE {tc} = '{tv}' OR {tc} = '{tv2}'")
    if k == 11:
        return (f"list the {c} of every {sg} whose {tc} is {tv}",
                f"SELECT {c} FROM {table} WHERE {tc} = '{tv}'")
    oe, op = rng.choice(OPS[:2])
    return (f"list the {c} of {table} whose {tc} is {tv} and whose {nc} is {oe} {nv}",
            f"SELECT {c} FROM {table} WHERE {tc} = '{tv}' AND {nc} {op} {nv}")


def join_query(rng: random.Random, db: dict) -> tuple[str, str]:
    """Child rows filtered or grouped by a parent column, through the foreign key."""
    p, ch, fk = db["parent"], db["child"], db["fk"]
    pt, ct = db["tables"][p], db["tables"][ch]
    pc, cc = rng.choice(_cols(pt, list)), rng.choice(list(ct["cols"]))
    on = f"FROM {ch} AS T1 JOIN {p} AS T2 ON T1.{fk} = T2.id"
    if rng.random() < 0.5:
        v = rng.choice(pt["rows"])[pc]
        return (f"list the {cc} of {ch} whose {singular(p)} has {pc} {v}",
                f"SELECT T1.{cc} {on} WHERE T2.{pc} = '{v}'")
    return (f"for each {singular(p)} {pc}, how many {ch} are there",
            f"SELECT T2.{pc}, COUNT(*) {on} GROUP BY T2.{pc}")


def db_rel_path(i: int) -> str:
    return f"dbs/db_{i:03d}.sqlite"


def _build(seed: int, n: int):
    """Databases for a dataset of `n` records (about one per 100) and a checked sampler."""
    rng = random.Random(seed)
    dbs = [make_db(rng) for _ in range(min(200, max(1, n // 100)))]
    cons = [connect(db) for db in dbs]

    def sample(r: random.Random) -> dict:
        i = r.randrange(len(dbs))
        en, sql = query(r, dbs[i])
        try:
            cons[i].execute(sql).fetchall()
        except sqlite3.Error as e:  # a template bug, not bad luck: stop loudly
            raise RuntimeError(f"generated SQL fails on {db_rel_path(i)}: {sql!r}: {e}") from e
        return {"views": [en, sql], "task": "sql", "db_path": db_rel_path(i)}

    return dbs, sample


def write_dbs(dbs: list[dict], out_dir) -> None:
    """Write each database to `out_dir/dbs/db_NNN.sqlite`, replacing stale files."""
    os.makedirs(os.path.join(out_dir, "dbs"), exist_ok=True)
    for i, db in enumerate(dbs):
        path = os.path.join(out_dir, db_rel_path(i))
        if os.path.exists(path):
            os.remove(path)
        connect(db, path).close()


def generate(n: int, seed: int, out_dir=None) -> list[dict]:
    """`n` distinct records; databases are written under `out_dir` when given."""
    dbs, sample = _build(seed, n)
    records = _common.unique_records(sample, n, seed)
    if out_dir is not None:
        write_dbs(dbs, out_dir)
    return records


def split(n_train: int, n_test: int, seed: int, out_dir=None):
    """Train/test over the same databases, sharing no English text and no SQL."""
    dbs, sample = _build(seed, n_train + n_test)
    train, test = _common.split(sample, n_train, n_test, seed)
    if out_dir is not None:
        write_dbs(dbs, out_dir)
    return train, test
