"""The megajepa decoder equals transformers' LlamaForCausalLM given the same weights."""
import pytest
import torch
import transformers
from helpers import VOCAB, tiny_model

from megajepa.config import ModelConfig
from megajepa.interop.adapter import to_hf_config, to_hf_state_dict
from megajepa.model.attention import dense_mask
from megajepa.model.presets import PRESETS
from megajepa.model.transformer import count_parameters, resolve_model_config


def _causal_meta(b, t):
    seg = torch.zeros(b, t, dtype=torch.long)
    return seg, torch.full_like(seg, -1), torch.zeros_like(seg)


@pytest.mark.parametrize("tie,kv", [(True, 2), (False, 4), (True, 1)])
def test_logits_match_llama(tie, kv):
    model = tiny_model(seed=1, tie_embeddings=tie, n_kv_heads=kv, rope_theta=500000.0)
    hf = transformers.LlamaForCausalLM(to_hf_config(model.config)).eval()
    result = hf.load_state_dict(to_hf_state_dict(model.state_dict(), tie), strict=False)
    assert not result.unexpected_keys
    assert set(result.missing_keys) <= ({"lm_head.weight"} if tie else set())
    ids = torch.randint(0, VOCAB, (3, 29), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(29).expand(3, 29)
    with torch.no_grad():
        ours = model.lm_head(model(ids, positions, dense_mask(*_causal_meta(3, 29))))
        ref = hf(ids).logits
    assert (ours - ref).abs().max().item() < 1e-4


def test_parameter_count_matches_module():
    model = tiny_model(tie_embeddings=False, qkv_bias=True)
    assert count_parameters(model.config) == sum(p.numel() for p in model.parameters())
    tiny = resolve_model_config(ModelConfig(preset="tiny"), 1024)
    assert count_parameters(tiny) < 5_000_000
    assert set(PRESETS) == {"tiny", "125m", "350m", "1b", "3b", "7b"}
    sizes = [count_parameters(resolve_model_config(ModelConfig(preset=p), 32000)) for p in PRESETS]
    assert sizes == sorted(sizes)


def test_llama3_rope_scaling_matches_transformers():
    """Llama-3.1/3.2 checkpoints remap RoPE frequencies; positions past the original context exercise it."""
    from megajepa.interop.adapter import from_hf_config
    scaling = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
    model = tiny_model(seed=2, rope_theta=500000.0, rope_scaling=scaling, max_seq_len=128)
    hf_config = to_hf_config(model.config)
    assert hf_config.rope_parameters["rope_type"] == "llama3"
    assert from_hf_config(hf_config).rope_scaling == scaling
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    hf.load_state_dict(to_hf_state_dict(model.state_dict(), True), strict=False)
    ids = torch.randint(0, VOCAB, (2, 60), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.lm_head(model(ids, torch.arange(60).expand(2, 60), dense_mask(*_causal_meta(2, 60))))
        ref = hf(ids).logits
    assert (ours - ref).abs().max().item() < 1e-4
