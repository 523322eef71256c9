"""HF <-> megajepa for Llama, Qwen2 and Mistral: logits equal transformers' (float32) both ways, new
vocabulary rows get the mean embedding, and unsupported or broken checkpoints fail with a clear error.
In-process, tiny models; about 20 s."""
import json
import os

import pytest
import torch
from interop_fixtures import MODELS, hf_model, hf_tokenizer, save_hf

from megajepa.data.tokenizer.hf import HFTokenizer
from megajepa.data.tokenizer.sentencepiece import PREDICTORS, SEP
from megajepa.interop.adapter import UnsupportedCheckpoint, architecture_for, to_hf_config, to_hf_state_dict
from megajepa.interop.hf_files import CheckpointError, HFCheckpoint
from megajepa.interop.load_hf import load_hf_weights, model_config_for
from megajepa.model.attention import dense_mask
from megajepa.model.transformer import Transformer

ARCHS = ["llama", "qwen2", "mistral"]


def _ours_logits(model, ids):
    b, t = ids.shape
    seg = torch.zeros(b, t, dtype=torch.long)
    mask = dense_mask(seg, torch.full_like(seg, -1), torch.zeros_like(seg), model.config.sliding_window)
    with torch.no_grad():
        return model.lm_head(model(ids, torch.arange(t).expand(b, t), mask))


def _ids(vocab, b=2, t=21):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def tokenizers_(tmp_path_factory):
    return {"llama": hf_tokenizer(bos=True), "qwen2": hf_tokenizer(bos=False)}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tie", [False, True])
def test_hf_to_megajepa_logits(arch, tie, tmp_path):
    vocab = 320
    ref = hf_model(arch, vocab, seed=1, tie=tie)
    ckpt = HFCheckpoint(save_hf(tmp_path / arch, ref, max_shard_size="5GB" if tie else "60KB"))  # + index
    assert (len(set(ckpt.where.values())) > 1) == (not tie)
    cfg = ckpt.model_config
    assert (cfg.qkv_bias, bool(cfg.sliding_window), cfg.tie_embeddings) == (arch == "qwen2", arch == "mistral", tie)
    model = Transformer(cfg).eval()
    load_hf_weights(model, ckpt, new_rows=[], rank=0)
    ids = _ids(vocab)
    with torch.no_grad():
        expected = ref(ids).logits
    assert (_ours_logits(model, ids) - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_megajepa_to_hf_logits(arch):
    from helpers import tiny_model
    extra = {"qwen2": dict(qkv_bias=True), "mistral": dict(sliding_window=6), "llama": {}}[arch]
    ours = tiny_model(seed=2, tie_embeddings=False, **extra)
    with torch.no_grad():
        for p in ours.parameters():  # norms and biases away from their 1/0 init
            p.add_(0.05 * torch.randn_like(p))
    hf_config = to_hf_config(ours.config)
    assert architecture_for(ours.config) == hf_config.architectures[0] == MODELS[arch].__name__
    hf = MODELS[arch](hf_config).eval()
    result = hf.load_state_dict(to_hf_state_dict(ours.state_dict(), False), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ids = _ids(ours.config.vocab_size)
    with torch.no_grad():
        expected = hf(ids).logits
    assert (_ours_logits(ours, ids) - expected).abs().max().item() < 1e-4


def test_added_tokens_get_mean_rows_and_old_rows_are_kept(tokenizers_, tmp_path):
    tok = tokenizers_["llama"]
    ref = hf_model("llama", len(tok), seed=4, tie=False)
    path = save_hf(tmp_path / "llama", ref, tok)
    adapter = HFTokenizer(path)
    assert adapter.pad_id is not None and adapter.sep_id is not None and len(adapter.predictor_ids) == 10
    added = adapter.added_ids()
    assert sorted(added) == list(range(len(tok), adapter.vocab_size))  # pad, sep, 10 predictors appended
    cfg = model_config_for(HFCheckpoint(path), adapter)
    assert cfg.vocab_size >= adapter.vocab_size and cfg.vocab_size % 64 == 0
    model = Transformer(cfg)
    load_hf_weights(model, HFCheckpoint(path), added, rank=0)
    for ours, theirs in ((model.embed_tokens.weight, ref.model.embed_tokens.weight),
                         (model.lm_head.weight, ref.lm_head.weight)):
        assert torch.equal(ours[:len(tok)], theirs)
        mean = theirs.double().mean(0).float()
        assert torch.allclose(ours[len(tok):], mean.expand(cfg.vocab_size - len(tok), -1), atol=1e-7)
    # the added tokens are single ids in text, and every id the checkpoint knew keeps its meaning
    assert adapter.encode("a" + PREDICTORS[2] + SEP) == tok.encode("a", add_special_tokens=False) + \
        [adapter.predictor_ids[2], adapter.sep_id]


def test_qwen_like_tokenizer_gets_a_bos(tokenizers_, tmp_path):
    tok = tokenizers_["qwen2"]
    path = save_hf(tmp_path / "qwen", hf_model("qwen2", len(tok) + 64, tie=True), tok)
    adapter = HFTokenizer(path)
    assert adapter.bos_id is not None and adapter.bos_id >= len(tok)
    assert model_config_for(HFCheckpoint(path), adapter).vocab_size == len(tok) + 64  # room already there


def test_bad_checkpoints_fail_clearly(tokenizers_, tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        HFCheckpoint(str(tmp_path))
    import transformers
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64))
    with pytest.raises(UnsupportedCheckpoint, match="GPT2LMHeadModel"):
        HFCheckpoint(save_hf(tmp_path / "gpt2", gpt2))
    scaled = hf_model("llama", 64, rope_scaling={"rope_type": "linear", "factor": 2.0})
    with pytest.raises(UnsupportedCheckpoint, match="rope_type 'linear'"):
        HFCheckpoint(save_hf(tmp_path / "scaled", scaled))
    sharded = save_hf(tmp_path / "sharded", hf_model("llama", 320), tokenizers_["llama"])
    hf_model("llama", 320).save_pretrained(sharded, max_shard_size="100KB")
    with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    os.remove(os.path.join(sharded, "model.safetensors"))
    os.remove(os.path.join(sharded, shards[-1]))
    with pytest.raises(CheckpointError, match=f"shard {shards[-1]} .* is missing"):
        HFCheckpoint(sharded)
    small = save_hf(tmp_path / "small", hf_model("llama", 64), tokenizers_["llama"])  # 320 ids, 64 rows
    with pytest.raises(CheckpointError, match="tokenizer has 320 ids but the model's embedding has 64 rows"):
        model_config_for(HFCheckpoint(small), HFTokenizer(small))


def test_init_from_hf_config_errors_come_before_any_compute(tmp_path):
    from megajepa.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="model.init_from_hf: .* is not a transformers checkpoint directory"):
        load_config(None, [f"model.init_from_hf={tmp_path}"])
    path = save_hf(tmp_path / "llama", hf_model("llama", 64))
    with pytest.raises(ConfigError, match="leave data.tokenizer unset"):
        load_config(None, [f"model.init_from_hf={path}", "data.tokenizer=x.model"])
    ckpt = HFCheckpoint(path)
    from megajepa.config import ModelConfig
    with pytest.raises(ConfigError, match="model.dim=128 contradicts"):
        model_config_for(ckpt, type("Tok", (), {"vocab_size": 64})(), ModelConfig(dim=128))


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_matches_transformers(arch, tmp_path):
    """Past Mistral's 8-token window, so the cached decode must apply it as transformers does."""
    from megajepa.model.generation import greedy_generate
    ref = hf_model(arch, 96, seed=7, tie=arch == "qwen2")
    ckpt = HFCheckpoint(save_hf(tmp_path / arch, ref))
    model = Transformer(ckpt.model_config).eval()
    load_hf_weights(model, ckpt, new_rows=[], rank=0)
    prompts = [[5, 17, 33, 2, 60], [9, 9, 41]]
    ours = greedy_generate(model, prompts, max_new_tokens=14, eos_id=95, pad_id=0)
    for prompt, mine in zip(prompts, ours):
        with torch.no_grad():
            out = ref.generate(torch.tensor([prompt]), max_new_tokens=14, do_sample=False, eos_token_id=95,
                               pad_token_id=0)[0, len(prompt):].tolist()
        assert mine == (out[:out.index(95)] if 95 in out else out)
