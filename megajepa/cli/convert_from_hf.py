"""Convert a local transformers Llama/Qwen2/Mistral checkpoint into a megajepa run directory (step 0).

    megajepa-convert-from-hf --hf HF_DIR --output runs/from_hf [key=value ...]
    deepspeed --num_gpus 8 tools/convert_from_hf.py --hf HF_DIR --output runs/from_hf   (partitioned load)

Then continue with the same launcher and rank count: `deepspeed ... megajepa/train.py --config
runs/from_hf/config.yaml`. (`model.init_from_hf=HF_DIR` on train.py does the same without this step.)
The overrides are train.py's (data, jepa, train settings recorded in config.yaml).
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import NoReturn

warnings.filterwarnings("ignore", category=FutureWarning)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf", required=True, help="local transformers checkpoint directory")
    p.add_argument("--output", required=True, help="megajepa run directory to create (absent or empty)")
    p.add_argument("--config", help="run config (YAML or JSON) the converted run will train with")
    p.add_argument("--deepspeed_config", help="DeepSpeed JSON (default ds_configs/zero3.json)")
    p.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed launcher")
    p.add_argument("overrides", nargs="*", help="dotted train.py overrides, e.g. data.seq_len=1024")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from megajepa.config import ConfigError, load_config

    overrides = list(args.overrides) + [f"model.init_from_hf={args.hf}", f"output_dir={args.output}"]
    if args.deepspeed_config:
        overrides.append(f"deepspeed_config={args.deepspeed_config}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"convert_from_hf: config error: {e}", file=sys.stderr)
        return 2
    from megajepa import distributed
    from megajepa.interop.hf_files import HFCheckpoint
    from megajepa.interop.import_hf import convert_from_hf

    try:
        HFCheckpoint(args.hf).close()  # a bad directory fails here, before any process group starts
    except ValueError as e:
        print(f"convert_from_hf: error: {e}", file=sys.stderr)
        return 2
    info = distributed.init_distributed()
    try:
        out = convert_from_hf(cfg, info.rank, info.world_size)
    except (ConfigError, ValueError, OSError) as e:
        print(f"convert_from_hf: error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    if info.rank == 0:
        print(f"wrote {out}; continue with: megajepa/train.py --config {os.path.join(out, 'config.yaml')}")
    return 0


def run_and_exit(argv=None) -> NoReturn:
    """main(), then exit without interpreter finalization (a 2-rank exit can abort in it)."""
    from megajepa.distributed import exit_process

    exit_process(main(argv))


if __name__ == "__main__":
    run_and_exit()
