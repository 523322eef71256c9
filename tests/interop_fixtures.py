"""Tiny transformers checkpoints made in the test (from_config + save_pretrained; nothing downloaded)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config, "mistral": transformers.MistralConfig}
MODELS = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
          "mistral": transformers.MistralForCausalLM}


def corpus_texts(n: int = 300) -> list[str]:
    from megajepa.data.corpus import record_texts, synthetic_split
    train, _ = synthetic_split("regex", n, 5, 0)
    return record_texts(train)


def hf_tokenizer(bos: bool = True, vocab_size: int = 320):
    """A byte-level BPE tokenizer trained on the default corpus, Llama-like (<s> </s> <unk>, no pad) or
    Qwen2-like (no bos): neither has megajepa's sep/predictor tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    specials = ["<unk>", "<s>", "</s>"] if bos else ["<|endoftext|>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>" if bos else None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus_texts(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    kw = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>") if bos else dict(eos_token="<|endoftext|>")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, **kw)


def hf_model(arch: str, vocab_size: int, seed: int = 0, tie: bool = False, **overrides):
    """A random model whose every tensor (norms and biases too) is non-trivial."""
    fields = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=tie, rope_theta=500000.0)  # not the default: must travel
    if arch == "mistral":
        fields["sliding_window"] = 8  # shorter than the test sequences, so the window matters
    fields.update(overrides)
    torch.manual_seed(seed)
    model = MODELS[arch](CONFIGS[arch](**fields)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    return model


def save_hf(path, model, tokenizer=None, dtype=torch.float32, max_shard_size: str = "5GB") -> str:
    model.to(dtype).save_pretrained(str(path), max_shard_size=max_shard_size)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return str(path)


def env() -> dict:
    out = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
           and not k.startswith(("SLURM_", "OMPI_", "PMI_"))}
    out["PYTHONPATH"] = str(ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    out["OMP_NUM_THREADS"] = "1"
    return out


def run(args: list[str], ranks: int = 1, timeout: int = 400, check: bool = True) -> subprocess.CompletedProcess:
    """A repository script under `python` (1 rank) or the real deepspeed launcher (2 CPU ranks)."""
    if ranks == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(ranks),
               "--master_port", str(_port()), *args]
    p = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{(p.stdout + p.stderr)[-4000:]}"
    return p


def _port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY_RUN = ["model.dim=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.ffn_dim=128",
            "data.seq_len=128", "data.num_train=300", "train.micro_batch_size=2", "train.log_interval=1",
            "train.warmup_steps=1"]  # runs of 2-8 steps: the warm-up must be shorter than the run
