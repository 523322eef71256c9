"""Tokenize and pack a run's corpus once into memory-mapped shards; train on them with data.shards=OUT.

    megajepa-preprocess --out data/shards --workers 2 --config run.yaml \
        data.sources='[{path: data/web, weight: 9}, {path: "data/pairs/*.jsonl", weight: 1}]' data.seq_len=1024
    deepspeed megajepa/train.py --config run.yaml data.shards=data/shards

The run config (same file and overrides as training) fixes the sources, tokenizer (data.tokenizer, else
one is trained here), packing (data.seq_len, jepa.*) and bad-record policy. The manifest records the
tokenizer hash and packing signature; training refuses shards whose signature differs from its own.
"""
from __future__ import annotations

import argparse
import json
import os
import sys



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory for shards, tokenizer and manifest")
    p.add_argument("--config", help="run config (YAML or JSON), as for training")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: data.num_workers, or one per CPU when that is 0)")
    p.add_argument("--rows-per-shard", type=int, default=8192)
    p.add_argument("--chunk-records", type=int, default=4096, help="records per worker task (packed on its own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="dotted run-config overrides, e.g. data.seq_len=1024")
    args = p.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    if args.rows_per_shard < 1 or args.chunk_records < 1:
        p.error("--rows-per-shard and --chunk-records must be >= 1")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out!r} exists and is not a directory")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from megajepa.config import ConfigError, load_config  # after parsing: --help stays instant
    from megajepa.data.examples import RecordError
    from megajepa.data.preprocess import preprocess
    from megajepa.data.tokenizer.sentencepiece import TokenizerError

    try:
        cfg = load_config(args.config, args.overrides)
        workers = args.workers or cfg.data.num_workers or os.cpu_count() or 1
        manifest = preprocess(cfg, args.out, workers, args.rows_per_shard, progress=not args.no_progress,
                              chunk_records=args.chunk_records)
    except (ConfigError, RecordError, TokenizerError, FileNotFoundError) as e:
        print(f"preprocess_data: error: {e}", file=sys.stderr)
        return 2
    c = manifest["counts"]
    print(f"wrote {len(manifest['shards'])} shard(s) to {args.out}: {c['rows']} rows of {cfg.data.seq_len} "
          f"tokens ({c['fill']:.1%} filled)")
    print(f"  records read {c['records_read']}, skipped {c['records_skipped']}, examples {c['examples']} "
          f"({c['jepa_examples']} with JEPA views), JEPA pairs {c['jepa_pairs']}")
    if len(c["records_by_file"]) > 1:
        print("  records by file: " + ", ".join(f"{path} {n}" for path, n in c["records_by_file"].items()))
    print(f"  tokens written {c['tokens']} ({c['labelled_tokens']} labelled) in {c['seconds']:.1f} s: "
          f"{c['tokens_per_s']:,.0f} tokens/s with {c['workers']} worker(s)")
    if c["records_skipped"]:
        print(f"  skipped by reason: {json.dumps(c['skipped_by_reason'])}")
        for line in c["first_skipped"][:10]:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
