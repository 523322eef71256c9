"""Write a synthetic multi-view dataset as JSON lines (deterministic by seed, no downloads).

    megajepa-generate-data --task regex --n 20000 --test 1000 --seed 0 --out data/regex
    megajepa-generate-data --task sql --n 5000 --seed 1 --out data/sql   # + dbs/*.sqlite
    megajepa-generate-data --task paraphrase --n 10000 --views 3 --seed 2 --out data/para

Writes DIR/train.jsonl (and DIR/test.jsonl with --test N; test shares no view with train).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from megajepa.data import synthetic


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True, choices=sorted(synthetic.TASKS))
    p.add_argument("--n", type=int, required=True, help="number of train records")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--test", type=int, default=0, help="number of test records (0: none)")
    p.add_argument("--views", type=int, default=None,
                   help="views per paraphrase group, 2..6 (paraphrase only; default 4)")
    args = p.parse_args(argv)
    # Check everything before any generation or writing starts.
    if args.n < 1:
        p.error(f"--n must be >= 1, got {args.n}")
    if args.test < 0:
        p.error(f"--test must be >= 0, got {args.test}")
    if args.views is not None:
        if args.task != "paraphrase":
            p.error("--views applies only to --task paraphrase")
        if not 2 <= args.views <= 6:
            p.error(f"--views must be in 2..6, got {args.views}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out!r} exists and is not a directory")
    return args


def write_jsonl(path: str, records: list[dict]) -> None:
    # Write then rename, so an interrupted run never leaves a truncated file behind.
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    options = {"n_views": args.views} if args.views is not None else {}
    try:
        if args.test:
            train, test = synthetic.split(args.task, args.n, args.test, args.seed,
                                          out_dir=args.out, **options)
        else:
            train, test = synthetic.generate(args.task, args.n, args.seed,
                                             out_dir=args.out, **options), []
    except ValueError as e:  # e.g. the grammar cannot give this many distinct records
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = {"train.jsonl": train, **({"test.jsonl": test} if args.test else {})}
    for name, recs in files.items():
        write_jsonl(os.path.join(args.out, name), recs)
    words = [len(v.split()) for r in train for v in r["views"]]
    print(f"task={args.task} seed={args.seed} out={args.out}")
    for name, recs in files.items():
        print(f"  {name}: {len(recs)} records")
    print(f"  views/record: {len(train[0]['views'])}  words/view: mean "
          f"{sum(words) / len(words):.1f} max {max(words)}")
    if args.task in synthetic.NEEDS_OUT_DIR:
        print(f"  databases: {len({r['db_path'] for r in train + test})} used, "
              f"under {os.path.join(args.out, 'dbs')}")
    print(f"  example: {json.dumps(train[0], ensure_ascii=False)[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
