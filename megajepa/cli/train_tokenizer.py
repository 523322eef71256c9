"""Train megajepa's sentencepiece tokenizer from JSON-lines or plain-text files.

    megajepa-train-tokenizer --input data/*.jsonl --out runs/tok/tokenizer.model --vocab-size 32000

A `.jsonl`/`.json` file gives one record per line: text from {"text"}, {"views": [...]} or
{"messages": [{"content": ...}, ...]} (`--field` picks one; default: whichever the record has).
Any other file is plain text, one training sentence per line.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Iterable, Iterator

from megajepa.data.tokenizer.sentencepiece import train_tokenizer

FIELDS = ("text", "views", "messages")


def record_texts(rec: dict, field: str | None, where: str) -> list[str]:
    """The training strings of one JSON record; `where` names file:line in errors."""
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if field is None:
        field = next((f for f in FIELDS if f in rec), None)
        if field is None:
            raise ValueError(f"{where}: record has none of the keys {FIELDS}")
    if field not in rec:
        raise ValueError(f"{where}: missing key {field!r}")
    val = rec[field]
    if field == "text":
        items = [val]
    elif field == "views":
        items = val if isinstance(val, list) else [None]
    else:
        if not isinstance(val, list) or not all(isinstance(m, dict) and "content" in m for m in val):
            raise ValueError(f"{where}: 'messages' must be a list of objects with 'content'")
        items = [m["content"] for m in val]
    if not all(isinstance(t, str) for t in items):
        raise ValueError(f"{where}: {field!r} must hold strings")
    return items


def iter_texts(paths: list[str], field: str | None) -> Iterator[str]:
    for path in paths:
        is_json = path.endswith((".jsonl", ".json"))
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if not is_json:
                    yield line.rstrip("\n")
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: invalid JSON ({e.msg})") from e
                yield from record_texts(rec, field, f"{path}:{n}")


def expand(patterns: Iterable[str]) -> list[str]:
    paths = []
    for p in patterns:
        hits = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        if not hits or not all(os.path.isfile(h) for h in hits):
            raise FileNotFoundError(f"--input {p!r}: no such file")
        paths += hits
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", nargs="+", required=True, help="files or globs")
    ap.add_argument("--out", required=True, help="path of the .model file to write")
    ap.add_argument("--vocab-size", type=int, required=True)
    ap.add_argument("--field", choices=FIELDS, default=None)
    ap.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    ap.add_argument("--no-byte-fallback", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paths = expand(args.input)
    # validate every record before training starts
    texts = list(iter_texts(paths, args.field))
    tok = train_tokenizer(texts, args.out, args.vocab_size, model_type=args.model_type,
                          byte_fallback=not args.no_byte_fallback, seed=args.seed)
    print(f"wrote {tok.path}: vocab_size={tok.vocab_size} sha256={tok.sha256()}")


if __name__ == "__main__":
    main()
