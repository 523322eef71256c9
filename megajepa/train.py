"""Entry point: `deepspeed megajepa/train.py [--config FILE] [--deepspeed_config FILE] key=value ...`.

Also runs as `python megajepa/train.py` (one process), under `torchrun`, `srun` and `mpirun`.
With no arguments it trains the `tiny` preset on the embedded synthetic English<->regex corpus.

Exit codes: 0 done; 2 bad config or data; 3 stopped after train.max_nonfinite_steps non-finite steps
in a row; 75 stopped by SIGUSR1/SIGTERM after saving a checkpoint (requeue: resume=auto continues).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from typing import NoReturn

# DeepSpeed 0.19 calls torch collectives that torch 2.13 deprecates, once per step.
warnings.filterwarnings("ignore", message=".*(reduce_scatter_tensor|all_gather_into_tensor).*", category=FutureWarning)

from megajepa.config import ConfigError, load_config  # run as a script too: the package is installed (pip install -e .)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="run config (YAML or JSON)")
    parser.add_argument("--deepspeed_config", help="DeepSpeed JSON (default ds_configs/zero3.json)")
    parser.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed launcher")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=30 jepa.lambda=1")
    return parser.parse_args(argv)


def _peer_failure(e: RuntimeError) -> bool:
    """torch's distributed errors (NCCL watchdog, store) or gloo's plain RuntimeErrors (reset, timeout)."""
    import torch.distributed as dist
    return isinstance(e, dist.DistError) or bool(
        re.search(r"gloo|NCCL|Timed out|timeout caused pair closure|Connection (reset|closed)", str(e)))


def main(argv=None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank{rank}] %(levelname)s %(message)s", datefmt="%H:%M:%S")
    overrides = list(args.overrides) + ([f"deepspeed_config={args.deepspeed_config}"] if args.deepspeed_config else [])
    try:
        cfg = load_config(args.config, overrides)  # every config error before any compute
    except ConfigError as e:
        print(f"megajepa: config error: {e}", file=sys.stderr)
        return 2

    from megajepa import distributed
    from megajepa.data.examples import RecordError
    from megajepa.training.guards.nonfinite import EXIT_NONFINITE, NonFiniteError
    from megajepa.training.guards.preemption import EXIT_REQUEUE, Preempted
    from megajepa.training.trainer import train

    info = distributed.init_distributed(cfg.train.dist_timeout_minutes)  # a dead or hung rank fails us in time
    try:
        train(cfg, info)
    except Preempted as e:
        logging.getLogger("megajepa").warning("%s", e)
        return EXIT_REQUEUE
    except NonFiniteError as e:
        print(f"megajepa: error: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except (ConfigError, RecordError, ValueError) as e:
        print(f"megajepa: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if info.world_size == 1 or not _peer_failure(e):
            raise
        print(f"megajepa: error: rank {info.rank}: a collective failed: another rank died, or hung longer than "
              f"train.dist_timeout_minutes={cfg.train.dist_timeout_minutes:g} (check its log): {e}", file=sys.stderr)
        return 1
    finally:
        distributed.shutdown()
    return 0


def run_and_exit(argv=None) -> NoReturn:
    """main(), then exit with its code (0, 2, 3, 75: launchers and Slurm requeue read it)."""
    from megajepa.distributed import exit_process

    exit_process(main(argv))


if __name__ == "__main__":
    run_and_exit()
