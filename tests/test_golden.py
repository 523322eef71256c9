"""Golden losses (torchtitan's rule): fixed-seed CPU runs must log bitwise the losses recorded in
tests/assets/golden/<CPU vendor>/<case>.jsonl. A change that should not move numerics passes this unchanged;
one that should regenerates the files in its own commit, saying why:

    python tests/test_golden.py --regenerate [CASE ...]                   # numerics moved
    python tests/test_golden.py --regenerate --keep-other-vendors       # a new CPU vendor, same code

Every case spells out the settings it depends on, so a change of a default is not a change of numerics.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_ROOT = ROOT / "tests" / "assets" / "golden"
# every logged loss term (reg, stp where the run has them), plus the schedule
TERMS = ("loss", "lm", "jepa", "reg", "stp", "grad_norm", "lr")
BASE = ["data.task=regex", "data.num_train=240", "data.vocab_size=384", "data.seq_len=128", "model.preset=tiny",
        "model.dim=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.ffn_dim=128",
        "train.micro_batch_size=2", "train.grad_accum=1", "train.max_steps=6", "train.warmup_steps=2",
        "train.lr=1e-3", "train.log_interval=3", "train.save_interval=100", "seed=1234",
        "jepa.gamma=1.0", "jepa.predictors=1", "jepa.distance=cosine"]  # lambda, dropout, SIGReg: the defaults
# The same kernels on every x86 CPU with AVX2: torch picks its vectorised ATen kernels, MKL its GEMMs and
# oneDNN its primitives by the CPU's ISA, and an AVX-512 or AMX machine sums in another order than an
# AVX2 one (the files of 2026-12-01 failed at 1e-9 on a Sapphire Rapids box). MKL_CBWR is MKL's
# conditional bitwise reproducibility mode: identical results on any CPU that has the named ISA.
CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# Even so, an AMD EPYC and an Intel Sapphire Rapids box differ by up to 3.4e-7 relative over the 6 steps
# (MKL takes other paths on non-Intel CPUs): one set of files per CPU vendor, compared bitwise; a vendor
# without files is compared with the first set within FOREIGN_RTOL (a logic change moves losses by >1e-3).
FOREIGN_RTOL = 1e-5
CASES = {
    "one_rank_cosine": dict(ranks=1, args=[]),  # the default objective: cosine + SIGReg, loss dropout
    # the paper's bare objective (the default before SIGReg): its file is the old one_rank_cosine, unchanged
    "paper_cosine": dict(ranks=1, args=["jepa.lambda=1.0", "jepa.dropout=0", "jepa.regularizer=none"]),
    "stp_with_jepa": dict(ranks=1, args=["stp.lambda=0.1", "stp.mode=random_span", "stp.samples_per_document=2"]),
    "two_ranks": dict(ranks=2, args=["train.grad_accum=2"]),
    "shards": dict(ranks=1, prepare="shards", args=[]),
    "infonce_two_ranks": dict(ranks=2, args=["jepa.distance=infonce", "jepa.temperature=0.1"]),
    "continued_hf": dict(ranks=1, prepare="hf", args=["jepa.predictors=2"]),
    "train_all_paraphrase": dict(ranks=1, args=["data.task=paraphrase", "data.train_all=true", "jepa.pairs=chain",
                                                 "data.max_skip_fraction=1.0"]),  # 213 of 240 too long at 128
}


def cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id (GenuineIntel, AuthenticAMD, ...); 'unknown' where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), "unknown")
    except OSError:
        return "unknown"


GOLDEN = GOLDEN_ROOT / cpu_vendor()


def reference(name: str) -> tuple[Path, bool]:
    """Case `name`'s file to compare with, and whether bitwise: this vendor's, else another vendor's."""
    own = GOLDEN / f"{name}.jsonl"
    if own.exists():
        return own, True
    return sorted(GOLDEN_ROOT.glob(f"*/{name}.jsonl"))[0], False


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                             "MASTER_PORT") and not k.startswith("SLURM_")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # one thread: a fixed summation order
    env.update(CPU_KERNELS)
    return env


def _port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], ranks: int) -> None:
    cmd = [sys.executable, *args] if ranks == 1 else \
        [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(ranks), "--master_port", str(_port()), *args]
    p = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{(p.stdout + p.stderr)[-4000:]}"


def _tiny_hf_checkpoint(path: Path) -> str:
    """A Llama checkpoint made here (from_config + save_pretrained), with a BPE tokenizer of its own."""
    from interop_fixtures import hf_model, hf_tokenizer, save_hf

    tokenizer = hf_tokenizer()
    return save_hf(path, hf_model("llama", len(tokenizer), seed=3), tokenizer)


def run_case(name: str, work: Path) -> dict[int, dict]:
    """Train case `name` under `work`; step -> its losses.jsonl record."""
    case, out = CASES[name], work / name
    args = [*BASE, *case["args"]]
    if case.get("prepare") == "shards":
        shards = work / f"{name}_shards"
        _run(["tools/preprocess_data.py", "--out", str(shards), "--workers", "1", "--no-progress", *args], 1)
        args.append(f"data.shards={shards}")
    if case.get("prepare") == "hf":
        # the architecture and tokenizer come from the checkpoint
        args = [a for a in args if not a.startswith(("model.", "data.vocab_size"))] + \
            [f"model.init_from_hf={_tiny_hf_checkpoint(work / f'{name}_hf')}"]
    _run(["megajepa/train.py", f"output_dir={out}", *args], case["ranks"])
    with open(out / "losses.jsonl") as f:
        return {r["step"]: r for r in map(json.loads, filter(str.strip, f))}


def golden(path: Path) -> dict[int, dict]:
    with open(path) as f:
        return {r["step"]: r for r in map(json.loads, filter(str.strip, f))}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_losses_equal_the_golden_files_bitwise(name, tmp_path):
    path, bitwise = reference(name)
    if not bitwise:
        warnings.warn(f"no golden file for CPU vendor {cpu_vendor()!r}: compared with {path} within rtol "
                      f"{FOREIGN_RTOL}, not bitwise (python tests/test_golden.py --regenerate --keep-other-vendors {name} adds it)")
    want, got = golden(path), run_case(name, tmp_path)
    assert sorted(got) == sorted(want), (sorted(got), sorted(want))
    for step in sorted(want):
        for key in TERMS:
            g, w = got[step].get(key), want[step].get(key)
            same = g == w if bitwise or g is None or w is None else abs(g - w) <= FOREIGN_RTOL * abs(w)
            assert same, (name, path.parent.name, step, key, g, w)


def regenerate(names: list[str], keep_other_vendors: bool) -> None:
    """Write this vendor's files; a numerics change also deletes the other vendors' (now stale) ones."""
    import tempfile
    GOLDEN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            records = run_case(name, Path(tmp))
            with open(GOLDEN / f"{name}.jsonl", "w") as f:
                for step in sorted(records):
                    f.write(json.dumps({"step": step, **{k: records[step][k] for k in TERMS if k in records[step]}}) + "\n")
            print(f"wrote {GOLDEN / name}.jsonl ({len(records)} steps)")
            for stale in [] if keep_other_vendors else GOLDEN_ROOT.glob(f"*/{name}.jsonl"):
                if stale.parent != GOLDEN:
                    stale.unlink()
                    print(f"removed {stale} (stale after a numerics change; its vendor falls back to rtol)")


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", required=True)
    parser.add_argument("--keep-other-vendors", action="store_true",
                        help="numerics did not change: only add this CPU vendor's files")
    parser.add_argument("cases", nargs="*", default=sorted(CASES))
    args = parser.parse_args()
    regenerate(args.cases, args.keep_other_vendors)
