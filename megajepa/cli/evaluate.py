"""Evaluation CLI.

  score:    megajepa-evaluate score --metric M --input FILE --json OUT [--labels a,b]
            FILE holds JSON lines with `prediction`, `reference` (sql: also `db_path`, relative
            to FILE's folder unless absolute); OUT gets accuracy and counts. Exit 2 on bad input.
  generate: megajepa-evaluate generate --model DIR --input FILE ... (megajepa.eval.generate)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from megajepa.eval.metrics import METRICS, MetricInputError, score


class InputError(Exception):
    pass


def read_rows(path: Path, metric: str) -> tuple[list[dict], list[int]]:
    """Rows and their 1-based line numbers; InputError naming file, line and field."""
    if not path.is_file():
        raise InputError(f"{path}: no such input file")
    needed = ("prediction", "reference") + (("db_path",) if metric == "sql" else ())
    rows, lines = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for field in needed:
                if field not in row:
                    raise InputError(f"{path}:{lineno}: missing field {field!r}")
                if not isinstance(row[field], str):
                    raise InputError(f"{path}:{lineno}: field {field!r} must be a string")
            rows.append(row)
            lines.append(lineno)
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows, lines


def cmd_score(args) -> int:
    path = Path(args.input)
    rows, lines = read_rows(path, args.metric)
    opts = {"labels": args.labels} if args.labels else {}
    if args.metric == "sql":
        opts.update(base_dir=path.parent, timeout=args.timeout)
    try:
        result = score(args.metric, rows, **opts)
    except MetricInputError as e:
        raise InputError(f"{path}:{lines[e.index]}: field {e.field!r}: {e.msg}") from None
    if not args.per_example:
        result.pop("per_example")
    result["input"] = str(path)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{args.metric}: accuracy {result['accuracy']:.4f} ({result['correct']}/{result['n']}), "
        f"unparsable {result['unparsable']}, undecided {result['undecided']}, "
        f"errors {result['errors']} (timeouts {result['timeout']}), gold errors {result['gold_error']}"
    )
    return 0


def cmd_generate(args) -> int:
    from megajepa.eval.generate import main as generate  # loads torch: only when a model is needed

    return generate(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="score predictions against references (no model)")
    s.add_argument("--metric", required=True, choices=METRICS)
    s.add_argument("--input", required=True, help="JSON lines: prediction, reference[, db_path]")
    s.add_argument("--json", required=True, help="where to write the metrics JSON")
    s.add_argument("--labels", help="label metric: comma-separated label set (default: from references)")
    s.add_argument("--timeout", type=float, default=5.0, help="sql metric: seconds per query")
    s.add_argument("--per-example", action="store_true", help="also write per-example verdicts")
    s.set_defaults(func=cmd_score)
    g = sub.add_parser("generate", help="generate predictions with a model (megajepa.eval.generate)", add_help=False)
    g.set_defaults(func=cmd_generate)  # every further argument goes to megajepa.eval.generate
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "generate" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        return args.func(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
