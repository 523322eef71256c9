"""`megajepa-evaluate generate`: greedy predictions for a JSON-lines file of two-view records, scored.

    megajepa-evaluate generate --model RUN_OR_CKPT_OR_HF_DIR --input test.jsonl \
        --output preds.jsonl --json metrics.json [--metric exact,prefix,regex] [--max-examples N]

Each record ({"views": [Text, Code, ...]} or {"messages": [system?, user, assistant]}) becomes the
prompt `bos [system sep] Text sep`, exactly the stream prefix the trainer packs (the system turn only
when the run trained with data.system_prompt), and the reference Code. Predictions are decoded up to
eos. Rows carry `db_path` through for the sql metric (relative paths resolve against the input's folder).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

from megajepa.data import layout
from megajepa.data.examples import system_turn
from megajepa.data.layout import Specials
from megajepa.data.records import BadRecord, record_views
from megajepa.eval.metrics import METRICS, score
from megajepa.model.generation import greedy_generate


class InputError(ValueError):
    """Bad evaluation input, named by file and line."""


@dataclass
class EvalItem:
    text: str
    reference: str
    system: str | None = None
    db_path: str | None = None
    source: str = ""


def items_from_records(records, where: str = "records") -> list[EvalItem]:
    """(source, record) pairs or plain records -> EvalItems; a record without two views is an error."""
    items = []
    for i, entry in enumerate(records, 1):
        source, record = entry if isinstance(entry, tuple) else (f"{where}:{i}", entry)
        try:
            views = record_views(record)
        except BadRecord as e:
            raise InputError(f"{source}: {e}") from None
        if len(views) < 2:
            raise InputError(f"{source}: needs a Text and a Code view to evaluate, has {len(views)}")
        db_path = record.get("db_path")
        if db_path is not None and not isinstance(db_path, str):
            raise InputError(f"{source}: field 'db_path' must be a string")
        items.append(EvalItem(views[0], views[1], system_turn(record), db_path, source))
    return items


def read_items(path: str, max_examples: int | None = None) -> list[EvalItem]:
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such input file")
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{line_no}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{line_no}: invalid JSON: {e.msg}") from None
            if max_examples and len(records) >= max_examples:
                break
    if not records:
        raise InputError(f"{path}: no records")
    return items_from_records(records)


def prompt_ids(tokenizer, item: EvalItem, with_system: bool) -> list[int]:
    """The layout's prompt: the prefix after which the trainer's stream holds Code."""
    system = tokenizer.encode(item.system) if with_system and item.system else None
    return layout.prompt(tokenizer.encode(item.text), Specials.from_tokenizer(tokenizer), system)


def predict(model, tokenizer, items: list[EvalItem], max_new_tokens: int, batch_size: int = 32,
            with_system: bool = False, all_done=None) -> list[str]:
    """Decoded greedy predictions in the order of `items` (batched by prompt length to limit padding)."""
    prompts = [prompt_ids(tokenizer, item, with_system) for item in items]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs = greedy_generate(model, [prompts[i] for i in order], max_new_tokens, tokenizer.eos_id,
                              tokenizer.pad_id, batch_size=batch_size, all_done=all_done)
    texts = [""] * len(items)
    for i, out in zip(order, outputs):
        texts[i] = tokenizer.decode(out)
    return texts


def prediction_rows(items: list[EvalItem], predictions: list[str]) -> list[dict]:
    rows = []
    for item, prediction in zip(items, predictions):
        row = {"source": item.source, "text": item.text, "prediction": prediction, "reference": item.reference}
        if item.db_path is not None:
            row["db_path"] = item.db_path
        rows.append(row)
    return rows


def score_rows(rows: list[dict], metrics: list[str], base_dir: str = ".") -> dict:
    """{metric: accuracy and counts} for each requested metric (sql also needs every row's db_path)."""
    out = {}
    for metric in metrics:
        if metric == "sql" and any("db_path" not in r for r in rows):
            raise InputError("metric sql needs a 'db_path' on every record")
        result = score(metric, rows, base_dir=base_dir)
        result.pop("per_example", None)
        out[metric] = result
    return out


def parse_metrics(text: str, key: str = "--metric") -> list[str]:
    metrics = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise InputError(f"{key}: unknown {bad or text!r}; choose from {', '.join(METRICS)}")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="megajepa run dir / checkpoints dir / tag dir, or a transformers dir")
    p.add_argument("--input", required=True, help="JSON lines of views or messages records")
    p.add_argument("--output", required=True, help="predictions JSON lines to write")
    p.add_argument("--json", required=True, help="metrics JSON to write")
    p.add_argument("--metric", default="exact,prefix", help=f"comma-separated, of {', '.join(METRICS)}")
    p.add_argument("--tokenizer", help="override the tokenizer (sentencepiece file or transformers dir)")
    p.add_argument("--max-examples", type=int, default=0, help="first N records only (0: all)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--system-prompt", choices=("auto", "yes", "no"), default="auto",
                   help="render the system turn before Text (auto: as the run trained)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from megajepa.eval.load import load_model
    from megajepa.training.checkpoint.locate import CheckpointError
    try:
        metrics = parse_metrics(args.metric)
        items = read_items(args.input, args.max_examples)  # input errors before the model is loaded
        loaded = load_model(args.model, args.tokenizer)
    except (InputError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trained_with = bool(((loaded.run_config or {}).get("data") or {}).get("system_prompt", False))
    with_system = trained_with if args.system_prompt == "auto" else args.system_prompt == "yes"
    predictions = predict(loaded.model, loaded.tokenizer, items, args.max_new_tokens, args.batch_size, with_system)
    rows = prediction_rows(items, predictions)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    try:
        results = score_rows(rows, metrics, os.path.dirname(os.path.abspath(args.input)))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = {"model": loaded.source, "input": os.path.abspath(args.input), "n": len(rows),
              "max_new_tokens": args.max_new_tokens, "system_prompt": with_system, "metrics": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    for metric, r in results.items():
        print(f"{metric}: accuracy {r['accuracy']:.4f} ({r['correct']}/{r['n']})")
    return 0
