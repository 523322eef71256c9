"""Convert a megajepa (DeepSpeed ZeRO) checkpoint into a Hugging Face transformers model directory.

    megajepa-convert-to-hf --checkpoint runs/x --output hf/x [--tag step_00000300] [--dtype bf16]

--checkpoint takes a run directory, its checkpoints/ directory, one tag directory or the `latest` file.
Writes config.json, generation_config.json, safetensors shards + index and the tokenizer (with the
sep/predictor tokens registered); `AutoModelForCausalLM.from_pretrained(output)` loads it.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run dir, checkpoints dir, tag dir or latest file")
    p.add_argument("--output", required=True, help="directory to write (must be absent or empty)")
    p.add_argument("--tag", help="checkpoint tag, e.g. step_00000300 (default: the latest)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--tokenizer", help="tokenizer to ship instead of the one recorded in the checkpoint")
    p.add_argument("--chat-template", help="file with a Jinja chat template to store in the tokenizer")
    p.add_argument("--max-shard-size", default="5GB")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from megajepa.data.tokenizer.sentencepiece import TokenizerError
    from megajepa.interop.export import convert_to_hf
    from megajepa.interop.hf_files import CheckpointError

    try:
        template = None
        if args.chat_template:
            with open(args.chat_template) as f:
                template = f.read()
        summary = convert_to_hf(args.checkpoint, args.output, tag=args.tag, dtype=args.dtype,
                                tokenizer=args.tokenizer, chat_template=template, overwrite=args.overwrite,
                                max_shard_size=args.max_shard_size)
    except (CheckpointError, TokenizerError, OSError, ValueError) as e:
        print(f"convert_to_hf: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
